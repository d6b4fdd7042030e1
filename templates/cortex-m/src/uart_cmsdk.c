/* Arm CMSDK APB UART (the MPS2/MPS3 boards): DATA +0, STATE +4, CTRL +8, INTSTATUS +0xC,
 * BAUDDIV +0x10. Received bytes raise the RX interrupt; sending waits while TX is full. */
#include <stdint.h>

#include "board_config.h"
#include "uart.h"

#define UART_REG(off) (*(volatile uint32_t*)(MTVM_UART_BASE + (off)))
#define STATE_TX_FULL 1u
#define STATE_RX_FULL 2u
#define CTRL_TX_EN 1u
#define CTRL_RX_EN 2u
#define CTRL_RX_IRQ 8u

void mtvm_uart_init(void) {
  uint32_t div = MTVM_UART_CLOCK_HZ / MTVM_UART_BAUD;
  UART_REG(0x10) = div < 16u ? 16u : div;
  UART_REG(0x08) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_IRQ;
}

int mtvm_uart_rx_byte(void) { return (UART_REG(0x04) & STATE_RX_FULL) ? (int)(UART_REG(0x00) & 0xFFu) : -1; }

void mtvm_uart_tx_byte(unsigned char byte) {
  while (UART_REG(0x04) & STATE_TX_FULL) {
  }
  UART_REG(0x00) = byte;
}

void mtvm_uart_clear_irq(void) { UART_REG(0x0C) = 0x3u; }
