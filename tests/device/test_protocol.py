"""Framing of the host protocol: every damaged byte is caught, frames survive any split."""
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microtvm_registry.errors import SessionError
from microtvm_registry.device import protocol
from microtvm_registry.device.protocol import FrameDecoder, FrameError, encode_frame


def test_frame_layout_is_magic_type_length_payload_crc():
    frame = encode_frame(protocol.MSG_ECHO, b"abc")
    assert frame[:2] == b"MT"
    assert frame[2] == protocol.MSG_ECHO
    assert struct.unpack_from("<I", frame, 4)[0] == 3
    assert frame[8:11] == b"abc"
    assert struct.unpack_from("<I", frame, 11)[0] == zlib.crc32(frame[2:11])
    assert len(frame) == 15


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=30),
)
def test_frames_survive_arbitrary_splits(payloads, cuts):
    stream = b"".join(encode_frame(0x80 + i, p) for i, p in enumerate(payloads))
    decoder = FrameDecoder()
    frames = []
    pos = 0
    for cut in cuts:
        frames += decoder.feed(stream[pos : pos + cut])
        pos += cut
    frames += decoder.feed(stream[pos:])
    assert [(f.type, f.payload) for f in frames] == [(0x80 + i, p) for i, p in enumerate(payloads)]
    assert decoder.pending == 0


def test_every_flipped_byte_after_the_magic_is_detected():
    frame = encode_frame(protocol.REPLY_DATA, bytes(range(40)))
    for pos in range(2, len(frame)):
        damaged = bytearray(frame)
        damaged[pos] ^= 0x10
        if 4 <= pos < 8:
            # A damaged length: the decoder either waits for bytes that never come or fails.
            decoder = FrameDecoder()
            try:
                out = decoder.feed(bytes(damaged) + encode_frame(protocol.REPLY_OK))
            except FrameError:
                continue
            assert all(f.payload != bytes(range(40)) for f in out)
            continue
        with pytest.raises(FrameError, match="frame checksum mismatch"):
            FrameDecoder().feed(bytes(damaged))


def test_bad_magic_is_refused_and_the_decoder_stays_broken():
    decoder = FrameDecoder()
    with pytest.raises(FrameError, match="bad frame magic"):
        decoder.feed(b"XX" + encode_frame(protocol.REPLY_OK)[2:])
    with pytest.raises(FrameError):
        decoder.feed(encode_frame(protocol.REPLY_OK))


def test_frame_error_is_a_session_error():
    assert issubclass(FrameError, SessionError)
    assert issubclass(protocol.DeviceError, SessionError)


def test_needed_counts_missing_bytes():
    decoder = FrameDecoder()
    frame = encode_frame(protocol.REPLY_DATA, b"x" * 100)
    assert decoder.needed() == 12
    decoder.feed(frame[:8])
    assert decoder.needed() == 104
    assert decoder.feed(frame[8:]) and decoder.pending == 0


@pytest.mark.parametrize(
    "dtype, expected",
    [("float32", (2, 32, 1)), ("int8", (0, 8, 1)), ("uint16", (1, 16, 1)), ("bool", (6, 8, 1)), ("float32x4", (2, 32, 4))],
)
def test_parse_dtype(dtype, expected):
    assert protocol.parse_dtype(dtype) == expected


def test_parse_dtype_refuses_unknown():
    with pytest.raises(SessionError, match="not supported"):
        protocol.parse_dtype("handle")


def test_payload_parsers_round_trip():
    hello = struct.pack("<HHQI", 1, 0, 4096, 2) + struct.pack("<iH", 3, 5) + b"dense" + struct.pack("<iH", 2, 4) + b"relu"
    parsed = protocol.parse_hello(hello)
    assert parsed.workspace_size_bytes == 4096
    assert [(f.name, f.num_args) for f in parsed.functions] == [("dense", 3), ("relu", 2)]
    assert protocol.parse_times(struct.pack("<I2d", 2, 0.5, 0.25)) == [0.5, 0.25]
    assert protocol.parse_error(struct.pack("<H", 9) + b"TypeErrorbad arg") == ("TypeError", "bad arg")
    upload = protocol.upload_payload(3, "int8", (2, 3), b"\x01" * 6)
    assert struct.unpack_from("<IBBHI2q", upload) == (3, 0, 8, 1, 2, 2, 3)
    assert upload.endswith(b"\x01" * 6)


HELLO_HEAD = struct.pack("<HHQI", 1, 0, 4096, 1)
CLOCK = struct.pack("<BbHQQ", protocol.CLOCK_CYCLES, 3, 0, 25_000_000, 25_000_000)


@pytest.mark.parametrize("parse, payload, words", [
    (protocol.parse_hello, b"\x01\x00\x00", "shorter than its 16-byte head"),
    (protocol.parse_hello, struct.pack("<HHQI", 1, 0, 0, 0xFFFFFFFF), "claims 4294967295 functions"),
    (protocol.parse_hello, HELLO_HEAD + struct.pack("<iH", 3, 9) + b"dense", "function 0's name is cut off"),
    (protocol.parse_hello, HELLO_HEAD + struct.pack("<iH", 3, 2) + b"\xff\xfe", "function 0's name b'\\xff\\xfe' is not UTF-8"),
    (protocol.parse_hello, HELLO_HEAD + struct.pack("<iH", 3, 1) + b"f" + b"junk", "4 bytes follow the functions"),
    (protocol.parse_hello, struct.pack("<HHQI", 1, protocol.HELLO_HAS_CLOCK, 0, 0) + CLOCK[:7], "clock description should be 20 bytes, not 7"),
    (protocol.parse_hello, struct.pack("<HHQI", 1, protocol.HELLO_HAS_CLOCK, 0, 0) + CLOCK + b"x", "not 21"),
    (protocol.parse_error, b"\x05", "shorter than its 2-byte head"),
    (protocol.parse_error, struct.pack("<H", 400) + b"Type", "its kind claims 400 bytes"),
    (protocol.parse_times, b"\x01\x00", "shorter than its 4-byte count"),
    (protocol.parse_times, struct.pack("<I", 1000) + b"\x00" * 8, "1000 times need 8004"),
    (protocol.parse_times, struct.pack("<Id", 1, 0.5) + b"\x00" * 8, "1 times need 12"),
    (protocol.parse_stats, b"\x00" * 47, "its 6 counters need 48"),
    (protocol.parse_stats, b"\x00" * 49, "its 6 counters need 48"),
])
def test_malformed_replies_are_one_sentence(parse, payload, words):
    """Short, oversized or undecodable replies were struct.error or UnicodeDecodeError before."""
    with pytest.raises(protocol.MalformedReply) as err:
        parse(payload)
    message = str(err.value)
    assert words in message and "\n" not in message and "rebuild and flash the project" in message
    assert isinstance(err.value, SessionError)


def test_a_hello_with_its_clock_parses():
    hello = protocol.parse_hello(struct.pack("<HHQI", 1, protocol.HELLO_HAS_CLOCK, 64, 1) + struct.pack("<iH", 2, 1) + b"f" + CLOCK)
    assert hello.functions[0].name == "f" and hello.clock == protocol.DeviceClock(protocol.CLOCK_CYCLES, 3, 25_000_000, 25_000_000)
