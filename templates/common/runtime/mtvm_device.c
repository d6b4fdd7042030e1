/*
 * The device side of the microtvm-registry session protocol, shared by every template (host,
 * cortex-m). It holds tensors in numbered slots, calls the model's generated functions, reads
 * results back and times calls on the device's own counter. Everything a platform differs in
 * (the byte stream, memory for tensors, the counter) is behind mtvm_port.h.
 *
 * Frame: 'M' 'T' | type u8 | flags u8 | length u32 LE | payload | crc32 u32 LE
 * The CRC covers type, flags, length and payload (zlib's crc32). All integers little-endian.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtvm_port.h"
#include "mtvm_runtime.h"

#define PROTOCOL_VERSION 1
#define MAX_PAYLOAD (1u << 30)
#ifndef MTVM_MAX_SLOTS
#define MTVM_MAX_SLOTS 1024
#endif
#define MAX_SLOTS MTVM_MAX_SLOTS
#define MAX_NDIM 16
#define MAX_CALL_ARGS 64

enum {
  MSG_HELLO = 0x01,
  MSG_UPLOAD = 0x02,
  MSG_CALL = 0x03,
  MSG_READ = 0x04,
  MSG_TIME = 0x05,
  MSG_FREE = 0x06,
  MSG_ECHO = 0x07,
  MSG_STATS = 0x08,
  REPLY_OK = 0x80,
  REPLY_HELLO = 0x81,
  REPLY_DATA = 0x82,
  REPLY_TIMES = 0x83,
  REPLY_ECHO = 0x84,
  REPLY_STATS = 0x85,
  REPLY_ERROR = 0xEE,
};

/* A loaded tensor. Its header lives on the heap beside its data, only while it is loaded: the
 * static table is one pointer per slot, so the firmware's own RAM does not grow with the number
 * of slots or dimensions it allows. */
typedef struct {
  DLTensor tensor;
  int64_t shape[MAX_NDIM];
  uint64_t nbytes;
  uint64_t capacity;
} slot_t;

static slot_t* g_slots[MAX_SLOTS];

static void release_slot(uint32_t index) {
  if (g_slots[index] != NULL) {
    mtvm_port_free(g_slots[index]->tensor.data);
    mtvm_port_free(g_slots[index]);
    g_slots[index] = NULL;
  }
}
static uint64_t g_frames_received, g_bytes_received, g_calls, g_bad_frames;

/* --------------------------------------------------------------- I/O */

static int read_exact(uint8_t* buf, size_t n) { return mtvm_port_read(buf, n); }

/* A compiled model times each of its calls on this clock (its own default, for a firmware
 * without this device program, is weak and counts nothing). */
uint64_t mtvm_model_clock(void) { return mtvm_port_ticks(); }

static void write_all(const uint8_t* buf, size_t n) { mtvm_port_write(buf, n); }

