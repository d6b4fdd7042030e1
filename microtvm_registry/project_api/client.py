"""Project API client: start a template's server and talk JSON-RPC 2.0 to it over two pipes.

Wire behaviour is TVM's (shared/spec/project-api.md sections 1-8), so any TVM template server from
v0.8.0 to v0.18.0 works, and so do ours:

* the server is found and started exactly as TVM starts it: ``microtvm_api_server.py`` run with
  our interpreter, overridden by ``launch_microtvm_api_server.sh <dir>/microtvm_api_server.py``
  (the v0.12+ form); ``--read-fd N --write-fd M [--debug]``; ``Popen(bufsize=0, pass_fds=...,
  cwd=<project dir>)`` with stdin/stdout/stderr inherited; our copies of its pipe ends are closed;
* requests are ``json.dumps`` of the four keys jsonrpc, method, params, id (ids from 1) plus
  ``\\n``, byte for byte what TVM writes;
* replies are checked as TVM checks them, and wire errors become ``server.JSONRPCError`` /
  ``ServerError`` / its typed subclasses via ``JSONRPCError.from_json``.

Where TVM's client could hang, crash or leak, this one does not (documented differences):

* ``timeout`` (seconds, default :data:`DEFAULT_TIMEOUT_SEC` = 600 s, ``None`` = wait forever)
  bounds every call; read_transport/write_transport wait their own ``timeout_sec`` on top of it.
  A server that does not answer in time is killed and reaped, then :class:`ServerTimeoutError`.
  600 s is generous for a first Zephyr or Arduino build yet still ends a wedged server; pass more
  (or None) for slower tools.
* a server that exits gives :class:`ServerDiedError` (a ConnectionShutdownError) with its exit
  status or signal; bytes that are not a JSON-RPC reply give :class:`MalformedReplyError`. After
  any such protocol failure the connection can no longer be trusted, so the client shuts down.
* an error code outside JSON-RPC's enum (TVM raises AssertionError) becomes a plain JSONRPCError;
  an error reply with ``"id": null`` (the server could not attribute it) is raised as that error
  rather than as a MismatchedIdError, because its message says what went wrong.
* the client owns the process: ``close()`` (also on ``with`` exit, on garbage collection, at
  interpreter exit, and when start-up fails half way) closes both pipes, gives the server
  :data:`SHUTDOWN_GRACE_SEC` to exit on EOF as TVM servers do, then terminates, kills and reaps
  it, and ends the processes it had started (make, a compiler; found through /proc on Linux).
  No zombie, no leaked descriptor, no orphaned build.
* the server's PYTHONPATH gets the tvm shim (see :mod:`.tvm_compat`) so TVM's own templates can
  import ``tvm.micro.project_api.server`` without TVM; everything else in the environment is
  inherited unchanged.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..errors import MicrotvmError, first_line
from ..procs import descendant_pids, pids_with_environ
from . import server, tvm_compat

#: Default seconds to wait for any one reply (see the module docstring).
DEFAULT_TIMEOUT_SEC: float = 600.0
#: Seconds a server gets to exit by itself after its request pipe is closed.
SHUTDOWN_GRACE_SEC: float = 3.0
#: Seconds to wait after SIGTERM before SIGKILL.
TERMINATE_GRACE_SEC: float = 2.0

SERVER_SCRIPT = "microtvm_api_server.py"
SERVER_LAUNCHER = "launch_microtvm_api_server.sh"

_READ_CHUNK = 65536
_NEWLINES = b"\r\n"
#: The longest reply line accepted: far beyond any legal reply but read_transport's, whose cap is
#: set per call from the bytes asked for (base85 is 5/4 of them).
MAX_REPLY_LINE = 16 * 1024 * 1024
#: How often a wait for a reply also checks whether the server process is still there (a
#: grandchild holding the reply pipe open would otherwise hide its exit until the timeout).
_EXIT_CHECK_SEC = 0.2
#: The environment variable that marks every process a server starts, so that all of them can
#: be ended when the connection closes, even those the server orphaned.
SERVER_TOKEN_ENV = "MICROTVM_REGISTRY_SERVER_TOKEN"


class ProjectAPIErrorBase(MicrotvmError):
    """A failure of the Project API connection itself (not an error the server reported)."""


class ConnectionShutdownError(ProjectAPIErrorBase):
    """The connection is closed: the server closed its pipe, or this client was shut down."""


class ServerDiedError(ConnectionShutdownError):
    """The server process exited (or was killed by a signal) instead of answering."""


class MalformedReplyError(ProjectAPIErrorBase):
    """The server wrote something that is not a JSON-RPC 2.0 reply."""


class MismatchedIdError(ProjectAPIErrorBase):
    """The reply's id is not the id of the request just sent."""


