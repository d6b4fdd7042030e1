"""Real servers on 127.0.0.1 for tests and benchmarks: git daemon, HTTP, a counting TCP proxy.

Nothing here depends on pytest, so benchmarks can use it too. Every server binds 127.0.0.1 on a
free port, is a context manager (``with GitDaemon(base) as d: ...``), waits until it is really
accepting connections before ``__enter__`` returns, and stops its threads/processes on exit.

Stable interface (other helpers rely on it -- extend, do not change):

``git(args, cwd=None, env=None, input=None) -> str``
    Run ``git *args`` (list of str), return stripped stdout; raise CalledProcessError on failure.
    Uses a fixed identity and no system config, so it works outside pytest too.

``make_repo(path, files, message="commit", *, date=None) -> str``
    Create (if needed) a git work tree at ``path``, apply ``files`` and commit; return the commit
    id. ``files`` maps a repo-relative posix path to: ``str``/``bytes`` (a normal file, mode
    100644), ``Executable(data)`` (100755), ``Symlink(target)`` (120000), or ``None`` (delete).
    Call it again on the same path to add commits. Commits have fixed dates, so the same content
    and message give the same commit id.

``rev_parse(repo, rev) -> str``
    ``git rev-parse`` in ``repo``; e.g. ``rev_parse(repo, f"{commit}:{subdir}")`` is the tree id.

``GitDaemon(base_path, *, allow_filter=True, allow_any_sha1=True, timeout=60)``
    ``git daemon --reuseaddr --export-all --base-path=BASE --enable=upload-pack --verbose`` on
    127.0.0.1. Server-side ``uploadpack.allowFilter`` / ``uploadpack.allowAnySHA1InWant`` are set
    through the daemon's environment (GIT_CONFIG_COUNT), so every repo under BASE gets them
    without touching the repos (the daemon ignores global/system git config). Note that with
    protocol v2 (git's default) upload-pack serves any commit by id whatever allowAnySHA1InWant
    says; to test a server that refuses, also make the *client* use ``protocol.version=0``. Attributes/methods: ``port``, ``url(name, port=None)`` ->
    ``git://127.0.0.1:PORT/name`` (``port`` lets you point at a TcpProxy in front of it),
    ``log_text()`` (the daemon's verbose log), ``upload_pack_count(name=None)`` (how many
    upload-pack requests the daemon served, optionally only for one repo name).

``HttpServer(root, *, etag=True)``
    Threaded HTTP/1.1 file server for folder ``root``. ``url(path="")`` -> full URL;
    ``put(path, data)`` writes a file under root; ``requests`` is a list of
    ``RequestRecord(method, path, headers)`` (every request, in order, faults included);
    ``request_count(path=None)``. Conditional GET: each file has ``ETag`` (quoted sha256 prefix)
    and ``If-None-Match`` gives 304. Faults are queued per path (``path=None`` means any path)
    and consumed in order, one per request, ``times`` requests each::

        server.add_fault("/a.tar.gz", status=500, times=2)   # 500, 500, then the real file
        server.add_fault("/a.tar.gz", reset=True)            # TCP RST before any response
        server.add_fault("/a.tar.gz", truncate=100)          # full Content-Length, 100 bytes, close
        server.add_fault("/a.tar.gz", delay=5.0)             # sleep before the status line
        server.add_fault("/a.tar.gz", rate=20000)            # body trickles at 20 kB/s
        server.clear_faults()

    ``rate`` may be combined with ``truncate``/``delay``; ``status`` wins over the others.
    ``set_rate(bytes_per_sec or None)`` throttles every body (a permanently slow server).

``TcpProxy(target_port, *, target_host="127.0.0.1", rate=None)``
    Forwards 127.0.0.1:``port`` to the target, counting bytes: ``bytes_down`` (server->client),
    ``bytes_up``, ``connections``; ``reset_counters()``. ``rate`` (bytes/s) throttles the
    server->client direction, e.g. to make a git fetch slow enough to be killed mid-transfer.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

__all__ = [
    "Executable",
    "Symlink",
    "git",
    "make_repo",
    "rev_parse",
    "GitDaemon",
    "HttpServer",
    "RequestRecord",
    "TcpProxy",
    "free_port",
]

_FIXED_DATE = "2024-01-01T00:00:00+00:00"


def _git_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GIT_AUTHOR_NAME": "microtvm tests",
            "GIT_AUTHOR_EMAIL": "tests@localhost",
            "GIT_COMMITTER_NAME": "microtvm tests",
            "GIT_COMMITTER_EMAIL": "tests@localhost",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
    )
    if extra:
        env.update(extra)
    return env


def git(
    args: Sequence[str],
    cwd: Union[str, Path, None] = None,
    env: Optional[Mapping[str, str]] = None,
    input: Optional[bytes] = None,
) -> str:
    """Run git with a fixed identity; return stripped stdout (text)."""
    proc = subprocess.run(
        ["git", *args],
        cwd=None if cwd is None else str(cwd),
        env=_git_env(env),
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, ["git", *args], proc.stdout, proc.stderr
        )
    return proc.stdout.decode("utf-8", "surrogateescape").strip()


@dataclasses.dataclass(frozen=True)
class Executable:
    """A file committed with mode 100755."""

    data: Union[bytes, str]


@dataclasses.dataclass(frozen=True)
class Symlink:
    """A symlink (mode 120000) whose target is ``target``."""

    target: str


FileSpec = Union[bytes, str, Executable, Symlink, None]


def _as_bytes(data: Union[bytes, str]) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else data


def make_repo(
    path: Union[str, Path],
    files: Mapping[str, FileSpec],
    message: str = "commit",
    *,
    date: Optional[str] = None,
) -> str:
    """Write ``files`` into the git work tree at ``path`` (created if needed), commit, return id."""
    path = Path(path)
    if not (path / ".git").exists():
        path.mkdir(parents=True, exist_ok=True)
        git(["init", "-q", "-b", "main", str(path)])
    for rel, spec in files.items():
        target = path / rel
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.is_dir():
            shutil.rmtree(target)
        if spec is None:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, Symlink):
            os.symlink(spec.target, target)
        elif isinstance(spec, Executable):
            target.write_bytes(_as_bytes(spec.data))
            target.chmod(0o755)
        else:
            target.write_bytes(_as_bytes(spec))
            target.chmod(0o644)
    stamp = date or _FIXED_DATE
    env = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
    git(["-c", "core.fileMode=true", "add", "-A"], cwd=path, env=env)
    git(["commit", "-q", "--allow-empty", "-m", message], cwd=path, env=env)
    return git(["rev-parse", "HEAD"], cwd=path)


def rev_parse(repo: Union[str, Path], rev: str) -> str:
    """``git rev-parse REV`` inside ``repo`` (e.g. ``COMMIT:subdir`` gives the tree id)."""
    return git(["rev-parse", "--verify", "--end-of-options", rev], cwd=repo)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry if it is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, deadline: float, alive=lambda: True) -> bool:
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# --------------------------------------------------------------------------------------------
# git daemon


class GitDaemon:
    """``git daemon`` serving every repository under ``base_path`` on 127.0.0.1."""

    def __init__(
        self,
        base_path: Union[str, Path],
        *,
        allow_filter: bool = True,
        allow_any_sha1: bool = True,
        timeout: float = 60.0,
    ) -> None:
        self.base_path = Path(base_path).resolve()
        self.allow_filter = allow_filter
        self.allow_any_sha1 = allow_any_sha1
        self.timeout = timeout
        self.port: int = 0
        self._proc: Optional[subprocess.Popen] = None
        self._log_path: Optional[Path] = None
        self._log_file = None

    # -- lifecycle
    def start(self) -> "GitDaemon":
        import tempfile

        config = {
            "uploadpack.allowFilter": "true" if self.allow_filter else "false",
            "uploadpack.allowAnySHA1InWant": "true" if self.allow_any_sha1 else "false",
            "uploadpack.allowReachableSHA1InWant": "true" if self.allow_any_sha1 else "false",
        }
        env = _git_env({"GIT_CONFIG_GLOBAL": os.devnull})  # the server ignores user config
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        fd, log = tempfile.mkstemp(prefix="git-daemon-", suffix=".log")
        os.close(fd)
        self._log_path = Path(log)
        last_error = ""
        for _attempt in range(8):
            self.port = free_port()
            self._log_file = open(self._log_path, "wb")
            self._proc = subprocess.Popen(
                [
                    "git",
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--verbose",
                    "--informative-errors",
                    "--log-destination=stderr",
                    f"--base-path={self.base_path}",
                    "--enable=upload-pack",
                    "--listen=127.0.0.1",
                    f"--port={self.port}",
                    f"--timeout={int(self.timeout)}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._log_file,
                env=env,
            )
            deadline = time.monotonic() + 10
            if _wait_port(self.port, deadline, alive=lambda: self._proc.poll() is None):
                return self
            last_error = self.log_text()
            self._kill()
        raise RuntimeError(f"git daemon did not start: {last_error.strip()[-500:]}")

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        self._kill()
        self._proc = None

    def __enter__(self) -> "GitDaemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log_path is not None:
            try:
                self._log_path.unlink()
            except OSError:
                pass

    # -- use
    def url(self, name: str, port: Optional[int] = None) -> str:
        """git:// URL of repository ``name`` (a path relative to base_path)."""
        return f"git://127.0.0.1:{port or self.port}/{name.lstrip('/')}"

    def log_text(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text("utf-8", "replace")

    def upload_pack_count(self, name: Optional[str] = None) -> int:
        """Number of upload-pack requests served (each fetch/clone/ls-remote is one)."""
        count = 0
        for line in self.log_text().splitlines():
            if "Request upload-pack for" not in line:
                continue
            if name is None or line.rstrip().rstrip("'").endswith("/" + name.strip("/")):
                count += 1
        return count


# --------------------------------------------------------------------------------------------
# HTTP


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    headers: Dict[str, str]


@dataclasses.dataclass
class _Fault:
    status: Optional[int] = None
    reset: bool = False
    truncate: Optional[int] = None
    delay: float = 0.0
    rate: Optional[float] = None
    times: int = 1
    headers: Optional[Dict[str, str]] = None  # extra headers (Retry-After, Location, Content-Encoding)
    endless: bool = False  # a 200 whose body never ends (no Content-Length)


def _send_throttled(wfile, data: bytes, rate: Optional[float]) -> None:
    if not rate:
        wfile.write(data)
        return
    chunk = max(1, int(rate / 20))
    for i in range(0, len(data), chunk):
        wfile.write(data[i : i + chunk])
        wfile.flush()
        time.sleep(chunk / rate)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_HTTPServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence stderr
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner: HttpServer = self.server.owner
        path = self.path.split("?", 1)[0]
        owner._record(RequestRecord(self.command, path, dict(self.headers.items())))
        fault = owner._take_fault(path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.reset:
            self.close_connection = True
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            except OSError:
                pass
            self.connection.close()
            return
        if fault is not None and fault.endless:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.close_connection = True
            block = b"x" * 65536
            try:
                while True:
                    self.wfile.write(block)
            except (BrokenPipeError, ConnectionResetError, OSError):
                return
        if fault is not None and fault.status is not None:
            body = f"fault {fault.status}\n".encode()
            self.send_response(fault.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (fault.headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        file = owner._resolve(path)
        if file is None:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        data = file.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if owner.etag and self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        if owner.etag:
            self.send_header("ETag", etag)
        for key, value in ((fault.headers or {}) if fault is not None else {}).items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        rate = (fault.rate if fault is not None else None) or owner.rate
        if fault is not None and fault.truncate is not None:
            try:
                _send_throttled(self.wfile, data[: fault.truncate], rate)
                self.wfile.flush()
            finally:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return
        try:
            _send_throttled(self.wfile, data, rate)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "HttpServer"


class HttpServer:
    """A file server for ``root`` on 127.0.0.1 with request recording and injectable faults."""

    def __init__(self, root: Union[str, Path], *, etag: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.etag = etag
        self.rate: Optional[float] = None
        self.requests: List[RequestRecord] = []
        self._faults: Dict[Optional[str], List[_Fault]] = {}
        self._lock = threading.Lock()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    def start(self) -> "HttpServer":
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        if not _wait_port(self.port, time.monotonic() + 10):
            raise RuntimeError("HTTP server did not start")
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HttpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- content
    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def put(self, path: str, data: Union[bytes, str]) -> Path:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_as_bytes(data))
        return target

    def _resolve(self, path: str) -> Optional[Path]:
        from urllib.parse import unquote

        rel = unquote(path).lstrip("/")
        candidate = (self.root / rel).resolve()
        if self.root != candidate and self.root not in candidate.parents:
            return None
        return candidate if candidate.is_file() else None

    # -- faults and records
    def add_fault(
        self,
        path: Optional[str] = None,
        *,
        status: Optional[int] = None,
        reset: bool = False,
        truncate: Optional[int] = None,
        delay: float = 0.0,
        rate: Optional[float] = None,
        times: int = 1,
        headers: Optional[Dict[str, str]] = None,
        endless: bool = False,
    ) -> None:
        key = None if path is None else "/" + path.lstrip("/")
        with self._lock:
            self._faults.setdefault(key, []).append(
                _Fault(status, reset, truncate, delay, rate, times, headers, endless)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_rate(self, bytes_per_sec: Optional[float]) -> None:
        self.rate = bytes_per_sec

    def _take_fault(self, path: str) -> Optional[_Fault]:
        with self._lock:
            for key in (path, None):
                queue = self._faults.get(key)
                if queue:
                    fault = queue[0]
                    fault.times -= 1
                    if fault.times <= 0:
                        queue.pop(0)
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def request_count(self, path: Optional[str] = None) -> int:
        with self._lock:
            if path is None:
                return len(self.requests)
            key = "/" + path.lstrip("/")
            return sum(1 for r in self.requests if r.path == key)


# --------------------------------------------------------------------------------------------
# TCP proxy


class TcpProxy:
    """Forward 127.0.0.1:port to a target, counting (and optionally throttling) the bytes."""

    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", rate: Optional[float] = None
    ) -> None:
        self.target = (target_host, target_port)
        self.rate = rate
        self.bytes_down = 0
        self.bytes_up = 0
        self.connections = 0
        self.port = 0
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []

    def start(self) -> "TcpProxy":
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_down = self.bytes_up = self.connections = 0

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._sock.accept()  # type: ignore[union-attr]
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.connections += 1
            t = threading.Thread(target=self._serve_one, args=(client, upstream), daemon=True)
            t.start()

    def _serve_one(self, client: socket.socket, upstream: socket.socket) -> None:
        down = threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True)
        down.start()
        self._pump(client, upstream, False)
        down.join()
        for s in (client, upstream):
            try:
                s.close()
            except OSError:
                pass

    def _pump(self, src: socket.socket, dst: socket.socket, down: bool) -> None:
        """Copy one direction; on EOF half-close the other side, on error tear both down."""
        bufsize = max(1, int(self.rate / 20)) if (down and self.rate) else 65536
        try:
            while not self._stopping.is_set():
                data = src.recv(bufsize)
                if not data:
                    break
                with self._lock:
                    if down:
                        self.bytes_down += len(data)
                    else:
                        self.bytes_up += len(data)
                dst.sendall(data)
                if down and self.rate:
                    time.sleep(len(data) / self.rate)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
