"""The framed binary protocol between a host-side session and the device program of any of our templates.

Why a protocol of our own: TVM's microTVM RPC (and its C runtime) left TVM with microTVM, and
today's apache-tvm exports kernels as plain C functions. The device program (templates/host/
src/main.c) only has to hold tensors in numbered slots, call a function with slots as
arguments, and time calls on its own clock; a handful of message types covers that.

Frame layout (all integers little-endian)::

    b"MT" | type u8 | flags u8 | length u32 | payload (length bytes) | crc32 u32

The CRC is zlib's crc32 over type, flags, length and payload, so a flipped bit anywhere after
the magic is caught. Stdlib only: numpy is needed by the session, not here.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..formats.dtypes import DL_BFLOAT, DL_BOOL, DL_FLOAT, DL_INT, DL_UINT, parse_dtype  # noqa: F401 - the protocol's names
from ..errors import SessionError

MAGIC = b"MT"
HEADER = struct.Struct("<2sBBI")
HEADER_SIZE = HEADER.size  # 8
TRAILER_SIZE = 4
MAX_PAYLOAD = 1 << 30
PROTOCOL_VERSION = 1

# Requests (host -> device).
MSG_HELLO = 0x01
MSG_UPLOAD = 0x02
MSG_CALL = 0x03
MSG_READ = 0x04
MSG_TIME = 0x05
MSG_FREE = 0x06
MSG_ECHO = 0x07
MSG_STATS = 0x08
# Replies (device -> host).
REPLY_OK = 0x80
REPLY_HELLO = 0x81
REPLY_DATA = 0x82
REPLY_TIMES = 0x83
REPLY_ECHO = 0x84
REPLY_STATS = 0x85
REPLY_ERROR = 0xEE

ALL_SLOTS = 0xFFFFFFFF

#: The reply each request is answered with, when it is not REPLY_ERROR.
REPLY_TO = {
    MSG_HELLO: REPLY_HELLO,
    MSG_UPLOAD: REPLY_OK,
    MSG_CALL: REPLY_OK,
    MSG_READ: REPLY_DATA,
    MSG_TIME: REPLY_TIMES,
    MSG_FREE: REPLY_OK,
    MSG_ECHO: REPLY_ECHO,
    MSG_STATS: REPLY_STATS,
}
MESSAGE_NAMES = {
    MSG_HELLO: "HELLO", MSG_UPLOAD: "UPLOAD", MSG_CALL: "CALL", MSG_READ: "READ", MSG_TIME: "TIME",
    MSG_FREE: "FREE", MSG_ECHO: "ECHO", MSG_STATS: "STATS", REPLY_OK: "OK", REPLY_HELLO: "HELLO reply",
    REPLY_DATA: "DATA", REPLY_TIMES: "TIMES", REPLY_ECHO: "ECHO reply", REPLY_STATS: "STATS reply", REPLY_ERROR: "ERROR",
}


def message_name(msg_type: int) -> str:
    return MESSAGE_NAMES.get(msg_type, f"message type 0x{msg_type:02x}")



class FrameError(SessionError):
    """A frame was damaged in transit (bad magic, impossible length, checksum mismatch)."""


class DeviceError(SessionError):
    """The device program answered with an error (the kernel's or the runtime's own text)."""

    def __init__(self, kind: str, message: str, context: str = "") -> None:
        self.kind = kind
        self.device_message = message
        flat = " ".join(message.split())
        prefix = f"{context}: " if context else ""
        super().__init__(f"{prefix}device error {kind}: {flat}")


@dataclass(frozen=True)
class Frame:
    type: int
    payload: bytes


def encode_frame(msg_type: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """One complete frame: header, payload and checksum."""
    if len(payload) > MAX_PAYLOAD:
        raise SessionError(f"frame payload of {len(payload)} bytes exceeds the 1 GiB limit; send smaller tensors")
    header = HEADER.pack(MAGIC, msg_type, flags, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(header[2:]))
    return b"".join((header, payload, struct.pack("<I", crc)))


class FrameDecoder:
    """Turns a byte stream into frames, checking magic, length and CRC of each one.

    Bytes are fed as they arrive (the transport returns 1..n bytes per read), so frames can be
    split across reads arbitrarily. After a damaged frame the stream cannot be trusted, so the
    decoder refuses further input until reset.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._broken: Optional[str] = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def needed(self) -> int:
        """How many more bytes complete the frame at the head of the buffer (at least 1)."""
        if len(self._buf) < HEADER_SIZE:
            return HEADER_SIZE - len(self._buf) + TRAILER_SIZE
        (length,) = struct.unpack_from("<I", self._buf, 4)
        return max(1, HEADER_SIZE + length + TRAILER_SIZE - len(self._buf))

    def feed(self, data: bytes) -> List[Frame]:
        """Adds bytes; returns every frame now complete. Raises FrameError on a damaged frame."""
        if self._broken:
            raise FrameError(self._broken)
        self._buf += data
        frames: List[Frame] = []
        while len(self._buf) >= HEADER_SIZE:
            magic, msg_type, flags, length = HEADER.unpack_from(self._buf, 0)
            if magic != MAGIC:
                self._fail(f"bad frame magic {bytes(magic)!r} (expected {MAGIC!r}); the stream is out of step")
            if length > MAX_PAYLOAD:
                self._fail(f"frame claims {length} payload bytes, over the 1 GiB limit; the stream is damaged")
            total = HEADER_SIZE + length + TRAILER_SIZE
            if len(self._buf) < total:
                break
            view = memoryview(self._buf)
            (want,) = struct.unpack_from("<I", self._buf, HEADER_SIZE + length)
            got = zlib.crc32(view[HEADER_SIZE : HEADER_SIZE + length], zlib.crc32(view[2:HEADER_SIZE]))
            payload = bytes(view[HEADER_SIZE : HEADER_SIZE + length])
            view.release()
            if want != got:
                self._fail(
                    f"frame checksum mismatch (type 0x{msg_type:02x}, {length} bytes): "
                    f"frame says {want:08x}, computed {got:08x}; the transport corrupted data"
                )
            del self._buf[:total]
            frames.append(Frame(msg_type, payload))
        return frames

    def _fail(self, message: str) -> None:
        self._broken = message
        self._buf.clear()
        raise FrameError(message)


