"""The Python API of server.py: options, errors, the handler interface, the in-process server."""
from __future__ import annotations

import io
import json
import pickle

import pytest

from microtvm_registry.project_api import server
from microtvm_registry.project_api.server import ErrorCode, IoTimeoutError, JSONRPCError, ProjectAPIHandler, ProjectOption, ServerError, TransportClosedError, UnsupportedTVMVersionError, default_project_options

ALL = ["generate_project", "build", "flash", "open_transport"]


# ---------------------------------------------------------------------------------------------
# ProjectOption
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, expected_type", [
    ({"choices": (True, False)}, "bool"),
    ({"choices": ["true", "False"]}, "bool"),
    ({"choices": ["a", "b"]}, "str"),
    ({"choices": [1, 2]}, "int"),
    ({"choices": [1, 2.5]}, "float"),
    ({"choices": [1, "x"]}, "str"),
    ({}, "str"),
    ({"default": 3}, "int"),
    ({"default": False, "choices": ["x"]}, "bool"),
])
def test_v08_form_gets_inferred_type_and_is_optional_everywhere(kw, expected_type):
    opt = ProjectOption("o", help="h", **kw)
    assert opt.type == expected_type
    assert opt.required is None and opt.optional == ALL
    assert list(opt.to_json()) == ["name", "choices", "default", "type", "required", "optional", "help"]


def test_v09_form_is_kept_as_given_and_emitted_in_order():
    opt = ProjectOption("board", type="str", choices=("a", "b"), required=["generate_project"],
                        optional=("flash",), help="which board")
    assert opt.to_json() == {"name": "board", "choices": ["a", "b"], "default": None, "type": "str",
                             "required": ["generate_project"], "optional": ["flash"], "help": "which board"}
    assert json.dumps(opt.to_json()) == (
        '{"name": "board", "choices": ["a", "b"], "default": null, "type": "str", '
        '"required": ["generate_project"], "optional": ["flash"], "help": "which board"}')
    assert opt._asdict()["type"] == "str"  # still a namedtuple, as TVM's


@pytest.mark.parametrize("kw", [
    {"type": "list"},
    {"type": "str", "required": "build"},
    {"type": "str", "optional": [1]},
    {"choices": "ab"},
])
def test_bad_fields_are_value_errors(kw):
    with pytest.raises(ValueError):
        ProjectOption("o", **kw)


def test_name_is_the_only_positional_field():
    with pytest.raises(TypeError):
        ProjectOption("o", ["a"], "help")  # noqa
    with pytest.raises(ValueError):
        ProjectOption("", type="str", optional=["build"])


def test_options_copy_and_pickle():
    import copy

    for opt in [ProjectOption("v", choices=(True, False), help="h"),
                ProjectOption("b", type="str", required=["build"], default="x")]:
        assert copy.deepcopy(opt) == opt and copy.copy(opt) == opt
        back = pickle.loads(pickle.dumps(opt))
        assert type(back) is ProjectOption and back == opt


def test_replace_and_unknown_field():
    opt = ProjectOption("o", type="int", optional=["build"], help="h")
    new = opt.replace({"default": 4, "required": ["flash"]})
    assert (new.default, new.required, new.optional, opt.default) == (4, ["flash"], ["build"], None)
    with pytest.raises(ValueError, match="nope"):
        opt.replace({"nope": 1})


def test_default_project_options_and_overrides():
    names = [o.name for o in default_project_options()]
    assert names == ["verbose", "project_type", "board", "cmsis_path", "warning_as_error",
                     "compile_definitions", "extra_files_tar"]
    by_name = {o.name: o for o in default_project_options()}
    assert by_name["verbose"].type == "bool" and by_name["verbose"].default is False
    assert by_name["board"].required == ["generate_project"] and by_name["board"].optional is None
    assert by_name["cmsis_path"].optional == ["generate_project"]
    opts = default_project_options(board={"choices": ["x", "y"], "optional": ["flash", "open_transport"]})
    board = [o for o in opts if o.name == "board"][0]
    assert board.choices == ["x", "y"] and board.optional == ["flash", "open_transport"]
    assert board.required == ["generate_project"]
    with pytest.raises(ValueError, match="no_such"):
        default_project_options(no_such={"default": 1})


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_error_codes():
    assert {c.name: int(c) for c in ErrorCode} == {
        "PARSE_ERROR": -32700, "INVALID_REQUEST": -32600, "METHOD_NOT_FOUND": -32601,
        "INVALID_PARAMS": -32602, "INTERNAL_ERROR": -32603, "SERVER_ERROR": -32000}


def test_server_error_subclass_message_is_its_name():
    assert IoTimeoutError().message == "IoTimeoutError"
    assert IoTimeoutError().code == -32000
    assert IoTimeoutError(message="IoTimeoutError").message == "IoTimeoutError"
    with pytest.raises(TypeError):
        TransportClosedError("something else")
    with pytest.raises(TypeError):
        ServerError()
    assert ServerError("x").message == "x"


@pytest.mark.parametrize("cls", [TransportClosedError, IoTimeoutError, UnsupportedTVMVersionError])
def test_from_json_restores_typed_errors(cls):
    err = JSONRPCError.from_json("calling method m", {"code": -32000, "message": cls.__name__,
                                                      "data": {"traceback": "TB"}})
    assert type(err) is cls and err.client_context == "calling method m"
    assert str(err) == f"calling method m: JSON-RPC error # -32000: {cls.__name__}\nTB"


