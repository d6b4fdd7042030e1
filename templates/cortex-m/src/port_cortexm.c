/*
 * mtvm_port.h for a Cortex-M board: the host's byte stream is the board's UART (received by
 * interrupt into a ring, so an idle board sleeps in WFI instead of spinning), tensors live in
 * newlib's heap, and the counter is DWT CYCCNT where the core has one that counts, else SysTick.
 * Both are made 64-bit by counting their wraps in the SysTick interrupt.
 */
#include <malloc.h>
#include <stdlib.h>

#include "board_config.h"
#include "mtvm_port.h"
#include "uart.h"

#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
#define DEMCR (*(volatile uint32_t*)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t*)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t*)0xE0001004u)
#define NVIC_ISER ((volatile uint32_t*)0xE000E100u)
#define SCB_ICSR (*(volatile uint32_t*)0xE000ED04u)
#define SYSTICK_RELOAD 0x00FFFFFFu

/* ------------------------------------------------------------------ the UART ring */

#define RING_SIZE 1024u /* a power of two */
static volatile uint8_t g_ring[RING_SIZE];
static volatile uint32_t g_ring_head, g_ring_tail; /* head: written by the ISR */

void mtvm_irq_handler(void) {
  int byte;
  /* Clear first, then drain: a byte that lands after the last check raises the interrupt again
   * (cleared after the drain instead, it would sit unread with no interrupt, and QEMU's UART,
   * holding one byte, would deliver nothing more). */
  mtvm_uart_clear_irq();
  while ((byte = mtvm_uart_rx_byte()) >= 0) {
    uint32_t head = g_ring_head;
    if (head - g_ring_tail < RING_SIZE) { /* full: the host outran us; the CRC will say so */
      g_ring[head & (RING_SIZE - 1u)] = (uint8_t)byte;
      g_ring_head = head + 1u;
    }
  }
}

int mtvm_port_read(uint8_t* buf, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    for (;;) {
      __asm volatile("cpsid i" ::: "memory");
      if (g_ring_head != g_ring_tail) {
        __asm volatile("cpsie i" ::: "memory");
        break;
      }
      /* WFI wakes on a pending interrupt even with PRIMASK set: no byte can slip past. */
      __asm volatile("wfi\n cpsie i" ::: "memory");
    }
    buf[i] = g_ring[g_ring_tail & (RING_SIZE - 1u)];
    g_ring_tail = g_ring_tail + 1u;
  }
  return 1;
}

void mtvm_port_write(const uint8_t* buf, size_t n) {
  for (size_t i = 0; i < n; ++i) mtvm_uart_tx_byte(buf[i]);
}

void mtvm_port_flush(void) {}

void* mtvm_port_alloc(size_t n) { return memalign(16, n ? n : 1); }

void mtvm_port_free(void* ptr) { free(ptr); }

/* ---------------------------------------------------------------------- the counter */

static int g_use_dwt;
static volatile uint32_t g_systick_wraps;
static volatile uint32_t g_dwt_high, g_dwt_last;

void mtvm_systick_handler(void) {
  g_systick_wraps++;
  if (g_use_dwt) {
    uint32_t now = DWT_CYCCNT;
    if (now < g_dwt_last) g_dwt_high++;
    g_dwt_last = now;
  }
}

uint64_t mtvm_port_ticks(void) {
  if (g_use_dwt) {
    uint32_t high, low, last;
    do {
      high = g_dwt_high;
      last = g_dwt_last;
      low = DWT_CYCCNT;
    } while (high != g_dwt_high || last != g_dwt_last);
    /* low < last: a wrap since the ISR's last sample that it has not counted yet */
    return ((uint64_t)high << 32 | low) + (low < last ? (1ull << 32) : 0);
  }
  uint32_t wraps, value;
  do {
    wraps = g_systick_wraps;
    value = SYST_CVR;
  } while (wraps != g_systick_wraps);
  return (uint64_t)wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
}

void mtvm_port_ticks_restart(void) {
  if (g_use_dwt) return; /* counts every cycle: no phase to align */
  /* Stopped, cleared and started again, SysTick counts from this instruction on (QEMU starts
   * the period at the enabling write), so the instructions of a timed call fall on the same
   * tick boundaries in every run. */
  SYST_CSR = 0;
  SYST_CVR = 0;
  SCB_ICSR = 1u << 25; /* PENDSTCLR: no wrap left over from before */
  g_systick_wraps = 0;
  SYST_CSR = 0x7u;
  while (SYST_CVR == 0) { /* the first tick loads the reload value */
  }
}

void mtvm_port_clock(mtvm_clock_info* info) {
  info->cpu_hz = MTVM_CPU_HZ;
  info->icount_shift = MTVM_ICOUNT_SHIFT;
  if (g_use_dwt) {
    info->kind = MTVM_CLOCK_CYCLES;
    info->counter_hz = MTVM_CPU_HZ;
  } else {
    /* SysTick on the core clock counts cycles on a real core; under QEMU it counts virtual
     * time at the machine's model clock, which the host turns into instructions under -icount. */
    info->kind = MTVM_EMULATED ? MTVM_CLOCK_TIMER : MTVM_CLOCK_CYCLES;
    info->counter_hz = MTVM_COUNTER_HZ;
  }
}

static void counter_init(void) {
  SYST_RVR = SYSTICK_RELOAD;
  SYST_CVR = 0;
  SYST_CSR = 0x7u; /* processor clock, interrupt on wrap, enabled */
#if MTVM_HAS_DWT
  DEMCR |= 1u << 24; /* TRCENA */
  DWT_CYCCNT = 0;
  DWT_CTRL |= 1u;
  for (volatile int i = 0; i < 64; ++i) {
  }
  /* QEMU implements no DWT cycle counter (it reads 0): fall back to SysTick there. */
  g_use_dwt = DWT_CYCCNT != 0;
#endif
}

void mtvm_board_init(void) {
  static const uint16_t irqs[] = MTVM_UART_IRQS;
  counter_init();
  mtvm_uart_init();
  for (unsigned i = 0; i < sizeof(irqs) / sizeof(irqs[0]); ++i) NVIC_ISER[irqs[i] / 32u] = 1u << (irqs[i] % 32u);
  __asm volatile("cpsie i" ::: "memory");
}
