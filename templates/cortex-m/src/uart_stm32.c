/* STM32 USART/LPUART with the ISR/RDR/TDR register set (STM32L4, STM32F7): CR1 +0, BRR +0xC,
 * ISR +0x1C, ICR +0x20, RDR +0x24, TDR +0x28. The clock and pin set-up are register writes
 * listed in the boards file (MTVM_UART_SETUP: address, mask, value), done in order. */
#include <stdint.h>

#include "board_config.h"
#include "uart.h"

#define UART_REG(off) (*(volatile uint32_t*)(MTVM_UART_BASE + (off)))
#define ISR_RXNE (1u << 5)
#define ISR_TXE (1u << 7)

typedef struct {
  uint32_t address, mask, value;
} reg_write;

void mtvm_uart_init(void) {
  static const reg_write setup[] = MTVM_UART_SETUP;
  for (unsigned i = 0; i < sizeof(setup) / sizeof(setup[0]); ++i) {
    volatile uint32_t* reg = (volatile uint32_t*)setup[i].address;
    *reg = (*reg & ~setup[i].mask) | (setup[i].value & setup[i].mask);
    (void)*reg; /* read back: the clock is on before the next write */
  }
  UART_REG(0x0C) = MTVM_UART_BRR;
  UART_REG(0x00) = (1u << 5) | (1u << 3) | (1u << 2) | 1u; /* RXNEIE, TE, RE, UE */
}

int mtvm_uart_rx_byte(void) { return (UART_REG(0x1C) & ISR_RXNE) ? (int)(UART_REG(0x24) & 0xFFu) : -1; }

void mtvm_uart_tx_byte(unsigned char byte) {
  while (!(UART_REG(0x1C) & ISR_TXE)) {
  }
  UART_REG(0x28) = byte;
}

void mtvm_uart_clear_irq(void) { UART_REG(0x20) = 0xFFFFFFFFu; /* overrun and other flags */ }
