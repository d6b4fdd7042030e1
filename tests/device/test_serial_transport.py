"""The serial transport over a real pseudo-terminal (pyserial on the slave side, the test writing
the master side as a board would): how much one read returns, and how it times out."""
from __future__ import annotations

import os
import threading
import time
import tty

import pytest

from microtvm_registry.device.serial_transport import QUIET_GAP_SEC, SerialPortError, SerialTransport
from microtvm_registry.project_api import server


@pytest.fixture
def line():
    """(board side fd, SerialTransport on the pty): the board side is the pty's master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    transport = SerialTransport(os.ttyname(slave))
    try:
        yield master, transport
    finally:
        transport.close()
        os.close(slave)
        os.close(master)


def _send_in_pieces(fd: int, data: bytes, piece: int, pause: float) -> threading.Thread:
    def run():
        for i in range(0, len(data), piece):
            os.write(fd, data[i : i + piece])
            time.sleep(pause)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_burst_in_many_pieces_comes_back_in_one_read(line):
    board, transport = line
    data = bytes(range(256)) * 16
    # 64 pieces with pauses well inside the quiet gap: one burst, as a board's reply is
    sender = _send_in_pieces(board, data, 64, QUIET_GAP_SEC / 10)
    got = transport.read(len(data), 5.0)
    sender.join()
    assert got == data


def test_a_read_stops_at_n_and_leaves_the_rest(line):
    board, transport = line
    os.write(board, b"0123456789")
    assert transport.read(4, 5.0) == b"0123"
    assert transport.read(100, 5.0) == b"456789"  # fewer than asked: the line went quiet


def test_a_quiet_line_ends_a_read_with_what_came(line):
    board, transport = line
    sender = _send_in_pieces(board, b"abcdef", 3, QUIET_GAP_SEC * 30)  # a pause far over the gap
    first = transport.read(6, 5.0)
    sender.join()
    assert first == b"abc"
    assert transport.read(6, 5.0) == b"def"


def test_nothing_within_the_timeout_is_an_io_timeout(line):
    _, transport = line
    start = time.monotonic()
    with pytest.raises(server.IoTimeoutError):
        transport.read(8, 0.2)
    assert time.monotonic() - start >= 0.2


def test_writes_reach_the_board(line):
    board, transport = line
    transport.write(b"\x00\x01\x11\x13raw bytes", 5.0)
    got = b""
    while len(got) < 13:
        got += os.read(board, 64)
    assert got == b"\x00\x01\x11\x13raw bytes"


def test_a_closed_transport_says_so(line):
    _, transport = line
    transport.close()
    with pytest.raises(server.TransportClosedError):
        transport.read(1, 0.1)
    with pytest.raises(server.TransportClosedError):
        transport.write(b"x", 0.1)


def test_a_missing_port_is_one_clear_error(tmp_path):
    with pytest.raises(SerialPortError, match=r"cannot open serial port .*nope.*check the cable"):
        SerialTransport(str(tmp_path / "nope"))
