"""Real Project API server processes over real pipes, for the server tests.

``spawn_server(script)`` starts ``python script --read-fd N --write-fd M`` exactly as TVM's
client does (two os.pipe()s, pass_fds, bufsize 0) and returns a :class:`ServerProcess` that sends
raw request lines and reads raw reply lines. Reads wait in select() with a generous hang guard:
it only stops a hung test, it is not a speed assertion.
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import pytest

SERVERS = Path(__file__).resolve().parent / "servers"
SERVER_PY = Path(__file__).resolve().parents[2] / "microtvm_registry" / "project_api" / "server.py"
HANG_GUARD_SEC = 30.0


class ServerProcess:
    """One server subprocess and the client ends of its two pipes."""

    def __init__(self, script: Path, cwd: Optional[Path] = None, extra_args: Sequence[str] = (),
                 python: Sequence[str] = (sys.executable,), stderr_path: Optional[Path] = None,
                 env: Optional[dict] = None):
        server_read, self._to_server = os.pipe()
        self._from_server, server_write = os.pipe()
        self.stderr_path = stderr_path
        stderr = open(stderr_path, "wb") if stderr_path is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [*python, str(script), "--read-fd", str(server_read), "--write-fd", str(server_write),
                 *extra_args],
                bufsize=0,
                pass_fds=(server_read, server_write),
                cwd=str(cwd or script.parent),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        finally:
            os.close(server_read)
            os.close(server_write)
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        self._pending = b""

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._to_server, view):]

    def read_line(self, timeout: float = HANG_GUARD_SEC) -> bytes:
        """One raw reply line including its "\\n", or the bytes before EOF (b"" at a clean EOF)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_server], [], [], max(0.0, left))
            if not ready:
                raise AssertionError(f"server sent no complete line within {timeout} s (hang guard)")
            chunk = os.read(self._from_server, 1 << 16)
            if not chunk:
                rest, self._pending = self._pending, b""
                return rest
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line + b"\n"

    def request(self, line, timeout: float = HANG_GUARD_SEC) -> bytes:
        """Send one request (a raw line, or an object to json.dumps) and return the raw reply."""
        if not isinstance(line, (bytes, str)):
            line = json.dumps(line)
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\n")
        return self.read_line(timeout)

    def expect_exit(self, timeout: float = HANG_GUARD_SEC) -> int:
        """Read to EOF (asserting no further output) and return the exit status."""
        rest = self.read_line(timeout)
        assert rest == b"", f"unexpected output before exit: {rest!r}"
        return self.proc.wait(timeout)

    def close_input(self) -> None:
        """Close the request pipe: the server sees EOF."""
        os.close(self._to_server)
        self._to_server = -1

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path else ""

    def close(self) -> None:
        for fd in (self._to_server, self._from_server):
            if fd >= 0:
                os.close(fd)
        self._to_server = self._from_server = -1
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn_server(tmp_path):
    """Factory: spawn_server(script, **kw) -> ServerProcess; every process is reaped afterwards."""
    started: List[ServerProcess] = []
    counter = [0]

    def spawn(script: Path, **kw) -> ServerProcess:
        counter[0] += 1
        kw.setdefault("stderr_path", tmp_path / f"server-{counter[0]}.stderr")
        server = ServerProcess(Path(script), **kw)
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.close()