# ----------------------------------------------------------------- payload builders / parsers





def upload_payload(slot: int, dtype: str, shape: Sequence[int], data: bytes = b"") -> bytes:
    """UPLOAD: a tensor into ``slot``; empty ``data`` asks the device to zero-fill it."""
    code, bits, lanes = parse_dtype(dtype)
    head = struct.pack(f"<IBBHI{len(shape)}q", slot, code, bits, lanes, len(shape), *shape)
    return head + data if data else head


def call_payload(func_index: int, slots: Sequence[int]) -> bytes:
    return struct.pack(f"<II{len(slots)}I", func_index, len(slots), *slots)


def time_payload(func_index: int, number: int, repeat: int, slots: Sequence[int]) -> bytes:
    return struct.pack(f"<IIII{len(slots)}I", func_index, number, repeat, len(slots), *slots)


def slot_payload(slot: int) -> bytes:
    return struct.pack("<I", slot)


@dataclass(frozen=True)
class DeviceFunction:
    name: str
    num_args: int


#: What a device's counter counts (HELLO's clock description; mtvm_port.h).
CLOCK_NANOSECONDS, CLOCK_CYCLES, CLOCK_TIMER = 0, 1, 2
HELLO_HAS_CLOCK = 0x0001
_CLOCK = struct.Struct("<BbHQQ")


@dataclass(frozen=True)
class DeviceClock:
    """The device's counter: what TIME's per-call numbers are ticks of."""

    kind: int
    icount_shift: Optional[int]  # QEMU's -icount shift the firmware was built for, None without
    counter_hz: int
    cpu_hz: int


