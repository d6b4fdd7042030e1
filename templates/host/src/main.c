/*
 * The "device" program of a microtvm-registry host project: the shared device loop
 * (runtime/mtvm_device.c) on stdin/stdout, so a host-side session
 * (microtvm_registry.device.session) can upload tensors, call the model's generated functions,
 * read results back and time calls. stderr is left for diagnostics.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "mtvm_port.h"
#include "mtvm_runtime.h"

#ifndef TVM_WORKSPACE_SIZE_BYTES
#define TVM_WORKSPACE_SIZE_BYTES (2 * 1024 * 1024)
#endif

int mtvm_port_read(uint8_t* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(0, buf + got, n - got);
    if (r == 0) return 0; /* EOF: the host closed the session */
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    got += (size_t)r;
  }
  return 1;
}

void mtvm_port_write(const uint8_t* buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(1, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(4); /* host went away */
    }
    buf += w;
    n -= (size_t)w;
  }
}

void mtvm_port_flush(void) {}

void* mtvm_port_alloc(size_t n) {
  void* mem = NULL;
  return posix_memalign(&mem, 64, n ? n : 1) == 0 ? mem : NULL;
}

void mtvm_port_free(void* ptr) { free(ptr); }

uint64_t mtvm_port_ticks(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void mtvm_port_ticks_restart(void) {}

void mtvm_port_clock(mtvm_clock_info* info) {
  info->kind = MTVM_CLOCK_NANOSECONDS;
  info->icount_shift = -1;
  info->counter_hz = 1000000000ull;
  info->cpu_hz = 0;
}

int main(void) {
  void* arena = NULL;
  if (TVM_WORKSPACE_SIZE_BYTES > 0 && posix_memalign(&arena, 64, (size_t)TVM_WORKSPACE_SIZE_BYTES) != 0) arena = NULL;
  if (mtvm_workspace_init(arena, (uint64_t)TVM_WORKSPACE_SIZE_BYTES) != 0) {
    fprintf(stderr, "device: cannot allocate a %llu-byte workspace\n",
            (unsigned long long)TVM_WORKSPACE_SIZE_BYTES);
    return 2;
  }
  return mtvm_device_serve();
}
