"""The serial transport over a real pseudo-terminal (pyserial on the slave side, the test writing
the master side as a board would): how much one read returns, and how it times out."""
from __future__ import annotations

import os
import threading
import time
import tty

import pytest

from microtvm_registry.device.serial_transport import SerialPortError, SerialTransport
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


def test_a_burst_in_many_pieces_comes_back_in_one_read(line, monkeypatch):
    from microtvm_registry.device import serial_transport

    board, transport = line
    # A quiet gap far longer than the pauses between pieces, whatever the machine's load: the
    # 64 pieces are one burst, as a board's reply is, and one read gathers them.
    monkeypatch.setattr(serial_transport, "QUIET_GAP_SEC", 1.0)
    data = bytes(range(256)) * 16
    sender = _send_in_pieces(board, data, 64, 0.002)
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
    os.write(board, b"abc")
    # nothing more comes until the read has returned: the quiet gap ended it, with what came
    assert transport.read(6, 5.0) == b"abc"
    os.write(board, b"def")
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
