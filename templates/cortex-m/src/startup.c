/*
 * Start-up of a microtvm-registry cortex-m firmware: the vector table, the reset handler (FPU
 * on, .data copied, .bss zeroed, then main), and the heap newlib's malloc grows into. The
 * memory layout comes from the linker script generate_project writes from the board's regions.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "board_config.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern uint8_t _heap_start, _heap_end;

int main(void);
void mtvm_irq_handler(void);
void mtvm_systick_handler(void);

#define SCB_VTOR (*(volatile uint32_t*)0xE000ED08u)

void mtvm_reset_c(void) {
  uint32_t* src = &_sidata;
  for (uint32_t* dst = &_sdata; dst < &_edata;) *dst++ = *src++;
  for (uint32_t* dst = &_sbss; dst < &_ebss;) *dst++ = 0;
  extern const void* const mtvm_vectors[];
  SCB_VTOR = (uint32_t)(uintptr_t)mtvm_vectors;
  __asm volatile("dsb\n isb" ::: "memory");
  main();
  for (;;) __asm volatile("wfi");
}

/* The FPU must be on before any code that may touch a floating-point register runs, so the
 * first instructions are written by hand (CPACR: full access to CP10 and CP11). */
__attribute__((naked, noreturn)) void Reset_Handler(void) {
  __asm volatile(
#if MTVM_HAS_FPU
      "ldr r0, =0xE000ED88\n"
      "ldr r1, [r0]\n"
      "orr r1, r1, #(0xF << 20)\n"
      "str r1, [r0]\n"
      "dsb\n"
      "isb\n"
#endif
      "b mtvm_reset_c\n");
}

/* A fault has no one to report to: stop, so the host's timeout names the problem. */
static void fault_handler(void) {
  for (;;) __asm volatile("wfi");
}

static void unused_handler(void) {}

__attribute__((section(".vectors"), used)) const void* const mtvm_vectors[16 + MTVM_NUM_IRQS] = {
    [0] = &_estack,
    [1] = (const void*)Reset_Handler,
    [2] = (const void*)fault_handler, /* NMI */
    [3] = (const void*)fault_handler, /* HardFault */
    [4] = (const void*)fault_handler, /* MemManage */
    [5] = (const void*)fault_handler, /* BusFault */
    [6] = (const void*)fault_handler, /* UsageFault */
    [7] = (const void*)fault_handler, /* SecureFault (v8-M) */
    [11] = (const void*)unused_handler, /* SVCall */
    [12] = (const void*)unused_handler, /* DebugMonitor */
    [14] = (const void*)unused_handler, /* PendSV */
    [15] = (const void*)mtvm_systick_handler,
    [16 ... 16 + MTVM_NUM_IRQS - 1] = (const void*)mtvm_irq_handler,
};

/* newlib's malloc grows the heap here: from the end of .bss up to the stack's reserve. */
void* _sbrk(ptrdiff_t increment) {
  static uint8_t* brk = &_heap_start;
  if (increment > 0 && (size_t)increment > (size_t)(&_heap_end - brk)) {
    errno = ENOMEM;
    return (void*)-1;
  }
  uint8_t* previous = brk;
  brk += increment;
  return previous;
}
