/*
 * The firmware's main: set up the board, give the runtime its static workspace, and serve the
 * session protocol over the UART forever. A damaged stream (bad magic) ends one round of the
 * loop; the next round resynchronizes on the next frame.
 */
#include "board_config.h"
#include "mtvm_port.h"
#include "mtvm_runtime.h"

void mtvm_board_init(void);

#if MTVM_WORKSPACE_SIZE_BYTES > 0
static uint8_t g_workspace[MTVM_WORKSPACE_SIZE_BYTES] __attribute__((aligned(64)));
#define WORKSPACE g_workspace
#else
#define WORKSPACE 0
#endif

int main(void) {
  mtvm_board_init();
  mtvm_workspace_init(WORKSPACE, MTVM_WORKSPACE_SIZE_BYTES);
  for (;;) mtvm_device_serve();
}