class ProjectAPIServerNotFoundError(ProjectAPIErrorBase):
    """The folder has no microtvm_api_server.py / launch_microtvm_api_server.sh, or it cannot run."""


class UnsupportedProtocolVersionError(ProjectAPIErrorBase):
    """server_info_query reported a protocol_version other than 1."""


class ServerTimeoutError(ProjectAPIErrorBase):
    """The server did not answer within the client's timeout; it has been stopped."""


def describe_exit(returncode: Optional[int]) -> str:
    """'exited with status 3' / 'was killed by signal SIGKILL' / 'is still running'."""
    if returncode is None:
        return "is still running"
    if returncode == 126:
        return "exited with status 126 (a program it runs is not executable: check its launcher, or a tool the template needs)"
    if returncode == 127:
        return "exited with status 127 (a program it runs was not found: a tool the template needs is not on PATH)"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _fd_of(obj: Union[int, Any]) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


class _Channel:
    """The OS resources of one connection: our two pipe ends and (maybe) the server process.

    Kept apart from the client so a ``weakref.finalize`` can release them without keeping the
    client alive. ``close`` is idempotent and never raises.
    """

    def __init__(self, read_obj: Any, write_obj: Any, process: Optional[subprocess.Popen],
                 token: Optional[str] = None, relays: Sequence[threading.Thread] = ()) -> None:
        self.read_obj = read_obj
        self.write_obj = write_obj
        self.process = process
        self.token = token
        self.relays = list(relays)
        self.closed = False

    @staticmethod
    def _close_one(obj: Any) -> None:
        try:
            if isinstance(obj, int):
                os.close(obj)
            else:
                obj.close()
        except OSError:
            pass

    def _end_marked(self) -> None:
        """End every process still carrying this server's token (what it started and left
        behind, orphaned or not), then let the output relays finish."""
        if self.token:
            _stop_pids(pids_with_environ(f"{SERVER_TOKEN_ENV}={self.token}"))
        for relay in self.relays:
            relay.join(1.0)

    def close_pipes(self) -> None:
        # Request pipe first: EOF is what tells a TVM server to exit.
        for obj in (self.write_obj, self.read_obj):
            if obj is not None:
                self._close_one(obj)
        self.write_obj = self.read_obj = None

    def close(self, grace: Optional[float] = SHUTDOWN_GRACE_SEC) -> Optional[int]:
        """Close the pipes, let the server exit (up to ``grace`` s; None/0 = stop it now), reap it."""
        if self.closed:
            return self.process.returncode if self.process is not None else None
        self.closed = True
        self.close_pipes()
        proc = self.process
        if proc is None:
            return None
        try:
            if grace and proc.poll() is None:
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            if proc.poll() is None:
                # Stopping a server by force (a timeout, a hang) must also stop what it started
                # (make, a compiler, a simulator): find them now, while they are still its
                # descendants, and end them after it.
                started = descendant_pids(proc.pid)
                proc.terminate()
                try:
                    proc.wait(TERMINATE_GRACE_SEC)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                _stop_pids(started)
        except BaseException:
            # Even an interrupt must not leave a zombie behind.
            try:
                proc.kill()
            except OSError:
                pass
            proc.wait()
            self._end_marked()
            raise
        self._end_marked()
        return proc.returncode


def _stop_pids(pids: List[int]) -> None:
    """SIGTERM, a short grace, then SIGKILL for whatever of ``pids`` is still there."""
    from ..procs import is_running as alive

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + TERMINATE_GRACE_SEC
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


_UNSET: Any = object()