static void put_u16(uint8_t* p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t* p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get_u32(const uint8_t* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/* Sends one frame whose payload is the concatenation of two parts (header part + bulk data). */
static void send_frame2(uint8_t type, const uint8_t* a, size_t na, const uint8_t* b, size_t nb) {
  uint8_t head[8];
  uint8_t tail[4];
  head[0] = 'M';
  head[1] = 'T';
  head[2] = type;
  head[3] = 0;
  put_u32(head + 4, (uint32_t)(na + nb));
  uint32_t crc = mtvm_crc32(0, head + 2, 6);
  if (na) crc = mtvm_crc32(crc, a, na);
  if (nb) crc = mtvm_crc32(crc, b, nb);
  put_u32(tail, crc);
  write_all(head, 8);
  if (na) write_all(a, na);
  if (nb) write_all(b, nb);
  write_all(tail, 4);
  mtvm_port_flush();
}

static void send_frame(uint8_t type, const uint8_t* payload, size_t n) {
  send_frame2(type, payload, n, NULL, 0);
}

static void send_error(const char* kind, const char* message) {
  size_t nk = strlen(kind), nm = strlen(message);
  uint8_t buf[2 + 64 + 256];
  if (nk > 64) nk = 64;
  if (nm > 256) nm = 256;
  put_u16(buf, (uint16_t)nk);
  memcpy(buf + 2, kind, nk);
  memcpy(buf + 2 + nk, message, nm);
  send_frame(REPLY_ERROR, buf, 2 + nk + nm);
}

static void send_ok(void) { send_frame(REPLY_OK, NULL, 0); }

/* ------------------------------------------------------------- tensors */

static int slot_arg(uint32_t index, char* msg, size_t cap) {
  if (index >= MAX_SLOTS) {
    snprintf(msg, cap, "slot %u out of range (0..%d)", index, MAX_SLOTS - 1);
    return -1;
  }
  return 0;
}

static void handle_upload(const uint8_t* p, uint32_t n) {
  char msg[256];
  if (n < 12) {
    send_error("ProtocolError", "upload payload shorter than its 12-byte header");
    return;
  }
  uint32_t index = get_u32(p);
  uint8_t code = p[4], bits = p[5];
  uint16_t lanes = get_u16(p + 6);
  uint32_t ndim = get_u32(p + 8);
  if (slot_arg(index, msg, sizeof(msg))) {
    send_error("ProtocolError", msg);
    return;
  }
  if (ndim > MAX_NDIM || n < 12 + 8u * ndim) {
    snprintf(msg, sizeof(msg), "upload of slot %u: bad ndim %u for a %u-byte payload", index, ndim, n);
    send_error("ProtocolError", msg);
    return;
  }
  uint64_t count = 1;
  int64_t shape[MAX_NDIM];
  for (uint32_t i = 0; i < ndim; ++i) {
    shape[i] = (int64_t)get_u64(p + 12 + 8 * i);
    if (shape[i] < 0) {
      send_error("ProtocolError", "negative dimension in upload");
      return;
    }
    count *= (uint64_t)shape[i];
  }
  uint64_t nbytes = count * (((uint64_t)bits * lanes + 7) / 8);
  const uint8_t* data = p + 12 + 8 * ndim;
  uint64_t ndata = n - (12 + 8u * ndim);
  if (ndata != 0 && ndata != nbytes) {
    char have[MTVM_U64_TEXT], want[MTVM_U64_TEXT];
    snprintf(msg, sizeof(msg), "upload of slot %u: %s data bytes for a tensor of %s bytes", index,
             mtvm_u64_text(have, ndata), mtvm_u64_text(want, nbytes));
    send_error("ProtocolError", msg);
    return;
  }
  slot_t* s = g_slots[index];
  if (s == NULL) {
    s = (slot_t*)mtvm_port_alloc(sizeof(slot_t));
    if (s == NULL) {
      snprintf(msg, sizeof(msg), "out of memory allocating slot %u", index);
      send_error("MemoryError", msg);
      return;
    }
    memset(s, 0, sizeof(slot_t));
    g_slots[index] = s;
  }
  if (s->capacity < nbytes || s->tensor.data == NULL) {
    if (s->tensor.data) mtvm_port_free(s->tensor.data);
    size_t alloc = nbytes ? (size_t)nbytes : 1;
    void* mem = mtvm_port_alloc(alloc);
    if (mem == NULL) {
      s->tensor.data = NULL;
      release_slot(index);
      char want[MTVM_U64_TEXT];
      snprintf(msg, sizeof(msg), "out of memory allocating %s bytes for slot %u", mtvm_u64_text(want, nbytes), index);
      send_error("MemoryError", msg);
      return;
    }
    s->tensor.data = mem;
    s->capacity = alloc;
  }
  s->nbytes = nbytes;
  memcpy(s->shape, shape, sizeof(int64_t) * ndim);
  s->tensor.device.device_type = kDLCPU;
  s->tensor.device.device_id = 0;
  s->tensor.ndim = (int32_t)ndim;
  s->tensor.dtype.code = code;
  s->tensor.dtype.bits = bits;
  s->tensor.dtype.lanes = lanes;
  s->tensor.shape = s->shape;
  s->tensor.strides = NULL;
  s->tensor.byte_offset = 0;
  if (ndata) {
    memcpy(s->tensor.data, data, (size_t)nbytes);
  } else if (nbytes) {
    memset(s->tensor.data, 0, (size_t)nbytes);
  }
  send_ok();
}

static void handle_read(const uint8_t* p, uint32_t n) {
  char msg[128];
  if (n != 4) {
    send_error("ProtocolError", "read payload must be a 4-byte slot index");
    return;
  }
  uint32_t index = get_u32(p);
  if (slot_arg(index, msg, sizeof(msg))) {
    send_error("ProtocolError", msg);
    return;
  }
  if (g_slots[index] == NULL) {
    snprintf(msg, sizeof(msg), "slot %u holds no tensor", index);
    send_error("ProtocolError", msg);
    return;
  }
  send_frame(REPLY_DATA, (const uint8_t*)g_slots[index]->tensor.data, (size_t)g_slots[index]->nbytes);
}

static void handle_free(const uint8_t* p, uint32_t n) {
  if (n != 4) {
    send_error("ProtocolError", "free payload must be a 4-byte slot index");
    return;
  }
  uint32_t index = get_u32(p);
  for (uint32_t i = 0; i < MAX_SLOTS; ++i) {
    if (index == 0xFFFFFFFFu || i == index) {
      release_slot(i);
    }
  }
  send_ok();
}

/* ----------------------------------------------------------- functions */

/* Resolves a function index and slot list; on failure sends the error and returns NULL. */
static const mtvm_function_entry* resolve_call(uint32_t fidx, uint32_t nargs, const uint8_t* slots,
                                               DLTensor** tensors) {
  char msg[256];
  if (fidx >= mtvm_num_functions) {
    snprintf(msg, sizeof(msg), "function index %u out of range (%u functions)", fidx,
             (unsigned)mtvm_num_functions);
    send_error("ProtocolError", msg);
    return NULL;
  }
  if (nargs > MAX_CALL_ARGS) {
    send_error("ProtocolError", "too many arguments");
    return NULL;
  }
  for (uint32_t i = 0; i < nargs; ++i) {
    uint32_t index = get_u32(slots + 4 * i);
    if (index >= MAX_SLOTS || g_slots[index] == NULL) {
      snprintf(msg, sizeof(msg), "argument %u names slot %u, which holds no tensor", i, index);
      send_error("ProtocolError", msg);
      return NULL;
    }
    tensors[i] = &g_slots[index]->tensor;
  }
  return &mtvm_functions[fidx];
}

static int run_once(const mtvm_function_entry* fn, DLTensor** tensors, uint32_t nargs) {
  mtvm_clear_error();
  mtvm_workspace_reset();
  g_calls++;
  int32_t rc = mtvm_call(fn, tensors, (int32_t)nargs);
  mtvm_workspace_reset();
  if (rc != 0) {
    if (!mtvm_has_error()) {
      char msg[256];
      snprintf(msg, sizeof(msg), "%s returned %d without setting an error", fn->name, (int)rc);
      mtvm_set_error("RuntimeError", msg);
    }
    send_error(mtvm_error_kind(), mtvm_error_message());
    return -1;
  }
  return 0;
}

static void handle_call(const uint8_t* p, uint32_t n) {
  DLTensor* tensors[MAX_CALL_ARGS];
  if (n < 8 || n != 8 + 4 * get_u32(p + 4)) {
    send_error("ProtocolError", "call payload length does not match its argument count");
    return;
  }
  uint32_t nargs = get_u32(p + 4);
  const mtvm_function_entry* fn = resolve_call(get_u32(p), nargs, p + 8, tensors);
  if (fn == NULL) return;
  if (run_once(fn, tensors, nargs) == 0) send_ok();
}

static void handle_time(const uint8_t* p, uint32_t n) {
  DLTensor* tensors[MAX_CALL_ARGS];
  if (n < 16 || n != 16 + 4 * get_u32(p + 12)) {
    send_error("ProtocolError", "time payload length does not match its argument count");
    return;
  }
  uint32_t number = get_u32(p + 4), repeat = get_u32(p + 8), nargs = get_u32(p + 12);
  if (number == 0 || repeat == 0 || repeat > 100000) {
    send_error("ValueError", "time needs number >= 1 and 1 <= repeat <= 100000");
    return;
  }
  const mtvm_function_entry* fn = resolve_call(get_u32(p), nargs, p + 16, tensors);
  if (fn == NULL) return;
  if (run_once(fn, tensors, nargs) != 0) return; /* warm-up; also surfaces errors once */
  uint8_t* out = (uint8_t*)mtvm_port_alloc(4 + 8 * (size_t)repeat);
  if (out == NULL) {
    send_error("MemoryError", "out of memory for timing results");
    return;
  }
  put_u32(out, repeat);
  for (uint32_t r = 0; r < repeat; ++r) {
    mtvm_port_ticks_restart();
    uint64_t start = mtvm_port_ticks();
    for (uint32_t i = 0; i < number; ++i) {
      mtvm_workspace_reset();
      g_calls++;
      if (mtvm_call(fn, tensors, (int32_t)nargs) != 0) {
        mtvm_port_free(out);
        send_error(mtvm_has_error() ? mtvm_error_kind() : "RuntimeError",
                   mtvm_has_error() ? mtvm_error_message() : "function failed while timing");
        return;
      }
    }
    /* Counter ticks per call: the host turns them into seconds, cycles or instructions with the
     * counter description that HELLO carries. */
    double per_call = (double)(mtvm_port_ticks() - start) / (double)number;
    memcpy(out + 4 + 8 * r, &per_call, 8);
  }
  mtvm_workspace_reset();
  send_frame(REPLY_TIMES, out, 4 + 8 * (size_t)repeat);
  mtvm_port_free(out);
}

static void handle_hello(void) {
  size_t cap = 16 + MTVM_CLOCK_INFO_SIZE;
  for (uint32_t i = 0; i < mtvm_num_functions; ++i) cap += 6 + strlen(mtvm_functions[i].name);
  uint8_t* buf = (uint8_t*)mtvm_port_alloc(cap);
  if (buf == NULL) { send_error("MemoryError", "out of memory for the hello reply"); return; }
  put_u16(buf, PROTOCOL_VERSION);
  put_u16(buf + 2, MTVM_HELLO_HAS_CLOCK);
  put_u64(buf + 4, mtvm_workspace_size());
  put_u32(buf + 12, mtvm_num_functions);
  size_t off = 16;
  for (uint32_t i = 0; i < mtvm_num_functions; ++i) {
    size_t len = strlen(mtvm_functions[i].name);
    put_u32(buf + off, (uint32_t)mtvm_functions[i].num_args);
    put_u16(buf + off + 4, (uint16_t)len);
    memcpy(buf + off + 6, mtvm_functions[i].name, len);
    off += 6 + len;
  }
  /* What TIME's numbers count, so the host never mistakes one unit for another. */
  mtvm_clock_info clock;
  mtvm_port_clock(&clock);
  buf[off] = clock.kind;
  buf[off + 1] = (uint8_t)clock.icount_shift;
  put_u16(buf + off + 2, 0);
  put_u64(buf + off + 4, clock.counter_hz);
  put_u64(buf + off + 12, clock.cpu_hz);
  off += MTVM_CLOCK_INFO_SIZE;
  send_frame(REPLY_HELLO, buf, off);
  mtvm_port_free(buf);
}

static void handle_stats(void) {
  uint8_t buf[48];
  put_u64(buf, g_frames_received);
  put_u64(buf + 8, g_bytes_received);
  put_u64(buf + 16, g_calls);
  put_u64(buf + 24, g_bad_frames);
  put_u64(buf + 32, mtvm_workspace_peak());
  put_u64(buf + 40, mtvm_workspace_size());
  send_frame(REPLY_STATS, buf, sizeof(buf));
}

/* ---------------------------------------------------------------- loop */

int mtvm_device_serve(void) {
  for (;;) {
    uint8_t head[8];
    int r = read_exact(head, 8);
    if (r == 0) return 0;
    if (r < 0) return 4;
    if (head[0] != 'M' || head[1] != 'T') {
      /* The stream is out of step; nothing after this can be trusted. */
      send_error("FrameError", "bad frame magic; the device stops");
      return 3;
    }
    uint32_t len = get_u32(head + 4);
    if (len > MAX_PAYLOAD) {
      send_error("FrameError", "frame longer than 1 GiB; the device stops");
      return 3;
    }
    uint8_t* payload = (uint8_t*)mtvm_port_alloc((size_t)len + 4);
    if (payload == NULL) {
      send_error("MemoryError", "out of memory reading a frame; the device stops");
      return 5;
    }
    r = read_exact(payload, (size_t)len + 4);
    if (r <= 0) {
      mtvm_port_free(payload);
      return r == 0 ? 0 : 4;
    }
    g_frames_received++;
    g_bytes_received += 12 + (uint64_t)len;
    uint32_t want = get_u32(payload + len);
    uint32_t got = mtvm_crc32(mtvm_crc32(0, head + 2, 6), payload, len);
    if (want != got) {
      char msg[128];
      g_bad_frames++;
      snprintf(msg, sizeof(msg), "frame checksum mismatch (type 0x%02x, %u bytes): frame says %08x, computed %08x",
               head[2], len, want, got);
      send_error("FrameError", msg);
      mtvm_port_free(payload);
      continue;
    }
    switch (head[2]) {
      case MSG_HELLO: handle_hello(); break;
      case MSG_UPLOAD: handle_upload(payload, len); break;
      case MSG_CALL: handle_call(payload, len); break;
      case MSG_READ: handle_read(payload, len); break;
      case MSG_TIME: handle_time(payload, len); break;
      case MSG_FREE: handle_free(payload, len); break;
      case MSG_ECHO: send_frame(REPLY_ECHO, payload, len); break;
      case MSG_STATS: handle_stats(); break;
      default: {
        char msg[64];
        snprintf(msg, sizeof(msg), "unknown message type 0x%02x", head[2]);
        send_error("ProtocolError", msg);
      }
    }
    mtvm_port_free(payload);
  }
}
