/*
 * Implementation of the symbols generated kernels link against. Written for microtvm-registry;
 * behaviour follows the documented contracts of TVMBackendAllocWorkspace,
 * TVMBackendFreeWorkspace and TVMFFIErrorSetRaisedFromCStrParts.
 */
#include "mtvm_runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tvm/runtime/c_backend_api.h>

/* ---------------------------------------------------------------- errors */

#define MTVM_ERROR_KIND_MAX 64
#define MTVM_ERROR_MESSAGE_MAX 4096

static char g_error_kind[MTVM_ERROR_KIND_MAX];
static char g_error_message[MTVM_ERROR_MESSAGE_MAX];
static int g_has_error;

void mtvm_clear_error(void) {
  g_has_error = 0;
  g_error_kind[0] = '\0';
  g_error_message[0] = '\0';
}

int mtvm_has_error(void) { return g_has_error; }
const char* mtvm_error_kind(void) { return g_error_kind; }
const char* mtvm_error_message(void) { return g_error_message; }

static void copy_bounded(char* dst, size_t cap, size_t* used, const char* src) {
  if (src == NULL) return;
  size_t n = strlen(src);
  if (*used + n >= cap) n = cap - 1 - *used;
  memcpy(dst + *used, src, n);
  *used += n;
  dst[*used] = '\0';
}

void mtvm_set_error(const char* kind, const char* message) {
  size_t used = 0;
  g_error_kind[0] = '\0';
  copy_bounded(g_error_kind, sizeof(g_error_kind), &used, kind ? kind : "RuntimeError");
  used = 0;
  g_error_message[0] = '\0';
  copy_bounded(g_error_message, sizeof(g_error_message), &used, message);
  g_has_error = 1;
}

void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** message_parts,
                                       int32_t num_parts) {
  size_t used = 0;
  g_error_message[0] = '\0';
  for (int32_t i = 0; i < num_parts; ++i) {
    copy_bounded(g_error_message, sizeof(g_error_message), &used, message_parts[i]);
  }
  used = 0;
  g_error_kind[0] = '\0';
  copy_bounded(g_error_kind, sizeof(g_error_kind), &used, kind ? kind : "RuntimeError");
  g_has_error = 1;
}

/* ------------------------------------------------------------- workspace */

/*
 * The arena is a stack: generated code frees workspace in reverse order of allocation. A block
 * freed out of order is marked and popped once everything above it is gone, so the arena never
 * leaks; the device program also resets it after every call. Block bookkeeping lives outside the
 * arena so that all `size` bytes are usable, which keeps "M free of W" exact.
 */
#define MTVM_WORKSPACE_ALIGN 64u
#define MTVM_MAX_BLOCKS 256

typedef struct {
  void* ptr;
  uint64_t offset; /* where the block starts (before alignment padding) */
  int freed;
} mtvm_block;

static uint8_t* g_arena;
static uint64_t g_arena_size;
static uint64_t g_arena_top;
static uint64_t g_arena_peak;
static mtvm_block g_blocks[MTVM_MAX_BLOCKS];
static int g_num_blocks;

int mtvm_workspace_init(void* buffer, uint64_t size) {
  g_arena_size = size;
  g_arena_top = 0;
  g_arena_peak = 0;
  g_num_blocks = 0;
  g_arena = (uint8_t*)buffer;
  if (size != 0 && buffer == NULL) {
    g_arena_size = 0;
    return -1;
  }
  return 0;
}

void mtvm_workspace_reset(void) {
  g_arena_top = 0;
  g_num_blocks = 0;
}

uint64_t mtvm_workspace_size(void) { return g_arena_size; }
uint64_t mtvm_workspace_free_bytes(void) { return g_arena_size - g_arena_top; }
uint64_t mtvm_workspace_peak(void) { return g_arena_peak; }

void mtvm_workspace_swap(void* buffer, uint64_t size, void** prev_buffer, uint64_t* prev_size) {
  *prev_buffer = g_arena;
  *prev_size = g_arena_size;
  g_arena = (uint8_t*)buffer;
  g_arena_size = buffer != NULL ? size : 0;
  g_arena_top = 0;
  g_num_blocks = 0;
}