class ProjectAPIClient:
    """One connection to one Project API server. Calls from several threads are serialised by a
    lock, so exactly one request is in flight, as the protocol requires.

    ``read_file``/``write_file`` are the reply and request pipe ends (file objects or raw fds); the
    client owns them. ``process`` is the server process if this client started it. ``name`` is what
    error messages call the server (its folder).
    """

    def __init__(
        self,
        read_file: Any,
        write_file: Any,
        *,
        process: Optional[subprocess.Popen] = None,
        timeout: Optional[float] = DEFAULT_TIMEOUT_SEC,
        tvm_version: str = tvm_compat.TVM_VERSION,
        name: str = "Project API server",
        token: Optional[str] = None,
        relays: Sequence[threading.Thread] = (),
    ) -> None:
        self._channel = _Channel(read_file, write_file, process, token, relays)
        self._finalizer = weakref.finalize(self, self._channel.close, SHUTDOWN_GRACE_SEC)
        try:
            self.timeout = _check_timeout(timeout)
            self.tvm_version = tvm_version
            self.name = name
            self._read_fd = _fd_of(read_file)
            self._write_fd = _fd_of(write_file)
            os.set_blocking(self._write_fd, False)  # so a wedged server cannot block a write forever
            self._buffer = bytearray()
            self._next_id = 1
            self._lock = threading.Lock()
        except BaseException:
            self._finalizer.detach()
            self._channel.close(grace=None)
            raise

    # -- lifetime ---------------------------------------------------------------------------

    @property
    def process(self) -> Optional[subprocess.Popen]:
        return self._channel.process

    @property
    def is_shutdown(self) -> bool:
        return self._channel.closed

    def close(self) -> None:
        """Close the pipes, let the server exit on EOF, stop it if it does not; idempotent."""
        self._finalizer()

    shutdown = close  # TVM's name

    def __enter__(self) -> "ProjectAPIClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _stop_now(self) -> Optional[int]:
        """Stop the server without a grace period (after a timeout or a protocol violation)."""
        self._finalizer.detach()
        return self._channel.close(grace=None)

    # -- the eight methods ------------------------------------------------------------------

    def server_info_query(self, tvm_version: Optional[str] = None) -> Dict[str, Any]:
        """ServerInfo as a dict; raises UnsupportedProtocolVersionError unless protocol_version is 1."""
        reply = self._request_reply(
            "server_info_query", {"tvm_version": self.tvm_version if tvm_version is None else tvm_version}
        )
        if not isinstance(reply, dict):
            self._stop_now()
            raise MalformedReplyError(
                f"{self.name} answered server_info_query with {type(reply).__name__}, not an object"
            )
        version = reply.get("protocol_version")
        if version != 1:
            self._stop_now()
            raise UnsupportedProtocolVersionError(
                f"microTVM API Server supports protocol version {version}; want 1"
            )
        return reply

    def generate_project(
        self,
        model_library_format_path: Union[str, Path],
        standalone_crt_dir: Union[str, Path],
        project_dir: Union[str, Path],
        options: Mapping[str, Any],
    ) -> Any:
        return self._request_reply(
            "generate_project",
            {
                "model_library_format_path": str(model_library_format_path),
                "standalone_crt_dir": str(standalone_crt_dir),
                "project_dir": str(project_dir),
                "options": dict(options),
            },
        )

    def build(self, options: Mapping[str, Any]) -> Any:
        return self._request_reply("build", {"options": dict(options)})

    def flash(self, options: Mapping[str, Any]) -> Any:
        return self._request_reply("flash", {"options": dict(options)})

    def open_transport(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        return self._request_reply("open_transport", {"options": dict(options)})

    def close_transport(self) -> Any:
        return self._request_reply("close_transport", {})

    def read_transport(self, n: int, timeout_sec: Optional[float]) -> Dict[str, bytes]:
        """``{"data": bytes}``: 1..n bytes, or server.IoTimeoutError / TransportClosedError."""
        reply = self._request_reply(
            "read_transport", {"n": n, "timeout_sec": timeout_sec}, wait=self._wait_for(timeout_sec),
            cap=MAX_REPLY_LINE + (int(n) * 5 // 4 if isinstance(n, int) and n > 0 else 0),
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("data"), str):
            self._stop_now()
            raise MalformedReplyError(f"{self.name} answered read_transport without a data string: {reply!r:.80}")
        try:
            data = server.b85decode(reply["data"])
        except Exception as err:
            self._stop_now()
            raise MalformedReplyError(f"{self.name} sent read_transport data that is not base85: {err}") from None
        return {"data": data}

    def write_transport(self, data: bytes, timeout_sec: Optional[float]) -> Any:
        return self._request_reply(
            "write_transport",
            {"data": server.b85encode(bytes(data)), "timeout_sec": timeout_sec},
            wait=self._wait_for(timeout_sec),
        )

    # -- the protocol -----------------------------------------------------------------------

    def _wait_for(self, timeout_sec: Optional[float]) -> Optional[float]:
        if self.timeout is None:
            return None
        return self.timeout + (float(timeout_sec) if timeout_sec else 0.0)

    def _request_reply(self, method: str, params: Dict[str, Any], wait: Any = _UNSET, cap: Optional[int] = None) -> Any:
        with self._lock:
            if self._channel.closed:
                raise ConnectionShutdownError(
                    f"the connection to {self.name} is closed; cannot call {method} (start a new client)"
                )
            request_id = self._next_id
            self._next_id += 1
            if wait is _UNSET:
                wait = self.timeout
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id}
            line = (json.dumps(request) + "\n").encode("utf-8")
            deadline = None if wait is None else time.monotonic() + wait
            try:
                self._send(line, deadline, method, wait)
                raw = self._receive_line(deadline, method, wait, MAX_REPLY_LINE if cap is None else cap)
            except ProjectAPIErrorBase:
                raise
            except BaseException:
                # Interrupted mid-exchange (Ctrl-C, an OS error): a reply may still be on its way,
                # so the stream is out of step for good. Stop the server rather than misread it.
                self._stop_now()
                raise
            return self._check(self._parse(raw, method), request_id, method)

    def _send(self, data: bytes, deadline: Optional[float], method: str, wait: Optional[float]) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._write_fd, select.POLLOUT)
        while view:
            try:
                written = os.write(self._write_fd, view)
            except BlockingIOError:
                written = 0
            except (BrokenPipeError, ConnectionResetError):
                self._raise_gone(method)
            view = view[written:]
            if view and not poller.poll(_poll_ms(deadline)):
                if _expired(deadline):
                    self._raise_timeout(method, wait)

    def _receive_line(self, deadline: Optional[float], method: str, wait: Optional[float], cap: int) -> bytes:
        """One reply line, within a hard deadline (checked on every pass, so a server that keeps
        sending cannot stretch it) and ``cap`` bytes; a server process that exits is noticed
        within _EXIT_CHECK_SEC even when something else still holds the reply pipe open."""
        buf = self._buffer
        poller = select.poll()
        poller.register(self._read_fd, select.POLLIN)
        scanned = 0  # bytes of buf already searched for a line end
        while True:
            # TVM reads with universal newlines; accept \n, \r\n or \r, and skip blank lines.
            start = 0
            while start < len(buf) and buf[start] in _NEWLINES:
                start += 1
            if start:
                del buf[:start]
                scanned = 0
            ends = [i for i in (buf.find(b"\n", scanned), buf.find(b"\r", scanned)) if i >= 0]
            if ends:
                end = min(ends)
                line = bytes(buf[:end])
                del buf[: end + 1]
                return line
            scanned = len(buf)
            if len(buf) > cap:
                head = bytes(buf[:40])
                del buf[:]
                self._malformed(method, f"a reply line longer than {cap:,} bytes", head)
            if _expired(deadline):
                self._raise_timeout(method, wait)
            wait_ms = _poll_ms(deadline)
            slice_ms = int(_EXIT_CHECK_SEC * 1000)
            if not poller.poll(slice_ms if wait_ms is None else min(wait_ms, slice_ms)):
                proc = self._channel.process
                if proc is not None and proc.poll() is not None and not poller.poll(0):
                    self._raise_exited(method, proc.returncode)
                continue
            try:
                chunk = os.read(self._read_fd, _READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self._raise_gone(method)
            buf += chunk

    def _parse(self, line: bytes, method: str) -> Dict[str, Any]:
        try:
            reply = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            self._malformed(method, f"not JSON ({type(err).__name__})", line)
        if not isinstance(reply, dict):
            self._malformed(method, "not a JSON object", line)
        return reply

    def _check(self, reply: Dict[str, Any], request_id: int, method: str) -> Any:
        if reply.get("jsonrpc") != "2.0":
            self._malformed(method, f"jsonrpc is {reply.get('jsonrpc')!r}, want '2.0'", reply)
        if "id" not in reply:
            self._malformed(method, "no id", reply)
        error = reply.get("error")
        if reply["id"] != request_id and not (reply["id"] is None and error is not None):
            self._stop_now()
            raise MismatchedIdError(
                f"{self.name} answered {method} (request id {request_id}) with id {reply['id']!r}; "
                "the connection is out of step and was closed"
            )
        if "error" in reply:
            raise self._wire_error(error, method, reply)
        if "result" not in reply:
            self._malformed(method, "neither result nor error", reply)
        return reply["result"]

    def _wire_error(self, error: Any, method: str, reply: Any) -> BaseException:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int) or isinstance(error.get("code"), bool):
            self._malformed(method, "error is not an object with an integer code", reply)
        # from_json keeps a code outside the enum as a plain JSONRPCError (TVM asserts there).
        return server.JSONRPCError.from_json(f"calling method {method}", error)

    # -- failures ---------------------------------------------------------------------------

    def _malformed(self, method: str, why: str, what: Any) -> None:
        self._stop_now()
        text = what.decode("utf-8", "replace") if isinstance(what, bytes) else json.dumps(what)
        if len(text) > 80:
            text = text[:77] + "..."
        raise MalformedReplyError(
            f"{self.name} sent a malformed reply to {method}: {why}: {text!r}; the connection was closed"
        )

    def _raise_timeout(self, method: str, wait: Optional[float]) -> None:
        self._stop_now()
        raise ServerTimeoutError(
            f"{self.name} did not answer {method} within {wait:g} s and was stopped; "
            "allow more time with a larger timeout (--timeout) if the step is just slow"
        )

    def _raise_exited(self, method: str, code: Optional[int]) -> None:
        """The server process is gone though its reply pipe is still open (a process it started
        holds it): say how it exited, and end what it left."""
        self._stop_now()
        raise ServerDiedError(
            f"{self.name} exited while handling {method}: it {describe_exit(code)} "
            "(its own output above may say why)"
        )

    def _raise_gone(self, method: str) -> None:
        proc = self._channel.process
        if proc is None:
            self._stop_now()
            raise ConnectionShutdownError(f"{self.name} closed the connection while handling {method}")
        self._channel.close_pipes()
        try:
            proc.wait(SHUTDOWN_GRACE_SEC)
        except subprocess.TimeoutExpired:
            self._stop_now()
            raise ConnectionShutdownError(
                f"{self.name} closed its reply pipe while handling {method} and was stopped"
            ) from None
        code = self._stop_now()
        raise ServerDiedError(
            f"{self.name} died while handling {method}: it {describe_exit(code)} "
            "(its own output above may say why)"
        )


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    value = float(timeout)
    if not value > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    return value


