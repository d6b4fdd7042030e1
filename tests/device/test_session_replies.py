"""A session never takes a reply for what it is not: the wrong kind of reply, or one whose
payload does not have its layout, ends the session in one sentence.

The device here is a test double: a misbehaving device program (our firmware cannot be made
to send these), answering each request frame as its script says, behind the transport interface
(write, read) every real transport offers.
"""
from __future__ import annotations

import struct
from typing import Callable, Dict

import numpy as np
import pytest

from microtvm_registry.device import protocol
from microtvm_registry.device.session import Session
from microtvm_registry.errors import SessionError

HELLO = struct.pack("<HHQI", 1, 0, 0, 1) + struct.pack("<iH", 2, 1) + b"f"


class ScriptedDevice:
    """Test double of a device program: ``answers[request type](payload)`` gives (reply type,
    reply payload); unlisted requests get OK."""

    def __init__(self, answers: Dict[int, Callable[[bytes], tuple]]) -> None:
        self._answers = {protocol.MSG_HELLO: lambda p: (protocol.REPLY_HELLO, HELLO), **answers}
        self._decoder = protocol.FrameDecoder()
        self._out = bytearray()
        self.slots: Dict[int, bytes] = {}

    def write(self, data: bytes, timeout_sec=None) -> None:
        for frame in self._decoder.feed(data):
            reply_type, payload = self._answers.get(frame.type, lambda p: (protocol.REPLY_OK, b""))(frame.payload)
            self._out += protocol.encode_frame(reply_type, payload)

    def read(self, n: int, timeout_sec=None) -> bytes:
        chunk, self._out[:n] = bytes(self._out[:n]), b""
        assert chunk, "the session asked for a reply the script never gives"
        return chunk


def test_an_echo_of_the_right_length_is_not_taken_for_read_data():
    """Before: the ECHO frame's payload (here: the READ request's own slot number, padded) was
    returned as the output."""
    device = ScriptedDevice({protocol.MSG_READ: lambda p: (protocol.REPLY_ECHO, p + b"\x00" * 12)})
    session = Session(device)
    with pytest.raises(SessionError) as err:
        session.call("f", np.zeros(4, np.float32), np.zeros(4, np.float32))
    assert "the device answered READ with ECHO reply (expected DATA)" in str(err.value)
    assert "\n" not in str(err.value) and "rebuild and flash the project" in str(err.value)
    with pytest.raises(SessionError, match="unusable after an earlier failure"):
        session.echo(b"x")


def test_the_right_reply_passes():
    data = np.arange(4, dtype=np.float32)
    device = ScriptedDevice({protocol.MSG_READ: lambda p: (protocol.REPLY_DATA, data.tobytes())})
    outputs = Session(device).call("f", np.zeros(4, np.float32), np.zeros(4, np.float32))
    assert len(outputs) == 2 and all(np.array_equal(out, data) for out in outputs)  # unknown roles: every slot read


@pytest.mark.parametrize("answers, words", [
    ({protocol.MSG_HELLO: lambda p: (protocol.REPLY_HELLO, HELLO[:10])}, "HELLO reply is malformed (10 bytes: shorter than its 16-byte head)"),
    ({protocol.MSG_HELLO: lambda p: (protocol.REPLY_HELLO, HELLO[:-1] + b"\xff")}, "is not UTF-8"),
    ({protocol.MSG_HELLO: lambda p: (protocol.REPLY_DATA, HELLO)}, "answered HELLO with DATA (expected HELLO reply)"),
    ({protocol.MSG_HELLO: lambda p: (protocol.REPLY_ERROR, b"\x09\x00Type")}, "ERROR reply is malformed"),
])
def test_a_bad_hello_is_one_sentence(answers, words):
    with pytest.raises(SessionError) as err:
        Session(ScriptedDevice(answers))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_short_times_reply_is_one_sentence():
    device = ScriptedDevice({protocol.MSG_TIME: lambda p: (protocol.REPLY_TIMES, struct.pack("<I", 3) + b"\x00" * 8)})
    session = Session(device)
    with pytest.raises(SessionError, match=r"TIMES reply is malformed \(12 bytes: 3 times need 28\)"):
        session.time_evaluator("f", number=1, repeat=3)(np.zeros(4, np.float32), np.zeros(4, np.float32))