def test_from_json_plain_server_error_and_other_codes():
    err = JSONRPCError.from_json("ctx", {"code": -32000, "message": "calling method build", "data": None})
    assert type(err) is ServerError and err.message == "calling method build"
    assert str(err) == "ctx: JSON-RPC error # -32000: calling method build"
    err = JSONRPCError.from_json("ctx", {"code": -32601, "message": "x: no such method", "data": None})
    assert type(err) is JSONRPCError and err.code is ErrorCode.METHOD_NOT_FOUND
    err = JSONRPCError.from_json(None, {"code": -1, "message": "odd", "data": [1]})
    assert type(err) is JSONRPCError and err.code == -1  # TVM's client asserted here
    assert str(err) == "JSON-RPC error # -1: odd\n[1]"


def test_user_subclass_of_a_subclass_round_trips():
    class DeeperError(IoTimeoutError):
        pass

    err = JSONRPCError.from_json(None, {"code": -32000, "message": "DeeperError", "data": None})
    assert type(err) is DeeperError


def test_errors_pickle():
    for err in [JSONRPCError(-32601, "m", None, client_context="c"), ServerError("x", data={"a": 1}),
                IoTimeoutError(client_context="c")]:
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.__dict__ == err.__dict__ and str(back) == str(err)


def test_set_traceback_marks_first_frame_once():
    try:
        raise ValueError("boom")
    except ValueError as exc:
        err = ServerError.from_exception(exc, message="calling method x")
    tb = err.data["traceback"]
    assert tb.count("# <--- Outermost server-side stack frame") == 1
    assert tb.splitlines()[1].endswith("# <--- Outermost server-side stack frame")
    err.set_traceback(["ignored"])  # an existing traceback is kept
    assert err.data["traceback"] == tb


# ---------------------------------------------------------------------------------------------
# Handler interface and the in-process server
# ---------------------------------------------------------------------------------------------
def test_handler_has_the_eight_abstract_methods():
    assert ProjectAPIHandler.__abstractmethods__ == {
        "server_info_query", "generate_project", "build", "flash", "open_transport",
        "close_transport", "read_transport", "write_transport"}
    with pytest.raises(TypeError):
        ProjectAPIHandler()


class _Handler(ProjectAPIHandler):
    def server_info_query(self, tvm_version):
        return server.ServerInfo("p", True, "", [ProjectOption("v", choices=[True, False], help="")])

    def generate_project(self, *args):
        return None

    def build(self, options):
        return options

    def flash(self, options):
        return None

    def open_transport(self, options):
        return server.TransportTimeouts(0, 0, 0)

    def close_transport(self):
        return None

    def read_transport(self, n, timeout_sec):
        return b"\0" * n

    def write_transport(self, data, timeout_sec):
        return len(data)


def test_in_process_server_over_file_objects():
    requests = (
        b'{"jsonrpc": "2.0", "method": "build", "params": {"options": {"a": 1}}, "id": 1}\r\n'
        b'{"jsonrpc": "2.0", "method": "write_transport", "params": {"data": "Xk~0{Zv", "timeout_sec": null}, "id": 2}\r'
        b'{"jsonrpc": "2.0", "method": "read_transport", "params": {"n": 4, "timeout_sec": null}, "id": 3}'
    )
    out = io.BytesIO()
    server.ProjectAPIServer(io.BytesIO(requests), out, _Handler()).serve_forever()
    assert out.getvalue() == (
        b'{"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}\n'
        b'{"jsonrpc": "2.0", "id": 2, "result": null}\n'  # the handler's 5 is dropped, as TVM does
        b'{"jsonrpc": "2.0", "id": 3, "result": {"data": "00000"}}\n'
    )


def test_in_process_server_over_text_files():
    out = io.StringIO()
    inp = io.StringIO('{"jsonrpc": "2.0", "method": "flash", "params": {"options": {}}, "id": "t"}\n[]\n')
    srv = server.ProjectAPIServer(inp, out, _Handler())
    assert srv.serve_one_request() is True
    assert srv.serve_one_request() is False  # invalid request: reply, then stop
    assert out.getvalue() == (
        '{"jsonrpc": "2.0", "id": "t", "result": null}\n'
        '{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "request: want dict; got []", "data": null}}\n'
    )


def test_broken_reply_pipe_stops_quietly():
    class Gone(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            raise BrokenPipeError()

    srv = server.ProjectAPIServer(io.BytesIO(b'{"jsonrpc": "2.0", "method": "flash", "params": {"options": {}}, "id": 1}\n'),
                                  Gone(), _Handler())
    assert srv.serve_one_request() is False


def test_default_cmsis_path_comes_from_the_environment_when_called(monkeypatch):
    monkeypatch.delenv("CMSIS_PATH", raising=False)
    by_name = {o.name: o for o in server.default_project_options()}
    assert by_name["cmsis_path"].default is None
    monkeypatch.setenv("CMSIS_PATH", "/opt/cmsis")
    by_name = {o.name: o for o in server.default_project_options()}
    assert by_name["cmsis_path"].default == "/opt/cmsis"
