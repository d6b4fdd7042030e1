/*
 * What a platform gives the shared device loop (mtvm_device.c): a byte stream to the host,
 * memory for tensors, and a free-running counter. The host template implements it with stdin,
 * stdout and CLOCK_MONOTONIC; the cortex-m template with a UART, newlib's heap and DWT/SysTick.
 */
#ifndef MTVM_PORT_H_
#define MTVM_PORT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Reads exactly n bytes: 1 when done, 0 at end of stream (the host went away), -1 on error. */
int mtvm_port_read(uint8_t* buf, size_t n);
/* Writes all n bytes (blocking); mtvm_port_flush ends a reply. */
void mtvm_port_write(const uint8_t* buf, size_t n);
void mtvm_port_flush(void);

/* Memory for tensors and frames, aligned for any element type (NULL when exhausted). */
void* mtvm_port_alloc(size_t n);
void mtvm_port_free(void* ptr);

/* A monotonic counter, and what it counts. mtvm_port_ticks_restart() is called right before a
 * timed stretch: a timer restarted there ticks in the same phase relative to the code every
 * time, so emulated counts repeat exactly from run to run. */
uint64_t mtvm_port_ticks(void);
void mtvm_port_ticks_restart(void);

enum {
  MTVM_CLOCK_NANOSECONDS = 0,  /* wall-clock nanoseconds (a host program) */
  MTVM_CLOCK_CYCLES = 1,       /* core cycles (DWT CYCCNT, or SysTick on the core clock) */
  MTVM_CLOCK_TIMER = 2,        /* a timer at counter_hz; under QEMU -icount it counts virtual time */
};

/* HELLO's reserved field says a clock description follows the function list. */
#define MTVM_HELLO_HAS_CLOCK 1u
#define MTVM_CLOCK_INFO_SIZE 20u

typedef struct {
  uint8_t kind;          /* MTVM_CLOCK_* */
  int8_t icount_shift;   /* QEMU's -icount shift the firmware was built for, -1 for none */
  uint64_t counter_hz;   /* ticks per second of mtvm_port_ticks */
  uint64_t cpu_hz;       /* the core clock the board runs at */
} mtvm_clock_info;

void mtvm_port_clock(mtvm_clock_info* info);

/* The shared loop: serves requests until the stream ends; returns the exit status. */
int mtvm_device_serve(void);

#ifdef __cplusplus
}
#endif

#endif /* MTVM_PORT_H_ */
