"""The client and the processes behind a server: exits noticed without the pipe, everything a
server started ended on close, replies bounded in size and time, and output kept off stdout."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from microtvm_registry.project_api import client as client_mod
from microtvm_registry.project_api.client import (
    MalformedReplyError,
    ServerDiedError,
    ServerTimeoutError,
    instantiate_from_dir,
)

from support.minimal_server import HEADER


def _server(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "microtvm_api_server.py").write_text(HEADER + textwrap.dedent(body))
    return folder


def _alive(pid: int) -> bool:
    from microtvm_registry.procs import is_running

    return is_running(pid)


def test_a_server_that_exits_while_a_child_holds_its_pipe_is_noticed(tmp_path):
    pidfile = tmp_path / "child.pid"
    folder = _server(tmp_path / "srv", f"""
        def info(self, tvm_version):
            # a grandchild inherits the reply pipe (fd 4 is --write-fd), then the server exits
            fd = int(sys.argv[sys.argv.index("--write-fd") + 1])
            child = subprocess.Popen(["sleep", "600"], pass_fds=(fd,))
            open({str(pidfile)!r}, "w").write(str(child.pid))
            os._exit(3)
        server.main(handler(server_info_query=info))
    """)
    client = instantiate_from_dir(folder, timeout=300)
    try:
        with pytest.raises(ServerDiedError, match="exited with status 3"):
            client.server_info_query()
    finally:
        client.close()
    child = int(pidfile.read_text())
    assert not _alive(child), "the grandchild outlived the connection"


def test_processes_a_cleanly_exiting_server_started_are_ended_on_close(tmp_path):
    pidfile = tmp_path / "child.pid"
    folder = _server(tmp_path / "srv", f"""
        def build(self, options):
            child = subprocess.Popen(["sleep", "600"], start_new_session=True)  # orphaned on exit
            open({str(pidfile)!r}, "w").write(str(child.pid))
        server.main(handler(build=build))
    """)
    with instantiate_from_dir(folder, timeout=60) as client:
        client.build({})
        assert _alive(int(pidfile.read_text()))
    assert not _alive(int(pidfile.read_text())), "a process the server started outlived close()"


def test_a_reply_line_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(client_mod, "MAX_REPLY_LINE", 1 << 20)
    folder = _server(tmp_path / "srv", """
        fd = int(sys.argv[sys.argv.index("--write-fd") + 1])
        os.read(int(sys.argv[sys.argv.index("--read-fd") + 1]), 65536)
        block = b"x" * 65536
        while True:
            os.write(fd, block)  # a reply that never ends
    """)
    client = instantiate_from_dir(folder, timeout=300)
    try:
        with pytest.raises(MalformedReplyError, match="longer than 1,048,576 bytes"):
            client.build({})
    finally:
        client.close()


def test_the_reply_deadline_is_hard_even_while_bytes_arrive(tmp_path):
    """Bytes that keep coming (but never a whole line) do not stretch the deadline: the call
    ends at its timeout with a few MB read, not after the server stops sending."""
    folder = _server(tmp_path / "srv", """
        fd = int(sys.argv[sys.argv.index("--write-fd") + 1])
        os.read(int(sys.argv[sys.argv.index("--read-fd") + 1]), 65536)
        stop = time.monotonic() + 20
        while time.monotonic() < stop:
            os.write(fd, b"x" * 65536)  # about 6 MB/s, never a newline
            time.sleep(0.01)
        time.sleep(600)
    """)
    client = instantiate_from_dir(folder, timeout=1.0)
    try:
        with pytest.raises(ServerTimeoutError):
            client.build({})
    finally:
        client.close()
    assert len(client._buffer) < 32 * 1024 * 1024  # what 1 s brings, not 20 s


def test_server_and_launcher_output_goes_to_stderr_marked(tmp_path):
    import subprocess

    folder = _server(tmp_path / "noisy", """
        print("server says hi on stdout", flush=True)
        print("server says hi on stderr", file=sys.stderr, flush=True)
        server.main(handler())
    """)
    launcher = folder / "launch_microtvm_api_server.sh"
    launcher.write_text(f'#!/bin/sh\necho "launcher says hi"\nexec {sys.executable} "$@"\n')
    launcher.chmod(0o755)
    proc = subprocess.run([sys.executable, "-m", "microtvm_registry", "info", str(folder), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["platform_name"] == "t"  # stdout is the JSON document alone
    for line in ("launcher says hi", "server says hi on stdout", "server says hi on stderr"):
        assert f"[noisy server] {line}" in proc.stderr


def test_a_launcher_that_is_not_executable_is_named(tmp_path):
    from microtvm_registry.project_api.client import ProjectAPIServerNotFoundError

    folder = _server(tmp_path / "tpl", "server.main(handler())\n")
    launcher = folder / "launch_microtvm_api_server.sh"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    launcher.chmod(0o644)
    with pytest.raises(ProjectAPIServerNotFoundError, match=r"cannot start .*launch_microtvm_api_server.sh: Permission denied; make it executable \(chmod \+x\)"):
        instantiate_from_dir(folder, timeout=60)
