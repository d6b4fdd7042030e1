/* The board's UART, as port_cortexm.c uses it; one driver per UART kind in the boards file. */
#ifndef MTVM_UART_H_
#define MTVM_UART_H_

void mtvm_uart_init(void);
/* The next received byte, or -1 when none is waiting. */
int mtvm_uart_rx_byte(void);
void mtvm_uart_tx_byte(unsigned char byte);
void mtvm_uart_clear_irq(void);

#endif
