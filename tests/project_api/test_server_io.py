"""Transport helpers on real pipes and processes, main()'s command line, and the stdlib-only copy."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from microtvm_registry.project_api import server
from microtvm_registry.project_api.server import ChildProcessTransport, IoTimeoutError, TransportClosedError, read_with_timeout, write_with_timeout

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
SERVER_PY = Path(server.__file__)


@pytest.fixture
def pipe():
    r, w = os.pipe()
    fds = [r, w]
    yield fds
    for fd in fds:
        if fd >= 0:
            os.close(fd)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _fill(fd: int) -> int:
    """Fill a pipe until a write would block; return how many bytes went in."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    total = 0
    try:
        while True:
            total += os.write(fd, b"x" * 65536)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, blocking)
    return total


# ---------------------------------------------------------------------------------------------
# read_with_timeout / write_with_timeout
# ---------------------------------------------------------------------------------------------
def test_read_returns_available_bytes_up_to_n(pipe):
    r, w = pipe
    os.write(w, b"abcdef")
    assert read_with_timeout(r, 4, 1.0) == b"abcd"
    assert read_with_timeout(r, 100, None) == b"ef"


@pytest.mark.parametrize("timeout", [0, 0.05])
def test_read_times_out(pipe, timeout):
    with pytest.raises(IoTimeoutError):
        read_with_timeout(pipe[0], 1, timeout)


def test_read_eof_raises_closed_and_leaves_fd_open(pipe):
    r, w = pipe
    os.close(w)
    pipe[1] = -1
    with pytest.raises(TransportClosedError):
        read_with_timeout(r, 1, None)
    assert _fd_open(r)  # TVM closed it here; the owner closes it


def test_read_nonblocking_fd_without_deadline(pipe):
    r, w = pipe
    os.set_blocking(r, False)
    os.write(w, b"z")
    assert read_with_timeout(r, 8, None) == b"z"


def test_read_n_must_be_positive(pipe):
    with pytest.raises(ValueError):
        read_with_timeout(pipe[0], 0, 0)


def test_write_all_and_zero_bytes(pipe):
    r, w = pipe
    assert write_with_timeout(w, b"", 0) == 0  # TVM raised NameError here
    assert write_with_timeout(w, b"hello", None) == 5
    assert os.read(r, 10) == b"hello"


@pytest.mark.parametrize("blocking", [True, False])
def test_write_full_pipe_times_out_or_returns_partial(pipe, blocking):
    r, w = pipe
    os.set_blocking(w, blocking)
    _fill(w)
    with pytest.raises(IoTimeoutError):
        write_with_timeout(w, b"more", 0.05)
    # Make a little room: a big write then returns the partial count at the deadline.
    os.read(r, 8192)
    data = b"y" * (1 << 20)
    count = write_with_timeout(w, data, 0.1)
    assert 0 < count < len(data)


def test_write_to_closed_reader_raises_closed(pipe):
    r, w = pipe
    os.close(r)
    pipe[0] = -1
    with pytest.raises(TransportClosedError):
        write_with_timeout(w, b"x", 1.0)


def test_helpers_accept_file_objects(pipe):
    r, w = pipe
    with open(os.dup(w), "wb", buffering=0) as wf, open(os.dup(r), "rb", buffering=0) as rf:
        assert write_with_timeout(wf, memoryview(b"abc"), 1) == 3
        assert read_with_timeout(rf, 3, 1) == b"abc"


# ---------------------------------------------------------------------------------------------
# ChildProcessTransport
# ---------------------------------------------------------------------------------------------
ECHO_CHILD = [sys.executable, "-c",
              "import os\nwhile True:\n    b = os.read(0, 65536)\n    if not b: break\n    os.write(1, b)\n"]


