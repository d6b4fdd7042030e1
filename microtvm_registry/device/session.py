"""Host-side session: run a project's kernels or whole model (host program or board) from Python, numpy in and out.

The session speaks :mod:`.protocol` over any transport object with ``read(n, timeout_sec)`` and
``write(data, timeout_sec)`` -- normally the Project API transport of a generated project
(``GeneratedProject.transport()``), so the same path works whatever sits behind the server.

What it guarantees, and why:

* arguments are checked against the model's function list (from its Model Library Format)
  *before* anything is sent, so a wrong shape or dtype is a clear :class:`SessionError` naming
  the argument, not a device-side failure halfway through an upload;
* every frame's CRC is checked; a damaged frame makes the session unusable (the byte stream can
  no longer be trusted) and raises :class:`~.protocol.FrameError`;
* a device program that dies surfaces as the server module's ``TransportClosedError`` as soon as
  its pipe closes; nothing waits on a dead process;
* timings come from the device's own clock (``time_evaluator``), like TVM's, so transport
  overhead does not pollute schedule comparisons.

numpy is imported lazily, inside the methods that need it.
"""
from __future__ import annotations

import contextlib
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import SessionError
from . import protocol
from ..formats.mlf import ArgInfo, FunctionInfo, ModelLibrary, load_model_library_format
from .protocol import DeviceError, Frame, FrameDecoder, FrameError

#: Seconds to wait for the device's next bytes before declaring it stuck (a hang-stopper only).
DEFAULT_REPLY_TIMEOUT_SEC: Optional[float] = 300.0
#: Largest read asked of the transport at once.
READ_CHUNK = 8 << 20


def _server_module():
    from ..project_api import server

    return server


@dataclass(frozen=True)
class TimingResult:
    """Per-repeat mean seconds of one call, measured on the device (TVM's BenchmarkResult shape).

    ``counts`` are the same means in the device's own ``unit``: "instructions" on an emulated
    board under QEMU's -icount (exact and repeatable), "cycles" on a real core, "ns" for a host
    program, "ticks" for an emulated board without -icount (virtual time: noise). On a board,
    ``results`` are the counts in seconds at the board's clock, one instruction taken as one
    cycle under emulation: an estimate, never a measured real-board time.
    """

    results: Tuple[float, ...]
    number: int
    counts: Tuple[float, ...] = ()
    unit: str = "s"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.results)

    @property
    def median(self) -> float:
        return statistics.median(self.results)

    @property
    def min(self) -> float:
        return min(self.results)

    @property
    def max(self) -> float:
        return max(self.results)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.results) if len(self.results) > 1 else 0.0

    @property
    def mean_count(self) -> Optional[float]:
        """The mean in the device's own unit (see the class docstring); None without counts."""
        return statistics.fmean(self.counts) if self.counts else None

    def __str__(self) -> str:
        ms = [x * 1e3 for x in (self.mean, self.median, self.max, self.min, self.std)]
        text = (
            "Execution time summary:\n"
            " mean (ms)   median (ms)    max (ms)     min (ms)     std (ms)\n"
            + "  ".join(f"{v:10.4f}" for v in ms)
        )
        if self.unit in ("instructions", "cycles", "ticks"):
            text += f"\n mean {self.mean_count:.0f} {self.unit} per call"
        return text


def timing_result(clock: Optional[protocol.DeviceClock], ticks: Sequence[float], number: int) -> TimingResult:
    """Per-call counter ticks -> seconds and counts in the unit the counter really counts."""
    if clock is None:  # an older device program: its TIME numbers are seconds already
        return TimingResult(tuple(ticks), number)
    if clock.kind == protocol.CLOCK_NANOSECONDS:
        return TimingResult(tuple(t / clock.counter_hz for t in ticks), number, tuple(ticks), "ns")
    if clock.kind == protocol.CLOCK_CYCLES:
        seconds = tuple(t / clock.cpu_hz for t in ticks) if clock.cpu_hz else tuple(ticks)
        return TimingResult(seconds, number, tuple(ticks), "cycles")
    if clock.icount_shift is not None:
        # Under -icount every instruction advances virtual time by 2**shift ns, and the timer
        # counts virtual time: ticks -> ns -> instructions, exactly.
        instructions = tuple(t * 1e9 / clock.counter_hz / (1 << clock.icount_shift) for t in ticks)
        hz = clock.cpu_hz or clock.counter_hz
        return TimingResult(tuple(i / hz for i in instructions), number, instructions, "instructions")
    return TimingResult(tuple(t / clock.counter_hz for t in ticks), number, tuple(ticks), "ticks")