void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code_hint,
                               int dtype_bits_hint) {
  (void)device_id;
  (void)dtype_code_hint;
  (void)dtype_bits_hint;
  char msg[256];
  if (device_type != kDLCPU) {
    snprintf(msg, sizeof(msg), "workspace requested for device type %d; this runtime has only cpu (1)",
             device_type);
    mtvm_set_error("RuntimeError", msg);
    return NULL;
  }
  uintptr_t base = (uintptr_t)g_arena;
  uint64_t start = g_arena_top;
  uint64_t aligned = start;
  if (g_arena != NULL) {
    uintptr_t addr = base + start;
    uintptr_t pad = (MTVM_WORKSPACE_ALIGN - (addr % MTVM_WORKSPACE_ALIGN)) % MTVM_WORKSPACE_ALIGN;
    aligned = start + pad;
  }
  uint64_t free_bytes = g_arena_size - g_arena_top;
  if (g_num_blocks >= MTVM_MAX_BLOCKS || aligned > g_arena_size || nbytes > g_arena_size - aligned) {
    if (g_num_blocks >= MTVM_MAX_BLOCKS) {
      snprintf(msg, sizeof(msg), "workspace exhausted: more than %d live workspace blocks",
               MTVM_MAX_BLOCKS);
    } else {
      snprintf(msg, sizeof(msg),
               "workspace exhausted: asked %llu bytes, %llu free of %llu (raise the project option "
               "workspace_size_bytes)",
               (unsigned long long)nbytes, (unsigned long long)free_bytes,
               (unsigned long long)g_arena_size);
    }
    mtvm_set_error("MemoryError", msg);
    return NULL;
  }
  void* ptr = g_arena + aligned;
  g_blocks[g_num_blocks].ptr = ptr;
  g_blocks[g_num_blocks].offset = start;
  g_blocks[g_num_blocks].freed = 0;
  g_num_blocks++;
  g_arena_top = aligned + nbytes;
  if (g_arena_top > g_arena_peak) g_arena_peak = g_arena_top;
  return ptr;
}

int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type;
  (void)device_id;
  int i;
  for (i = g_num_blocks - 1; i >= 0; --i) {
    if (g_blocks[i].ptr == ptr && !g_blocks[i].freed) break;
  }
  if (i < 0) {
    mtvm_set_error("RuntimeError", "TVMBackendFreeWorkspace: pointer was not allocated from the workspace");
    return -1;
  }
  g_blocks[i].freed = 1;
  while (g_num_blocks > 0 && g_blocks[g_num_blocks - 1].freed) {
    g_arena_top = g_blocks[g_num_blocks - 1].offset;
    g_num_blocks--;
  }
  return 0;
}

/* ------------------------------------------------------------- calling */

#define MTVM_MAX_ARGS 64

int32_t mtvm_call(const mtvm_function_entry* entry, DLTensor** tensors, int32_t num_args) {
  TVMFFIAny args[MTVM_MAX_ARGS];
  TVMFFIAny result;
  if (num_args > MTVM_MAX_ARGS) {
    mtvm_set_error("ValueError", "too many arguments (the runtime takes at most 64)");
    return -1;
  }
  memset(args, 0, sizeof(args));
  memset(&result, 0, sizeof(result));
  result.type_index = kTVMFFINone;
  for (int32_t i = 0; i < num_args; ++i) {
    args[i].type_index = kTVMFFIDLTensorPtr;
    args[i].v_ptr = tensors[i];
  }
  return entry->fn(NULL, args, num_args, &result);
}

/* ----------------------------------------------------------------- crc */

static uint32_t g_crc_table[256];
static int g_crc_ready;

static void crc_init(void) {
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
    g_crc_table[n] = c;
  }
  g_crc_ready = 1;
}

uint32_t mtvm_crc32(uint32_t crc, const uint8_t* data, size_t len) {
  if (!g_crc_ready) crc_init();
  crc = ~crc;
  for (size_t i = 0; i < len; ++i) crc = g_crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}
