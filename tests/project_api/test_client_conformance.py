"""The client against real server processes over real pipes: what it writes, what it accepts."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from fault_servers import FAULT_SERVER, children_of, fault_env, make_server_dir
from microtvm_registry.errors import MicrotvmError
from microtvm_registry.project_api import client as C
from microtvm_registry.project_api import server


def start(tmp_path, mode="ok", **kw):
    folder = make_server_dir(tmp_path / "srv")
    env = fault_env(mode, after=kw.pop("after", 0), record=kw.pop("record", None))
    return C.instantiate_from_dir(folder, env=env, **kw)


def test_request_bytes_are_exactly_tvms(tmp_path):
    record = tmp_path / "requests.bin"
    with start(tmp_path, record=record) as client:
        client.server_info_query()
        client.generate_project(Path("/m/model.tar"), Path("/crt"), Path("/p/proj"), {"verbose": True, "b": "x"})
        client.build({})
        client.flash({"n": 1})
        client.open_transport({})
        client.write_transport(b"hello", 0.25)
        assert client.read_transport(3, None) == {"data": b"xxx"}
        client.close_transport()
    expected = (
        b'{"jsonrpc": "2.0", "method": "server_info_query", "params": {"tvm_version": "0.18.0"}, "id": 1}\n'
        b'{"jsonrpc": "2.0", "method": "generate_project", "params": {"model_library_format_path": '
        b'"/m/model.tar", "standalone_crt_dir": "/crt", "project_dir": "/p/proj", "options": '
        b'{"verbose": true, "b": "x"}}, "id": 2}\n'
        b'{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": 3}\n'
        b'{"jsonrpc": "2.0", "method": "flash", "params": {"options": {"n": 1}}, "id": 4}\n'
        b'{"jsonrpc": "2.0", "method": "open_transport", "params": {"options": {}}, "id": 5}\n'
        b'{"jsonrpc": "2.0", "method": "write_transport", "params": {"data": "Xk~0{Zv", "timeout_sec": 0.25}, "id": 6}\n'
        b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": 3, "timeout_sec": null}, "id": 7}\n'
        b'{"jsonrpc": "2.0", "method": "close_transport", "params": {}, "id": 8}\n'
    )
    assert record.read_bytes() == expected


def test_non_ascii_is_escaped_like_json_dumps(tmp_path):
    record = tmp_path / "requests.bin"
    with start(tmp_path, record=record) as client:
        client.build({"name": "caf\u00e9\n"})
    assert record.read_bytes() == (
        b'{"jsonrpc": "2.0", "method": "build", "params": {"options": {"name": "caf\\u00e9\\n"}}, "id": 1}\n'
    )


def test_server_started_as_tvm_starts_it(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir()
    (folder / "microtvm_api_server.py").write_text(
        "import json, os, sys\n"
        "fds = sorted(int(x) for x in os.listdir('/proc/self/fd'))\n"
        "open('argv.json', 'w').write(json.dumps({'argv': sys.argv, 'exe': sys.executable, 'cwd': os.getcwd(),\n"
        "    'fds': fds}))\n"
    )
    with pytest.raises(C.ServerDiedError, match="exited with status 0"):
        with C.instantiate_from_dir(folder, debug=True) as client:
            client.build({})
    import json

    seen = json.loads((folder / "argv.json").read_text())
    argv = seen["argv"]
    assert argv[0] == str(folder / "microtvm_api_server.py")
    assert argv[1::2][:2] == ["--read-fd", "--write-fd"] and argv[-1] == "--debug"
    assert seen["exe"] == sys.executable
    assert seen["cwd"] == str(folder)
    read_fd, write_fd = int(argv[2]), int(argv[4])
    # stdio plus the two pipe ends, and nothing else of ours leaks into the child (the listdir
    # itself opens one more descriptor).
    assert {0, 1, 2, read_fd, write_fd} <= set(seen["fds"]) and len(seen["fds"]) <= 6


def test_launcher_overrides_script_and_gets_script_path(tmp_path):
    folder = tmp_path / "srv"
    folder.mkdir()
    launcher = folder / C.SERVER_LAUNCHER
    launcher.write_text(f'#!/bin/sh\necho "$@" > args.txt\nexec "{sys.executable}" "{FAULT_SERVER}" "$2" "$3" "$4" "$5"\n')
    launcher.chmod(0o755)
    # No microtvm_api_server.py at all: the v0.12+ launcher still receives its path.
    with C.instantiate_from_dir(folder, env=fault_env("ok")) as client:
        assert client.server_info_query()["platform_name"] == "fault"
    args = (folder / "args.txt").read_text().split()
    assert args[0] == str(folder / "microtvm_api_server.py")
    assert args[1] == "--read-fd" and args[3] == "--write-fd"
    assert C.server_command(folder) == [str(launcher), str(folder / "microtvm_api_server.py")]
    (folder / "microtvm_api_server.py").write_text("")
    assert C.server_command(folder)[0] == str(launcher)


def test_no_server_raises_before_starting_anything(tmp_path):
    before = children_of(os.getpid())
    with pytest.raises(C.ProjectAPIServerNotFoundError, match="neither microtvm_api_server.py"):
        C.instantiate_from_dir(tmp_path)
    with pytest.raises(C.ProjectAPIServerNotFoundError, match="not a folder"):
        C.instantiate_from_dir(tmp_path / "missing")
    assert children_of(os.getpid()) == before


def test_docs_misnamed_launcher_is_not_used(tmp_path):
    (tmp_path / "microtvm_api_server.sh").write_text("#!/bin/sh\n")
    with pytest.raises(C.ProjectAPIServerNotFoundError):
        C.instantiate_from_dir(tmp_path)


def test_ids_start_at_one_and_results_come_back(tmp_path):
    with start(tmp_path) as client:
        info = client.server_info_query()
        assert info["protocol_version"] == 1 and info["is_template"] is True
        assert client.open_transport({})["timeouts"]["session_start_timeout_sec"] == 0
        assert client.read_transport(5, 0.1) == {"data": b"xxxxx"}
        assert client.write_transport(b"\x00\x01", None) is None


def test_crlf_and_cr_line_endings_accepted(tmp_path):
    with start(tmp_path, "crlf") as client:
        assert client.server_info_query()["platform_name"] == "fault"
        assert client.build({}) is None


@pytest.mark.parametrize(
    "code, cls",
    [
        (-32700, "JSONRPCError"),
        (-32600, "JSONRPCError"),
        (-32601, "JSONRPCError"),
        (-32602, "JSONRPCError"),
        (-32603, "JSONRPCError"),
        (-32000, "ServerError"),
        (-1, "JSONRPCError"),  # outside the enum: TVM asserts, we raise
        (12345, "JSONRPCError"),
    ],
)
def test_error_codes_map_to_types(tmp_path, code, cls):
    with start(tmp_path, "error") as client:
        with pytest.raises(server.JSONRPCError) as info:
            client.build({"error": {"code": code, "message": "went wrong", "data": None}})
        assert type(info.value).__name__ == cls
        assert "went wrong" in str(info.value)
        # A wire error leaves the connection usable.
        with pytest.raises(server.JSONRPCError):
            client.flash({"error": {"code": -32601, "message": "flash: no such method", "data": None}})


@pytest.mark.parametrize("name", ["TransportClosedError", "IoTimeoutError", "UnsupportedTVMVersionError"])
def test_typed_server_errors_cross_the_wire(tmp_path, name):
    with start(tmp_path, "error") as client:
        with pytest.raises(getattr(server, name)) as info:
            client.build({"error": {"code": -32000, "message": name, "data": {"traceback": "tb"}}})
        assert isinstance(info.value, server.ServerError)


def test_plain_server_error_keeps_message(tmp_path):
    with start(tmp_path, "error") as client:
        with pytest.raises(server.ServerError) as info:
            client.build({"error": {"code": -32000, "message": "calling method build", "data": {"traceback": "x"}}})
        assert type(info.value) is server.ServerError
        assert "calling method build" in str(info.value)


def test_protocol_version_checked_with_tvms_message(tmp_path):
    with start(tmp_path, "protocol2") as client:
        with pytest.raises(C.UnsupportedProtocolVersionError) as info:
            client.server_info_query()
        assert str(info.value) == "microTVM API Server supports protocol version 2; want 1"
        assert client.is_shutdown


def test_errors_are_microtvm_errors():
    for cls in (C.ConnectionShutdownError, C.MalformedReplyError, C.MismatchedIdError,
                C.ProjectAPIServerNotFoundError, C.UnsupportedProtocolVersionError,
                C.ServerDiedError, C.ServerTimeoutError):
        assert issubclass(cls, C.ProjectAPIErrorBase) and issubclass(cls, MicrotvmError)
    assert issubclass(C.ServerDiedError, C.ConnectionShutdownError)


def test_calls_after_close_raise(tmp_path):
    client = start(tmp_path)
    client.close()
    client.close()  # idempotent
    with pytest.raises(C.ConnectionShutdownError, match="closed"):
        client.build({})