def test_child_process_transport_round_trip():
    with ChildProcessTransport(ECHO_CHILD) as t:
        payload = bytes(range(256)) * 1024  # bigger than a pipe buffer: write must loop
        received = bytearray()
        sent = 0
        while len(received) < len(payload):
            if sent < len(payload):
                t.write(payload[sent:sent + 16384], 10.0)
                sent += 16384
            received += t.read(65536, 10.0)
        assert bytes(received) == payload
        with pytest.raises(IoTimeoutError):
            t.read(1, 0.05)
        pid = t.pid
    with pytest.raises(TransportClosedError):
        t.read(1, 0)
    with pytest.raises(TransportClosedError):
        t.write(b"x", 0)
    with pytest.raises(ChildProcessError):  # close() stopped and reaped the child
        os.waitpid(pid, os.WNOHANG)


def test_child_process_exit_is_transport_closed():
    t = ChildProcessTransport([sys.executable, "-c", "import sys; sys.stdout.write('bye')"])
    try:
        assert t.read(10, 10.0) == b"bye"
        with pytest.raises(TransportClosedError):
            t.read(10, 10.0)
        with pytest.raises(TransportClosedError):
            for _ in range(100):  # the first writes may still land in the pipe buffer
                t.write(b"x" * 65536, 10.0)
    finally:
        t.close()
    assert t._proc is None


def test_child_write_times_out_when_child_does_not_read():
    with ChildProcessTransport([sys.executable, "-c", "import time; time.sleep(60)"]) as t:
        with pytest.raises(IoTimeoutError):
            for _ in range(64):
                t.write(b"x" * 65536, 0.2)