class Session:
    """A conversation with one running device program (see the module docstring)."""

    def __init__(
        self,
        transport: Any,
        library: Optional[ModelLibrary] = None,
        timeout_sec: Optional[float] = DEFAULT_REPLY_TIMEOUT_SEC,
    ) -> None:
        self._transport = transport
        self._library = library
        self._timeout = timeout_sec
        self._decoder = FrameDecoder()
        self._broken: Optional[str] = None
        self._loaded: Optional[List[Any]] = None  # arguments uploaded by load(), for call/time_loaded
        hello = self._exchange([(protocol.MSG_HELLO, b"")], "hello", [None])[0]
        self.hello = protocol.parse_hello(hello.payload)
        if self.hello.version != protocol.PROTOCOL_VERSION:
            raise SessionError(
                f"device speaks protocol {self.hello.version}, this session {protocol.PROTOCOL_VERSION}; "
                "regenerate and rebuild the project with this microtvm-registry"
            )
        self._index = {fn.name: i for i, fn in enumerate(self.hello.functions)}
        if library is not None:
            missing = [fn.name for fn in library.functions if fn.name not in self._index]
            if missing:
                raise SessionError(
                    f"the device program has no function {missing[0]!r} that the model lists; rebuild the project"
                )

    # ------------------------------------------------------------------ opening

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        project: Any,
        options: Optional[Mapping[str, Any]] = None,
        timeout_sec: Optional[float] = DEFAULT_REPLY_TIMEOUT_SEC,
    ) -> Iterator["Session"]:
        """``with Session.open(generated_project_or_dir) as sess:`` -- transport opened and closed."""
        owned = None
        if isinstance(project, (str, Path)):
            from ..project import GeneratedProject

            owned = project = GeneratedProject.from_directory(Path(project))
        try:
            library = _library_of(project)
            with project.transport(options) as transport:
                yield cls(transport, library=library, timeout_sec=timeout_sec)
        finally:
            if owned is not None:
                owned.close()

    # --------------------------------------------------------------- functions

    @property
    def functions(self) -> List[FunctionInfo]:
        """The callable functions: the model's list when known, else the device's own."""
        if self._library is not None:
            return list(self._library.functions)
        return [FunctionInfo(f.name, ()) for f in self.hello.functions]

    @property
    def model(self) -> Optional[Dict[str, Any]]:
        """A compiled whole model's summary (``function``, ``call_kernels``, bytes), else None."""
        return self._library.model if self._library is not None else None

    def call_times(self) -> List[Tuple[str, float, str]]:
        """Per call of the whole model's last run: (kernel, count, unit), from the device's counter."""
        model = self.model
        if model is None:
            raise SessionError("this project holds kernels, not a compiled model; there are no calls to time")
        ticks = self.run(f"{model['function']}_call_ticks", {})["ticks"]
        timing = timing_result(self.hello.clock, [float(t) for t in ticks], 1)
        counts = timing.counts or timing.results
        return [(kernel, float(c), timing.unit) for kernel, c in zip(model["call_kernels"], counts)]

    def function(self, name: str) -> FunctionInfo:
        if name not in self._index:
            known = ", ".join(self._index) or "none"
            raise SessionError(f"the device has no function {name!r}; it has: {known}")
        if self._library is not None:
            return self._library.function(name)
        return FunctionInfo(name, ())

    # ------------------------------------------------------------------- calls

    def call(self, name: str, *arrays: Any, validate: bool = True) -> Any:
        """Calls ``name`` with every argument given (inputs and outputs, in order), like TVM.

        Output arrays are updated in place when writeable; the outputs are also returned (one
        array, or a tuple when there are several). ``validate=False`` skips the host-side checks
        so the kernel's own argument checks answer (for tests and diagnostics).
        """
        fn = self.function(name)
        args = self._check_args(fn, arrays, validate)
        outputs = [i for i, a in enumerate(fn.args) if a.role == "output"] if fn.args else list(range(len(args)))
        results = self._invoke(fn, args, upload_data=[True] * len(args), read_back=outputs)
        for i, value in zip(outputs, results):
            target = arrays[i]
            if hasattr(target, "flags") and target.flags.writeable and target.shape == value.shape and target.dtype == value.dtype:
                target[...] = value
        if len(results) == 1:
            return results[0]
        return tuple(results)

    def run(self, name: str, inputs: Union[Mapping[str, Any], Sequence[Any]]) -> Dict[str, Any]:
        """Runs ``name`` on ``inputs`` (by name, or in order); returns its outputs by name."""
        import numpy as np

        fn = self.function(name)
        if not fn.args:
            raise SessionError(f"function {name!r} has no argument list in the model; use call() with every argument")
        names = [a.name for a in fn.inputs]
        listed = ", ".join(names)
        if isinstance(inputs, Mapping):
            aliases = self._model_names(name)
            inputs = {aliases.get(k, k) if k not in names else k: v for k, v in inputs.items()}
            unknown = [k for k in inputs if k not in names]
            if unknown:
                raise SessionError(f"{name}: no input named {unknown[0]!r}; inputs are {listed}")
            missing = [n for n in names if n not in inputs]
            if missing:
                raise SessionError(f"{name}: input {missing[0]!r} is missing; inputs are {listed}")
            given = {n: inputs[n] for n in names}
        else:
            seq = list(inputs)
            if len(seq) != len(names):
                raise SessionError(f"{name} takes {len(names)} inputs ({listed}), got {len(seq)}")
            given = dict(zip(names, seq))
        arrays = [given[a.name] if a.role != "output" else np.zeros(a.shape, dtype=a.dtype) for a in fn.args]
        args = self._check_args(fn, arrays, True)
        outputs = [i for i, a in enumerate(fn.args) if a.role == "output"]
        upload = [a.role != "output" for a in fn.args]
        results = self._invoke(fn, args, upload_data=upload, read_back=outputs)
        return {fn.args[i].name: value for i, value in zip(outputs, results)}

    def _model_names(self, function: str) -> Dict[str, str]:
        """For the compiled model's own function: the model's names of its tensors -> the C
        names its arguments have (a model may call an input ``a b``; C calls it ``a_b``)."""
        model = self.model
        if model is None or model.get("function") != function:
            return {}
        facts = list(model.get("inputs") or []) + list(model.get("outputs") or [])
        return {str(t["name"]): str(t["c_name"]) for t in facts if isinstance(t, dict) and "name" in t and "c_name" in t}

    def time_evaluator(self, name: str, number: int = 10, repeat: int = 3) -> Callable[..., TimingResult]:
        """A function that times ``name`` on the device: ``repeat`` means of ``number`` calls.

        Call it with every argument (as :meth:`call`) or with none to use zero-filled tensors.
        One untimed warm-up call runs first, as on the device side of TVM's time_evaluator.
        """
        if number < 1 or repeat < 1:
            raise SessionError(f"time_evaluator needs number >= 1 and repeat >= 1, got {number} and {repeat}")
        fn = self.function(name)

        def evaluate(*arrays: Any) -> TimingResult:
            import numpy as np

            if not arrays:
                if not fn.args:
                    raise SessionError(f"function {name!r} has no argument list in the model; pass its arguments")
                arrays = tuple(np.zeros(a.shape, dtype=a.dtype) for a in fn.args)
            args = self._check_args(fn, arrays, True)
            return self._time_slots(name, len(args), number, repeat, self._upload_requests(args, [True] * len(args)))

        return evaluate

    def _time_slots(
        self, name: str, nargs: int, number: int, repeat: int, before: Sequence[Tuple[int, bytes]] = ()
    ) -> TimingResult:
        """Times ``name`` on slots 0..nargs-1 (after the ``before`` requests) on the device's clock."""
        payload = protocol.time_payload(self._index[name], number, repeat, list(range(nargs)))
        replies = self._exchange(list(before) + [(protocol.MSG_TIME, payload)], name, [0] * len(before) + [4 + 8 * repeat])
        times = replies[-1]
        return timing_result(self.hello.clock, protocol.parse_times(times.payload), number)

    # ------------------------------------------------- one upload, many callers

    def load(self, name: str, *arrays: Any) -> None:
        """Uploads ``name``'s arguments once: functions of the same signature (a kernel's
        schedule variants) are then called and timed on them without uploading again, which on
        an emulated board's UART is most of the time."""
        fn = self.function(name)
        self._loaded = self._check_args(fn, arrays, True)
        self._exchange(self._upload_requests(self._loaded, [True] * len(self._loaded)), name, [0] * len(self._loaded))

    def reload_slot(self, index: int, array: Any) -> None:
        """Replaces one loaded argument (an output buffer refilled between calls, so that a call
        that leaves part of it unwritten cannot pass on what the previous call wrote)."""
        import numpy as np

        if self._loaded is None or not 0 <= index < len(self._loaded):
            raise SessionError(f"slot {index} is not loaded; call load() with the arguments first")
        array = np.ascontiguousarray(array)
        if array.shape != self._loaded[index].shape or array.dtype != self._loaded[index].dtype:
            raise SessionError(f"slot {index} holds shape {self._loaded[index].shape} {self._loaded[index].dtype}; got {array.shape} {array.dtype}")
        self._loaded[index] = array
        self._exchange([(protocol.MSG_UPLOAD, protocol.upload_payload(index, str(array.dtype), array.shape, array.tobytes()))],
                       f"slot {index}", [0])

    def call_loaded(self, name: str) -> List[Any]:
        """Calls ``name`` on the loaded arguments; returns its outputs (as :meth:`call` does)."""
        fn, args = self._loaded_call(name)
        outputs = [i for i, a in enumerate(fn.args) if a.role == "output"] if fn.args else [len(args) - 1]
        return self._call_slots(fn, args, outputs)

    def time_loaded(self, name: str, number: int = 1, repeat: int = 1) -> TimingResult:
        """Times ``name`` on the loaded arguments with the device's counter."""
        _fn, args = self._loaded_call(name)
        return self._time_slots(name, len(args), number, repeat)

    def _loaded_call(self, name: str) -> Tuple[FunctionInfo, List[Any]]:
        fn = self.function(name)
        args = self._loaded
        if args is None:
            raise SessionError(f"{name}: nothing is loaded; call load() with its arguments first")
        if fn.args and [(a.shape, a.dtype) for a in fn.args] != [(tuple(x.shape), str(x.dtype)) for x in args]:
            raise SessionError(f"{name} does not take the loaded arguments; load its own first")
        return fn, args

    # ---------------------------------------------------------------- utilities

    def echo(self, payload: bytes) -> bytes:
        """Round trip of ``payload`` through the device program (transport checks, benchmarks)."""
        return self._exchange([(protocol.MSG_ECHO, payload)], "echo", [len(payload)])[0].payload

    def device_stats(self) -> Dict[str, int]:
        """Counters kept by the device: frames and bytes received, calls made, bad frames, workspace."""
        return protocol.parse_stats(self._exchange([(protocol.MSG_STATS, b"")], "stats")[0].payload)

    def free_all(self) -> None:
        """Releases every tensor slot on the device."""
        self._exchange([(protocol.MSG_FREE, protocol.slot_payload(protocol.ALL_SLOTS))], "free")

    def request(self, msg_type: int, payload: bytes = b"", context: str = "request") -> Frame:
        """Sends one raw request and returns its reply (device errors raise)."""
        return self._exchange([(msg_type, payload)], context)[0]

    def send_raw(self, data: bytes, replies: int, context: str = "raw") -> List[Frame]:
        """Writes bytes as they are (e.g. a deliberately damaged frame) and reads ``replies`` replies."""
        return self._exchange_bytes(data, replies, context)

    # ----------------------------------------------------------------- internals

    def _check_args(self, fn: FunctionInfo, arrays: Sequence[Any], validate: bool) -> List[Any]:
        import numpy as np

        if fn.args and len(arrays) != len(fn.args):
            names = ", ".join(a.name for a in fn.args)
            raise SessionError(f"{fn.name} takes {len(fn.args)} arguments ({names}), got {len(arrays)}; nothing was sent")
        out = []
        for i, value in enumerate(arrays):
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            if validate and fn.args:
                spec: ArgInfo = fn.args[i]
                try:
                    want_dtype = np.dtype(spec.dtype)
                except TypeError:
                    raise SessionError(
                        f"{fn.name}: argument {spec.name} has dtype {spec.dtype}, which numpy cannot hold"
                    ) from None
                if tuple(array.shape) != tuple(spec.shape) or array.dtype != want_dtype:
                    raise SessionError(
                        f"{fn.name}: argument {spec.name} expects shape {tuple(spec.shape)} {spec.dtype}, "
                        f"got shape {tuple(array.shape)} {array.dtype}; nothing was sent to the device"
                    )
            out.append(np.ascontiguousarray(array))
        return out

    def _upload_requests(self, args: Sequence[Any], upload_data: Sequence[bool]) -> List[Tuple[int, bytes]]:
        requests = []
        for slot, (array, with_data) in enumerate(zip(args, upload_data)):
            dtype = str(array.dtype)  # what is really sent (the checks made it the declared one)
            data = array.tobytes() if with_data and array.nbytes else b""
            requests.append((protocol.MSG_UPLOAD, protocol.upload_payload(slot, dtype, array.shape, data)))
        return requests

    def _invoke(self, fn: FunctionInfo, args: Sequence[Any], upload_data: Sequence[bool], read_back: Sequence[int]) -> List[Any]:
        requests = self._upload_requests(args, upload_data)
        return self._call_slots(fn, args, read_back, requests)

    def _call_slots(self, fn: FunctionInfo, args: Sequence[Any], read_back: Sequence[int], before: Sequence[Tuple[int, bytes]] = ()) -> List[Any]:
        """Calls ``fn`` on slots 0..n-1 (after the ``before`` requests) and reads back outputs."""
        import numpy as np

        requests = list(before)
        requests.append((protocol.MSG_CALL, protocol.call_payload(self._index[fn.name], list(range(len(args))))))
        requests += [(protocol.MSG_READ, protocol.slot_payload(i)) for i in read_back]
        expect = [0] * (len(before) + 1) + [args[i].nbytes for i in read_back]
        replies = self._exchange(requests, fn.name, expect)
        results = []
        for i, frame in zip(read_back, replies[len(before) + 1 :]):
            array = args[i]
            if len(frame.payload) != array.nbytes:
                raise SessionError(
                    f"{fn.name}: device returned {len(frame.payload)} bytes for {array.nbytes}-byte output; rebuild the project"
                )
            results.append(np.frombuffer(frame.payload, dtype=array.dtype).reshape(array.shape).copy())
        return results

    def _exchange(
        self, requests: Sequence[Tuple[int, bytes]], context: str, expect: Optional[Sequence[Optional[int]]] = None
    ) -> List[Frame]:
        data = b"".join(protocol.encode_frame(t, p) for t, p in requests)
        replies = self._exchange_bytes(data, len(requests), context, expect)
        for (asked, _), reply in zip(requests, replies):
            want = protocol.REPLY_TO.get(asked)
            if want is not None and reply.type != want:
                # An intact frame of the wrong kind (an ECHO where DATA belongs) must never be
                # taken for the answer: the device and this session are out of step.
                self._broken = f"the device answered {protocol.message_name(asked)} with {protocol.message_name(reply.type)}"
                raise SessionError(
                    f"{context}: the device answered {protocol.message_name(asked)} with {protocol.message_name(reply.type)} "
                    f"(expected {protocol.message_name(want)}); it is out of step or not this project's program: "
                    "rebuild and flash the project"
                )
        return replies

    def _want(self, expect: Sequence[Optional[int]], done: int) -> int:
        """Bytes to ask of the transport: what the replies still to come should hold, as far as
        their sizes are known (``expect``: payload bytes per reply, None where unknown).

        Asking for exactly that lets a serial transport return the moment the last reply is in
        (it keeps reading a burst until it has what was asked, see serial_transport); asking
        for more would make it wait for a quiet line first. At least one whole frame header is
        always asked, and never less than the frame at the head of the buffer still needs."""
        total = 0
        for size in expect[done:]:
            if size is None:
                total += protocol.HEADER_SIZE + protocol.TRAILER_SIZE
                break
            total += protocol.HEADER_SIZE + size + protocol.TRAILER_SIZE
        return min(READ_CHUNK, max(self._decoder.needed(), total - self._decoder.pending))

    def _exchange_bytes(
        self, data: bytes, count: int, context: str, expect: Optional[Sequence[Optional[int]]] = None
    ) -> List[Frame]:
        """Writes all requests at once, then collects ``count`` replies; raises the first error.

        ``expect`` gives each reply's payload size where known (see :meth:`_want`)."""
        expect = list(expect) if expect is not None else [None] * count
        if self._broken:
            raise SessionError(f"the session is unusable after an earlier failure ({self._broken}); open a new one")
        server = _server_module()
        try:
            self._transport.write(data, self._timeout)
            frames: List[Frame] = []
            while len(frames) < count:
                want = self._want(expect, len(frames))
                try:
                    chunk = self._transport.read(want, self._timeout)
                except server.IoTimeoutError:
                    raise SessionError(
                        f"{context}: the device sent nothing for {self._timeout:g} s; it may be stuck, or need longer "
                        "(microtvm run --timeout SECONDS; in Python, Session.open(..., timeout_sec=SECONDS))"
                    ) from None
                if not chunk:
                    continue
                for frame in self._decoder.feed(chunk):
                    frames.append(frame)
                    if frame.type == protocol.REPLY_ERROR:
                        kind, message = protocol.parse_error(frame.payload)
                        if kind == "FrameError":  # the device saw a damaged frame: stop here
                            raise FrameError(f"{context}: device reports {' '.join(message.split())}")
        except FrameError as err:
            self._broken = str(err)
            raise
        except server.TransportClosedError:
            self._broken = "the device program exited"
            raise
        except SessionError as err:
            self._broken = str(err)
            raise
        for frame in frames[:count]:
            if frame.type == protocol.REPLY_ERROR:
                kind, message = protocol.parse_error(frame.payload)
                raise DeviceError(kind, message, context)
        return frames

    def close(self) -> None:
        """Marks the session closed; the transport's owner closes the transport."""
        self._broken = self._broken or "the session was closed"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _library_of(project: Any) -> Optional[ModelLibrary]:
    """The model a generated project was made from: its model.tar (what the server reports)."""
    candidates = []
    for attr in ("project_dir", "path", "directory"):
        value = getattr(project, attr, None)
        if value:
            candidates.append(Path(value) / "model.tar")
    if not candidates:
        try:
            info = project.info()
            if info.get("model_library_format_path"):
                candidates.append(Path(info["model_library_format_path"]))
        except Exception:  # noqa: BLE001 - the device's own function list is the fallback
            pass
    for candidate in candidates:
        if candidate.is_file():
            return load_model_library_format(candidate)
    return None