@dataclass(frozen=True)
class Hello:
    version: int
    workspace_size_bytes: int
    functions: Tuple[DeviceFunction, ...]
    clock: Optional[DeviceClock] = None  # None: an older device program whose times are seconds


class MalformedReply(FrameError):
    """A reply whose frame arrived intact but whose payload does not have its message's layout:
    the device program is not one this session's protocol describes."""

    def __init__(self, what: str, payload: bytes, why: str) -> None:
        super().__init__(
            f"the device's {what} is malformed ({len(payload)} bytes: {why}); the device program does not "
            "match this microtvm-registry: regenerate, rebuild and flash the project"
        )


def parse_hello(payload: bytes) -> Hello:
    what = "HELLO reply"
    if len(payload) < 16:
        raise MalformedReply(what, payload, "shorter than its 16-byte head")
    version, flags, workspace, count = struct.unpack_from("<HHQI", payload, 0)
    if count > (len(payload) - 16) // 6:
        raise MalformedReply(what, payload, f"it claims {count} functions")
    off = 16
    functions = []
    for i in range(count):
        if off + 6 > len(payload):
            raise MalformedReply(what, payload, f"function {i} of {count} is cut off")
        nargs, nlen = struct.unpack_from("<iH", payload, off)
        raw = payload[off + 6 : off + 6 + nlen]
        if len(raw) != nlen:
            raise MalformedReply(what, payload, f"function {i}'s name is cut off")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedReply(what, payload, f"function {i}'s name {raw!r} is not UTF-8") from None
        functions.append(DeviceFunction(name, nargs))
        off += 6 + nlen
    clock = None
    if flags & HELLO_HAS_CLOCK:
        if len(payload) != off + _CLOCK.size:
            raise MalformedReply(what, payload, f"its clock description should be {_CLOCK.size} bytes, not {len(payload) - off}")
        kind, shift, _pad, counter_hz, cpu_hz = _CLOCK.unpack_from(payload, off)
        clock = DeviceClock(kind, None if shift < 0 else shift, counter_hz, cpu_hz)
    elif len(payload) != off:
        raise MalformedReply(what, payload, f"{len(payload) - off} bytes follow the functions")
    return Hello(version, workspace, tuple(functions), clock)


def parse_error(payload: bytes) -> Tuple[str, str]:
    if len(payload) < 2:
        raise MalformedReply("ERROR reply", payload, "shorter than its 2-byte head")
    (nkind,) = struct.unpack_from("<H", payload, 0)
    if 2 + nkind > len(payload):
        raise MalformedReply("ERROR reply", payload, f"its kind claims {nkind} bytes")
    kind = payload[2 : 2 + nkind].decode("utf-8", "replace")
    return kind, payload[2 + nkind :].decode("utf-8", "replace")


def parse_times(payload: bytes) -> List[float]:
    if len(payload) < 4:
        raise MalformedReply("TIMES reply", payload, "shorter than its 4-byte count")
    (count,) = struct.unpack_from("<I", payload, 0)
    if len(payload) != 4 + 8 * count:
        raise MalformedReply("TIMES reply", payload, f"{count} times need {4 + 8 * count}")
    return list(struct.unpack_from(f"<{count}d", payload, 4))


STATS_FIELDS = (
    "frames_received",
    "bytes_received",
    "calls",
    "bad_frames",
    "workspace_peak_bytes",
    "workspace_size_bytes",
)


def parse_stats(payload: bytes) -> dict:
    if len(payload) != 8 * len(STATS_FIELDS):
        raise MalformedReply("STATS reply", payload, f"its {len(STATS_FIELDS)} counters need {8 * len(STATS_FIELDS)}")
    return dict(zip(STATS_FIELDS, struct.unpack_from("<6Q", payload, 0)))