def _poll_ms(deadline: Optional[float]) -> Optional[int]:
    if deadline is None:
        return None
    return max(0, int((deadline - time.monotonic()) * 1000) + 1)


def _expired(deadline: Optional[float]) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def server_command(project_dir: Union[str, Path]) -> Sequence[str]:
    """The argv (without the fd flags) TVM's client would use for this folder.

    Raises ProjectAPIServerNotFoundError when neither entry point exists.
    """
    folder = Path(project_dir).absolute()
    script = folder / SERVER_SCRIPT
    launcher = folder / SERVER_LAUNCHER
    argv = None
    if script.is_file():
        argv = [sys.executable, str(script)]
    if os.name != "nt" and launcher.is_file():
        argv = [str(launcher), str(script)]  # v0.12+ form: the .py path even when it is absent
    if argv is None:
        if not folder.is_dir():
            raise ProjectAPIServerNotFoundError(
                f"{folder} is not a folder; give a template or generated project folder"
            )
        raise ProjectAPIServerNotFoundError(
            f"{folder} has neither {SERVER_SCRIPT} nor {SERVER_LAUNCHER}; it is not a microTVM project folder"
        )
    return argv


def instantiate_from_dir(
    project_dir: Union[str, Path],
    debug: bool = False,
    timeout: Optional[float] = DEFAULT_TIMEOUT_SEC,
    *,
    tvm_shim: bool = True,
    tvm_version: str = tvm_compat.TVM_VERSION,
    env: Optional[Mapping[str, str]] = None,
) -> ProjectAPIClient:
    """Start the server of ``project_dir`` as TVM does and return a client connected to it.

    ``timeout`` bounds each call (see the module docstring); ``tvm_shim`` puts the tvm import shim
    on the server's PYTHONPATH; ``env`` replaces os.environ as the base environment.
    """
    folder = Path(project_dir).absolute()
    argv = list(server_command(folder))
    timeout = _check_timeout(timeout)
    child_env = tvm_compat.server_environment(env, shim=tvm_shim)

    to_server_r, to_server_w = os.pipe()
    try:
        from_server_r, from_server_w = os.pipe()
    except BaseException:
        os.close(to_server_r)
        os.close(to_server_w)
        raise
    ours = [to_server_w, from_server_r]
    theirs = [to_server_r, from_server_w]
    argv += ["--read-fd", str(to_server_r), "--write-fd", str(from_server_w)]
    if debug:
        argv.append("--debug")
    import uuid

    token = uuid.uuid4().hex
    child_env = dict(child_env, **{SERVER_TOKEN_ENV: token})
    try:
        # The server's (and its launcher's) stdout and stderr come to our stderr, each line
        # marked, never to our stdout: that carries only the caller's own output (--json).
        process = subprocess.Popen(argv, bufsize=0, pass_fds=tuple(theirs), cwd=str(folder), env=child_env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except BaseException as err:
        for fd in ours:
            os.close(fd)
        if isinstance(err, OSError):
            raise ProjectAPIServerNotFoundError(
                f"cannot start {argv[0]}: {err.strerror or err}"
                + ("; make it executable (chmod +x)" if isinstance(err, PermissionError) else "")
            ) from None
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    relays = [_relay(process.stdout, folder), _relay(process.stderr, folder)]
    # From here the client owns the pipes and the process, and releases them if it fails.
    return ProjectAPIClient(
        from_server_r,
        to_server_w,
        process=process,
        timeout=timeout,
        tvm_version=tvm_version,
        name=f"the Project API server in {folder}",
        token=token,
        relays=relays,
    )


def _relay(stream: Any, folder: Path) -> threading.Thread:
    """Copy a server's output to our stderr, a line at a time, each marked as the server's."""
    prefix = f"[{folder.name} server] ".encode("utf-8", "replace")

    def copy() -> None:
        out = getattr(sys.stderr, "buffer", None)
        try:
            for line in iter(stream.readline, b""):
                try:
                    if out is not None:
                        out.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
                        out.flush()
                    else:
                        sys.stderr.write((prefix + line).decode("utf-8", "replace").rstrip("\n") + "\n")
                except (OSError, ValueError):
                    pass
        finally:
            stream.close()

    thread = threading.Thread(target=copy, name=f"server-output-{folder.name}", daemon=True)
    thread.start()
    return thread


def describe_wire_error(err: BaseException) -> str:
    """One line a person can act on for an error a server sent, without its traceback.

    TVM's ``str()`` of these is "calling method X: JSON-RPC error # -32000: calling method X"
    followed by a traceback; for a generic failure the useful part is the traceback's last line
    (the exception the template raised), so that is what this puts first.
    """
    if not isinstance(err, server.JSONRPCError):
        return first_line(err)
    context = str(err.client_context or "").strip()
    method = context[len("calling method "):] if context.startswith("calling method ") else context
    message = first_line(err.message or "")
    cause = ""
    data = err.data
    if isinstance(data, dict) and isinstance(data.get("traceback"), str):
        lines = [line.strip() for line in data["traceback"].splitlines() if line.strip()]
        cause = lines[-1] if lines else ""
    where = f"in {method}" if method else "in a call"
    if message in ("", context, f"calling method {method}", "validating request") and cause:
        return f"the template's server failed {where}: {cause} (run with -v for its traceback)"
    if int(err.code) == server.ErrorCode.SERVER_ERROR:
        return f"the template's server failed {where}: {message or type(err).__name__}"
    return f"the template's server refused {method or 'a call'}: JSON-RPC error {int(err.code)}: {message}"

