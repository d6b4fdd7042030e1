"""A serial line as a Project API transport: pyserial, raw, with the Project API's timeouts.

The same class opens a real board's ``/dev/ttyACM0`` and the pseudo-terminal QEMU gives an
emulated board's UART, so the session cannot tell them apart. ``read`` waits up to its timeout
for the first byte, then keeps reading while bytes keep coming, until it has the ``n`` asked for
or the line has been quiet for ``QUIET_GAP_SEC``: it returns 1..n bytes, as ``read_transport``
promises, and raises the server library's ``IoTimeoutError`` / ``TransportClosedError``, which
cross the wire as TVM's do.

Why gather a burst: a board answers in bursts far faster than each Project API round trip
(QEMU's UART sends about 250 KiB/s), so returning whatever is there the moment the first byte
lands took some 300 round trips of ~50 bytes for a 16 KiB reply. The session asks for exactly
the bytes its replies should hold, so in the normal case the read ends when the last one is in
and the quiet gap is never waited for.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from ..errors import MicrotvmError
from ..project_api import server

DEFAULT_BAUDRATE = 115200
#: A line silent this long after a burst has said what it had to say for now. Short against a
#: round trip's worth of bytes at any baud rate we meet, long against the gaps inside a burst
#: (a USB CDC board sends a packet every 1 ms frame).
QUIET_GAP_SEC = 0.003
#: How long a dead line waits for its emulator's exit status (see SerialTransport._closed).
EXIT_REASON_WAIT_SEC = 0.5


class SerialPortError(MicrotvmError):
    """The serial port cannot be opened (missing, busy, no permission)."""


class SerialTransport:
    """Bytes to and from one serial port (see the module docstring).

    ``alive`` is asked when the port reports an error or a timeout: for an emulated board it says
    why the line went quiet (QEMU exited), so the error names the real cause.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUDRATE,
        *,
        alive: Optional[Callable[[], Optional[str]]] = None,
    ) -> None:
        import serial

        self.port = port
        self._alive = alive or (lambda: None)
        self._has_alive = alive is not None
        try:
            self._serial = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=None, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as err:
            raise SerialPortError(
                f"cannot open serial port {port}: {err}; check the cable and the port name, and that no other "
                "program (a terminal, another microtvm run) has it open"
            ) from None
        self._error_types = (serial.SerialException, OSError)

    def _closed(self) -> server.TransportClosedError:
        """The error for a line that went dead. TransportClosedError carries no text on the wire
        (as in TVM), so the reason (QEMU's exit) goes to stderr, which the user sees.

        A killed QEMU closes its pty a moment before its exit status can be read, so when the
        line dies with no reason yet, the reason is asked again for a short while."""
        why = self._alive()
        deadline = time.monotonic() + EXIT_REASON_WAIT_SEC
        while not why and self._has_alive and time.monotonic() < deadline:
            time.sleep(0.01)
            why = self._alive()
        if why:
            print(f"microtvm: the serial line {self.port} closed: {why}", file=sys.stderr, flush=True)
        return server.TransportClosedError()

    def read(self, n: int, timeout_sec: Optional[float]) -> bytes:
        if self._serial is None:
            raise server.TransportClosedError()
        try:
            self._serial.timeout = timeout_sec
            first = self._serial.read(1)
            if not first:
                if self._alive():
                    raise self._closed()
                raise server.IoTimeoutError()
            data = bytearray(first)
            self._serial.timeout = QUIET_GAP_SEC
            while len(data) < n:
                more = self._serial.read(n - len(data))
                if not more:
                    break
                data += more
        except self._error_types:
            raise self._closed() from None
        return bytes(data)

    def write(self, data: bytes, timeout_sec: Optional[float]) -> None:
        if self._serial is None:
            raise server.TransportClosedError()
        try:
            self._serial.write_timeout = timeout_sec
            self._serial.write(data)
            self._serial.flush()
        except self._error_types as err:
            if type(err).__name__ == "SerialTimeoutException":
                raise server.IoTimeoutError() from None
            raise self._closed() from None

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except self._error_types:
                pass