# ---------------------------------------------------------------------------------------------
# main(): argv, logging, exit status
# ---------------------------------------------------------------------------------------------
def _run_main_script(tmp_path, body: str, argv_tail, pass_fds=()):
    script = tmp_path / "srv.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(SERVERS)!r})
        from microtvm_registry.project_api import server
        from echo_server import EchoHandler
        {body}
    """))
    return subprocess.Popen([sys.executable, str(script), *argv_tail], pass_fds=pass_fds,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_main_honours_its_argv(tmp_path):
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    # sys.argv holds junk that argparse would reject; main must parse the list it was given.
    proc = _run_main_script(
        tmp_path,
        "server.main(EchoHandler(), ['--read-fd', sys.argv[2], '--write-fd', sys.argv[3]])",
        ["--bogus", str(to_r), str(from_w)], pass_fds=(to_r, from_w))
    os.close(to_r)
    os.close(from_w)
    os.write(to_w, b'{"jsonrpc": "2.0", "method": "close_transport", "params": {}, "id": 1}\n')
    os.close(to_w)
    with open(from_r, "rb") as f:
        assert f.read() == b'{"jsonrpc": "2.0", "id": 1, "result": null}\n'
    assert proc.wait(30) == 0
    proc.stderr.close()


def test_main_bad_command_line_is_a_usage_error(tmp_path):
    proc = _run_main_script(tmp_path, "server.main(EchoHandler())", ["--read-fd", "x"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert b"--read-fd" in err and b"usage" in err


def test_debug_flag_logs_requests(spawn_server):
    srv = spawn_server(SERVERS / "echo_server.py", extra_args=["--debug"])
    assert srv.request('{"jsonrpc": "2.0", "method": "close_transport", "params": {}, "id": 1}') == (
        b'{"jsonrpc": "2.0", "id": 1, "result": null}\n')
    srv.close()
    err = srv.stderr_text()
    assert "request: " in err and "reply: " in err


# ---------------------------------------------------------------------------------------------
# A copy of server.py beside a template, without site-packages (another interpreter's view)
# ---------------------------------------------------------------------------------------------
def test_standalone_copy_without_site_packages(tmp_path, spawn_server):
    shutil.copy2(SERVER_PY, tmp_path / "server.py")
    shutil.copy2(SERVERS / "echo_server.py", tmp_path / "microtvm_api_server.py")
    # -S: no site-packages (so no microtvm_registry), -E/-s: no environment or user site.
    srv = spawn_server(tmp_path / "microtvm_api_server.py", python=(sys.executable, "-S", "-E", "-s"))
    raw = srv.request('{"jsonrpc": "2.0", "method": "server_info_query", "params": {"tvm_version": "0.18.0"}, "id": 1}')
    assert raw.startswith(b'{"jsonrpc": "2.0", "id": 1, "result": {"platform_name": "echo", "is_template": true')
    assert srv.request('{"jsonrpc": "2.0", "method": "open_transport", "params": {"options": {}}, "id": 2}') == (
        b'{"jsonrpc": "2.0", "id": 2, "result": {"timeouts": {"session_start_retry_timeout_sec": 2.0, '
        b'"session_start_timeout_sec": 5.0, "session_established_timeout_sec": 5.0}}}\n')


def _other_pythons():
    """Other CPython 3.9+ interpreters on this machine (pyenv installs), for the copy test."""
    import glob

    found = []
    for path in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3"))):
        minor = int(Path(path).parents[1].name.split(".")[1])
        if minor >= 9 and Path(path).resolve() != Path(sys.executable).resolve():
            found.append(path)
    return found or [sys.executable]


@pytest.mark.parametrize("python", _other_pythons())
def test_standalone_copy_under_other_interpreters(tmp_path, spawn_server, python):
    shutil.copy2(SERVER_PY, tmp_path / "server.py")
    shutil.copy2(SERVERS / "quirk_server.py", tmp_path / "microtvm_api_server.py")
    srv = spawn_server(tmp_path / "microtvm_api_server.py", python=(python, "-S", "-E", "-s"))
    assert srv.request('{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": 8, "timeout_sec": null}, "id": 1}') == (
        b'{"jsonrpc": "2.0", "id": 1, "result": {"data": "009C61O)~M"}}\n')
    assert srv.request('{"jsonrpc": "2.0", "method": "write_transport", "params": {"data": "Xk~0{Zv", "timeout_sec": 1}, "id": 2}') == (
        b'{"jsonrpc": "2.0", "id": 2, "result": null}\n')
    assert srv.request('{"jsonrpc": "2.0", "method": "flash", "params": {"options": {"last_write": true}}, "id": 20}') == (
        b'{"jsonrpc": "2.0", "id": 20, "result": {"hex": "68656c6c6f", "timeout_sec": 1}}\n')
    assert srv.request('{"jsonrpc": "2.0", "method": "build", "params": {"options": null}, "id": 3}') == (
        b'{"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "method build: parameter options: '
        b"want <class 'dict'>, got <class 'NoneType'>\", \"data\": null}}\n")
    raw = srv.request('{"jsonrpc": "2.0", "method": "build", "params": {"options": {"action": "io-timeout"}}, "id": 4}')
    assert raw.startswith(b'{"jsonrpc": "2.0", "id": 4, "error": {"code": -32000, "message": "IoTimeoutError", "data": {"traceback": ')
    assert srv.request("[]") == (b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, '
                                 b'"message": "request: want dict; got []", "data": null}}\n')
    assert srv.expect_exit() == 0


def test_import_is_stdlib_only_and_lazy(tmp_path):
    shutil.copy2(SERVER_PY, tmp_path / "server.py")
    # A module is from the standard library if it is built in, frozen, or lives in the stdlib
    # folders (works on 3.9, which has no sys.stdlib_module_names).
    code = textwrap.dedent("""
        import json, sys, sysconfig
        before = set(sys.modules)
        import server
        new = sorted(set(sys.modules) - before - {"server"})
        roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}
        def is_stdlib(name):
            mod = sys.modules[name]
            where = getattr(mod, "__file__", None)
            return where is None or any(where.startswith(r) for r in roots)
        print(json.dumps({"new": new, "outside": [m for m in new if not is_stdlib(m)]}))
    """)
    out = subprocess.run([sys.executable, "-S", "-E", "-s", "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    assert info["outside"] == [], info["outside"]
    heavy = {"numpy", "logging", "traceback", "subprocess", "pathlib", "typing", "argparse",
             "base64", "select", "threading", "inspect", "dataclasses"}
    assert not heavy & set(info["new"]), heavy & set(info["new"])
