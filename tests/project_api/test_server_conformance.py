"""Byte-for-byte wire conformance of server.py (spec sections 1-10), over real pipes.

Each test runs a real server subprocess (tests/project_api/servers/quirk_server.py or
echo_server.py) and compares the RAW reply line with the exact line TVM's server writes.
Replies that carry a Python traceback are compared with everything but the traceback text
literal, and the traceback is checked on its own.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

SERVERS = Path(__file__).resolve().parent / "servers"

QUIRK = SERVERS / "quirk_server.py"
ECHO = SERVERS / "echo_server.py"

ALL_METHODS = '["generate_project", "build", "flash", "open_transport"]'


@pytest.fixture
def quirk(spawn_server):
    return spawn_server(QUIRK)


def req(method, params, request_id=1):
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})


def build(options, request_id=1):
    return req("build", {"options": options}, request_id)


def split_traceback(raw: bytes, prefix: bytes, suffix: bytes = b"}}}\n") -> str:
    """Assert raw == prefix + <JSON string> + suffix and return the decoded traceback."""
    assert raw.startswith(prefix), raw
    assert raw.endswith(suffix), raw
    encoded = raw[len(prefix):len(raw) - len(suffix)]
    traceback = json.loads(encoded)
    assert json.dumps(traceback).encode() == encoded  # default escaping, no raw CR/LF
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert "# <--- Outermost server-side stack frame" in traceback
    return traceback


# ---------------------------------------------------------------------------------------------
# Success replies
# ---------------------------------------------------------------------------------------------
def test_server_info_query_key_order_and_v08_options_as_seven_keys(quirk):
    raw = quirk.request(req("server_info_query", {"tvm_version": "0.18.0"}))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 1, "result": {"platform_name": "quirk", "is_template": true, '
        b'"model_library_format_path": "", "project_options": ['
        b'{"name": "verbose", "choices": [true, false], "default": null, "type": "bool", '
        b'"required": null, "optional": ' + ALL_METHODS.encode() + b', "help": "v0.8 bool"}, '
        b'{"name": "kind", "choices": ["a", "b"], "default": null, "type": "str", '
        b'"required": null, "optional": ' + ALL_METHODS.encode() + b', "help": "v0.8 str"}, '
        b'{"name": "count", "choices": [1, 2, 3], "default": null, "type": "int", '
        b'"required": null, "optional": ' + ALL_METHODS.encode() + b', "help": "v0.8 int"}, '
        b'{"name": "free", "choices": null, "default": null, "type": "str", '
        b'"required": null, "optional": ' + ALL_METHODS.encode() + b', "help": "v0.8 no choices"}, '
        b'{"name": "board", "choices": ["x"], "default": null, "type": "str", '
        b'"required": ["generate_project"], "optional": ["flash", "open_transport"], "help": "v0.9"}, '
        b'{"name": "size", "choices": null, "default": 5, "type": "int", '
        b'"required": null, "optional": ["build"], "help": "v0.9 int"}], '
        b'"protocol_version": 1}}\n'
    )


@pytest.mark.parametrize("tvm_version, mlf", [("path", b'"/abs/model.tar"'), ("none", b"null")])
def test_model_library_format_path_passes_through(quirk, tvm_version, mlf):
    raw = quirk.request(req("server_info_query", {"tvm_version": tvm_version}))
    assert raw.startswith(
        b'{"jsonrpc": "2.0", "id": 1, "result": {"platform_name": "quirk", "is_template": true, '
        b'"model_library_format_path": ' + mlf + b', "project_options": [')
    assert raw.endswith(b'], "protocol_version": 1}}\n')


def test_server_info_protocol_version_from_handler_is_kept(quirk):
    raw = quirk.request(req("server_info_query", {"tvm_version": "mapping"}))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 1, "result": {"platform_name": "quirk", "is_template": false, '
        b'"model_library_format_path": null, "project_options": [{"name": "m", "choices": null, '
        b'"default": null, "type": "int", "required": ["build"], "optional": null, "help": ""}], '
        b'"protocol_version": 7}}\n'
    )


def test_echo_server_info(spawn_server):
    raw = spawn_server(ECHO).request(req("server_info_query", {"tvm_version": "0.13.dev0"}, 7))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 7, "result": {"platform_name": "echo", "is_template": true, '
        b'"model_library_format_path": "", "project_options": ['
        b'{"name": "project_type", "choices": ["host_driven", "echo"], "default": null, "type": "str", '
        b'"required": ["generate_project"], "optional": null, "help": "Kind of project."}, '
        b'{"name": "verbose", "choices": null, "default": false, "type": "bool", "required": null, '
        b'"optional": ["generate_project", "build"], "help": "Chatty build."}, '
        b'{"name": "workspace_size_bytes", "choices": null, "default": 2097152, "type": "int", '
        b'"required": null, "optional": ["generate_project"], "help": "Arena size in bytes."}, '
        b'{"name": "legacy_flag", "choices": [true, false], "default": null, "type": "bool", '
        b'"required": null, "optional": ' + ALL_METHODS.encode() + b', "help": "A TVM v0.8-style option."}], '
        b'"protocol_version": 1}}\n'
    )


def test_generate_project_gets_paths_and_options(quirk):
    raw = quirk.request(req("generate_project", {
        "model_library_format_path": "/m/model.tar", "standalone_crt_dir": "rel/crt",
        "project_dir": "/p", "options": {"board": "x"}}, 3))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 3, "result": {"types": ["PosixPath", "PosixPath", "PosixPath"], '
        b'"paths": ["/m/model.tar", "rel/crt", "/p"], "options": {"board": "x"}}}\n'
    )


def test_open_transport_result_nesting(quirk):
    raw = quirk.request(req("open_transport", {"options": {}}, 4))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 4, "result": {"timeouts": {"session_start_retry_timeout_sec": 0.5, '
        b'"session_start_timeout_sec": 10, "session_established_timeout_sec": 0}}}\n'
    )


def test_open_transport_mapping_is_put_in_field_order(quirk):
    raw = quirk.request(req("open_transport", {"options": {"timeouts": "mapping"}}, 4))
    assert raw == (
        b'{"jsonrpc": "2.0", "id": 4, "result": {"timeouts": {"session_start_retry_timeout_sec": 1, '
        b'"session_start_timeout_sec": 2, "session_established_timeout_sec": 3}}}\n'
    )


def test_open_transport_returning_none_is_an_error(quirk):
    raw = quirk.request(req("open_transport", {"options": {"timeouts": "none"}}, 5))
    tb = split_traceback(raw, b'{"jsonrpc": "2.0", "id": 5, "error": {"code": -32000, '
                              b'"message": "calling method open_transport", "data": {"traceback": ')
    assert "TypeError: open_transport must return TransportTimeouts; got NoneType" in tb
    assert quirk.alive()


def test_close_transport_result_null(quirk):
    assert quirk.request(req("close_transport", {}, 9)) == b'{"jsonrpc": "2.0", "id": 9, "result": null}\n'


@pytest.mark.parametrize("n, data", [
    (1, "00"),
    (4, "009C6"),
    (8, "009C61O)~M"),
    (300, base64.b85encode(bytes(range(256)) + bytes(range(44))).decode()),
    (5000, base64.b85encode(bytes(range(256)) * 19 + bytes(range(136))).decode()),
])
def test_read_transport_base85(quirk, n, data):
    raw = quirk.request(req("read_transport", {"n": n, "timeout_sec": None}, 2))
    assert raw == b'{"jsonrpc": "2.0", "id": 2, "result": {"data": "' + data.encode() + b'"}}\n'


def test_read_transport_non_bytes_is_an_error(quirk):
    raw = quirk.request(req("read_transport", {"n": 0, "timeout_sec": 0}, 2))
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, '
                         b'"message": "calling method read_transport", "data": {"traceback": ')


@pytest.mark.parametrize("data, result", [
    ("", b'{"hex": "", "timeout_sec": 0.25}'),
    ("00", b'{"hex": "00", "timeout_sec": 0.25}'),
    ("00000", b'{"hex": "00000000", "timeout_sec": 0.25}'),
    ("Xk~0{Zv", b'{"hex": "68656c6c6f", "timeout_sec": 0.25}'),
    ("W^ZpB", b'{"hex": "666f6f1b", "timeout_sec": 0.25}'),
    ("|NsC0", b'{"hex": "ffffffff", "timeout_sec": 0.25}'),
    ("009C61O)~M", b'{"hex": "0001020304050607", "timeout_sec": 0.25}'),
])
def test_write_transport_base85_vectors(quirk, data, result):
    # The handler returns a value, but TVM's server replies null for write_transport: so do we.
    raw = quirk.request(req("write_transport", {"data": data, "timeout_sec": 0.25}, 6))
    assert raw == b'{"jsonrpc": "2.0", "id": 6, "result": null}\n'
    raw = quirk.request(req("flash", {"options": {"last_write": True}}, 7))
    assert raw == b'{"jsonrpc": "2.0", "id": 7, "result": ' + result + b"}\n"


@pytest.mark.parametrize("data", ['"~~~~~"', '"ab cd"', "12", "null"])
def test_write_transport_bad_data_is_a_server_error(quirk, data):
    line = '{"jsonrpc": "2.0", "method": "write_transport", "params": {"data": %s, "timeout_sec": null}, "id": 6}' % data
    raw = quirk.request(line)
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": 6, "error": {"code": -32000, '
                         b'"message": "calling method write_transport", "data": {"traceback": ')
    assert quirk.alive()


def test_write_transport_returns_byte_count_like_arduino(spawn_server, tmp_path):
    # The echo server returns null; a handler's int passes through unchanged (Arduino does this).
    echo = spawn_server(ECHO)
    assert echo.request(req("open_transport", {"options": {}}, 1)).startswith(b'{"jsonrpc": "2.0", "id": 1, "result": {"timeouts": ')
    assert echo.request(req("write_transport", {"data": "Xk~0{Zv", "timeout_sec": None}, 2)) == (
        b'{"jsonrpc": "2.0", "id": 2, "result": null}\n')
    assert echo.request(req("read_transport", {"n": 3, "timeout_sec": 0}, 3)) == (
        b'{"jsonrpc": "2.0", "id": 3, "result": {"data": "' + base64.b85encode(b"hel") + b'"}}\n')
    assert echo.request(req("read_transport", {"n": 99, "timeout_sec": 0}, 4)) == (
        b'{"jsonrpc": "2.0", "id": 4, "result": {"data": "' + base64.b85encode(b"lo") + b'"}}\n')
    split_traceback(echo.request(req("read_transport", {"n": 1, "timeout_sec": 0}, 5)),
                    b'{"jsonrpc": "2.0", "id": 5, "error": {"code": -32000, "message": "IoTimeoutError", '
                    b'"data": {"traceback": ')
    assert echo.request(req("close_transport", {}, 6)) == b'{"jsonrpc": "2.0", "id": 6, "result": null}\n'
    split_traceback(echo.request(req("read_transport", {"n": 1, "timeout_sec": 0}, 7)),
                    b'{"jsonrpc": "2.0", "id": 7, "error": {"code": -32000, "message": "TransportClosedError", '
                    b'"data": {"traceback": ')


def test_handler_result_passes_through_with_escaping(quirk):
    raw = quirk.request(build({"action": "value", "value": ["\u00e9\u2028\r\n\t\"\\", 1.5, None, True]}))
    assert raw == b'{"jsonrpc": "2.0", "id": 1, "result": ["\\u00e9\\u2028\\r\\n\\t\\"\\\\", 1.5, null, true]}\n'
    assert raw.count(b"\n") == 1 and b"\r" not in raw


def test_compact_request_without_spaces_is_accepted(quirk):
    raw = quirk.request('{"jsonrpc":"2.0","method":"flash","params":{"options":{"a":1}},"id":11}')
    assert raw == b'{"jsonrpc": "2.0", "id": 11, "result": {"a": 1}}\n'


def test_nan_in_request_is_accepted_like_python_json(quirk):
    raw = quirk.request('{"jsonrpc": "2.0", "method": "flash", "params": {"options": {"a": NaN}}, "id": 1}')
    # TVM would echo the non-JSON token NaN; ours reports it instead (difference 6 in the docstring).
    tb = split_traceback(raw, b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, '
                              b'"message": "calling method flash", "data": {"traceback": ')
    assert "ValueError: Out of range float values are not JSON compliant" in tb
    assert quirk.alive()


def test_handler_output_on_stdout_and_stderr_does_not_touch_the_protocol(quirk):
    assert quirk.request(build({"action": "stdout"}, 1)) == b'{"jsonrpc": "2.0", "id": 1, "result": null}\n'
    assert quirk.request(build({"action": "stderr"}, 2)) == b'{"jsonrpc": "2.0", "id": 2, "result": null}\n'
    quirk.close()
    assert "noise on stderr" in quirk.stderr_text()


# ---------------------------------------------------------------------------------------------
# ids
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("id_json", [
    "1", "0", "-5", "true", "false", '"abc"', '"\\u00e9"', "null", "123456789012345678901234567890",
])
def test_ids_are_echoed(quirk, id_json):
    raw = quirk.request('{"jsonrpc": "2.0", "method": "close_transport", "params": {}, "id": %s}' % id_json)
    expected_id = json.dumps(json.loads(id_json)).encode()
    assert raw == b'{"jsonrpc": "2.0", "id": ' + expected_id + b', "result": null}\n'
    assert quirk.alive()


def test_missing_id_runs_the_method_then_replies_error_with_null_id(quirk):
    raw = quirk.request('{"jsonrpc": "2.0", "method": "flash", "params": {"options": {}}}')
    tb = split_traceback(raw, b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32000, '
                              b'"message": "calling method flash", "data": {"traceback": ')
    assert "notifications" in tb
    # Still serving.
    assert quirk.request(req("close_transport", {}, 2)) == b'{"jsonrpc": "2.0", "id": 2, "result": null}\n'


def test_missing_id_with_failing_method_reports_the_failure(quirk):
    raw = quirk.request('{"jsonrpc": "2.0", "method": "nope", "params": {}}')
    assert raw == b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": "nope: no such method", "data": null}}\n'
    assert quirk.alive()


# ---------------------------------------------------------------------------------------------
# -32600: invalid request -> id null, then exit 0
# ---------------------------------------------------------------------------------------------
INVALID = [
    ("[]", "request: want dict; got []"),
    ('"x"', "request: want dict; got 'x'"),
    ("5", "request: want dict; got 5"),
    ("null", "request: want dict; got None"),
    ('{"method": "build", "params": {}, "id": 1}', 'request["jsonrpc"]: want "2.0"; got None'),
    ('{"jsonrpc": "1.0", "method": "build", "params": {}, "id": 1}', 'request["jsonrpc"]: want "2.0"; got \'1.0\''),
    ('{"jsonrpc": 2.0, "method": "build", "params": {}, "id": 1}', 'request["jsonrpc"]: want "2.0"; got 2.0'),
    ('{"jsonrpc": "2.0", "params": {}, "id": 1}', 'request["method"]: want str; got None'),
    ('{"jsonrpc": "2.0", "method": 5, "params": {}, "id": 1}', 'request["method"]: want str; got 5'),
    ('{"jsonrpc": "2.0", "method": "a-b", "params": {}, "id": 1}',
     'request["method"]: should match regex ^[a-zA-Z0-9_]+$; got \'a-b\''),
    ('{"jsonrpc": "2.0", "method": "", "params": {}, "id": 1}',
     'request["method"]: should match regex ^[a-zA-Z0-9_]+$; got \'\''),
    ('{"jsonrpc": "2.0", "method": "build", "id": 1}', 'request["params"]: want dict; got <class \'NoneType\'>'),
    ('{"jsonrpc": "2.0", "method": "build", "params": [{}], "id": 1}', 'request["params"]: want dict; got <class \'list\'>'),
    ('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": 7.5}',
     'request["id"]: want str, number, null; got 7.5'),
    ('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": 1.0}',
     'request["id"]: want str, number, null; got 1.0'),
    ('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": 1e3}',
     'request["id"]: want str, number, null; got 1000.0'),
    ('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": [1]}',
     'request["id"]: want str, number, null; got [1]'),
    ('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": {}}',
     'request["id"]: want str, number, null; got {}'),
]


@pytest.mark.parametrize("line, message", INVALID)
def test_invalid_request_replies_32600_with_null_id_then_exits(quirk, line, message):
    raw = quirk.request(line)
    expected = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message, "data": None}}
    assert raw == (json.dumps(expected) + "\n").encode()
    assert raw.startswith(b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "')
    assert raw.endswith(b'", "data": null}}\n')
    assert quirk.expect_exit() == 0


def test_float_id_literal_line(quirk):
    raw = quirk.request('{"jsonrpc": "2.0", "method": "build", "params": {"options": {}}, "id": 7.5}')
    assert raw == (b'{"jsonrpc": "2.0", "id": null, "error": {"code": -32600, '
                   b'"message": "request[\\"id\\"]: want str, number, null; got 7.5", "data": null}}\n')
    assert quirk.expect_exit() == 0


# ---------------------------------------------------------------------------------------------
# No reply: invalid JSON / UTF-8, empty line, EOF
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line", [b"{", b"not json", b"", b"{'a': 1}", b'{"a": 1', b"\xff\xfe{}", b'"\xc3"',
                                  b"\xef\xbb\xbf{}"])
def test_invalid_json_gets_no_reply_and_exit_0(quirk, line):
    quirk.send(line + b"\n")
    assert quirk.expect_exit() == 0
    assert "not JSON" in quirk.stderr_text()


def test_eof_exits_0(quirk):
    assert quirk.request(req("close_transport", {}, 1)) == b'{"jsonrpc": "2.0", "id": 1, "result": null}\n'
    quirk.close()
    assert quirk.proc.returncode == 0


def test_last_request_without_newline_is_served_before_eof(spawn_server):
    server = spawn_server(QUIRK)
    server.send(req("close_transport", {}, 1).encode())
    server.close_input()
    assert server.read_line() == b'{"jsonrpc": "2.0", "id": 1, "result": null}\n'
    assert server.expect_exit() == 0


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_universal_newlines_each_end_one_request(quirk, ending):
    # A bare CR ends the request at once (no hang), and CR LF is one line end, not two
    # (an empty second line would be invalid JSON and stop the server).
    quirk.send(req("close_transport", {}, 1).encode() + ending)
    assert quirk.read_line() == b'{"jsonrpc": "2.0", "id": 1, "result": null}\n'
    quirk.send(b"\n" if ending == b"\r" else b"")  # LF arriving later after a CR is still the same line end
    quirk.send(req("close_transport", {}, 2).encode() + ending)
    assert quirk.read_line() == b'{"jsonrpc": "2.0", "id": 2, "result": null}\n'
    assert quirk.alive()


# ---------------------------------------------------------------------------------------------
# -32601 / -32602
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["nope", "__init__", "register", "__subclasshook__", "_call_build",
                                    "serve_forever", "connect_transport", "BUILD"])
def test_unknown_method_32601(quirk, method):
    raw = quirk.request(req(method, {}, 3))
    assert raw == (b'{"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "' + method.encode()
                   + b': no such method", "data": null}}\n')
    assert quirk.alive()


def test_method_name_with_trailing_newline_passes_the_regex_then_32601(quirk):
    raw = quirk.request(req("build\n", {}, 3))
    assert raw == b'{"jsonrpc": "2.0", "id": 3, "error": {"code": -32601, "message": "build\\n: no such method", "data": null}}\n'
    assert quirk.alive()


@pytest.mark.parametrize("method, params, message", [
    ("server_info_query", {}, "method server_info_query: parameter tvm_version not given"),
    ("generate_project", {"options": {}}, "method generate_project: parameter model_library_format_path not given"),
    ("generate_project", {"model_library_format_path": "a", "standalone_crt_dir": "b", "options": {}},
     "method generate_project: parameter project_dir not given"),
    ("build", {}, "method build: parameter options not given"),
    ("flash", {"x": 1}, "method flash: parameter options not given"),
    ("open_transport", {}, "method open_transport: parameter options not given"),
    ("read_transport", {"timeout_sec": None}, "method read_transport: parameter n not given"),
    ("read_transport", {"n": 1}, "method read_transport: parameter timeout_sec not given"),
    ("write_transport", {"timeout_sec": None}, "method write_transport: parameter data not given"),
    ("server_info_query", {"tvm_version": "1", "b": 1, "a": 2}, "server_info_query: extra parameters: b, a"),
    ("close_transport", {"x": None}, "close_transport: extra parameters: x"),
    ("build", {"options": {}, "verbose": True}, "build: extra parameters: verbose"),
    ("build", {"options": None, "verbose": True},
     "method build: parameter options: want <class 'dict'>, got <class 'NoneType'>"),
    ("build", {"options": []}, "method build: parameter options: want <class 'dict'>, got <class 'list'>"),
    ("build", {"options": "x"}, "method build: parameter options: want <class 'dict'>, got <class 'str'>"),
    ("build", {"options": 1}, "method build: parameter options: want <class 'dict'>, got <class 'int'>"),
    ("build", {"options": 1.5}, "method build: parameter options: want <class 'dict'>, got <class 'float'>"),
    ("flash", {"options": True}, "method flash: parameter options: want <class 'dict'>, got <class 'bool'>"),
])
def test_invalid_params_32602(quirk, method, params, message):
    raw = quirk.request(req(method, params, 8))
    expected = b'{"jsonrpc": "2.0", "id": 8, "error": {"code": -32602, "message": ' + json.dumps(message).encode() + b', "data": null}}\n'
    assert raw == expected
    assert quirk.alive()


def test_32602_literal_line(quirk):
    raw = quirk.request(build(None, 2))
    assert raw == (b'{"jsonrpc": "2.0", "id": 2, "error": {"code": -32602, "message": "method build: parameter '
                   b"options: want <class 'dict'>, got <class 'NoneType'>\", \"data\": null}}\n")


def test_options_of_other_methods_are_not_type_checked(quirk):
    # open_transport has a server-side wrapper in TVM, so null reaches the handler, which fails.
    raw = quirk.request(req("open_transport", {"options": None}, 2))
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, '
                         b'"message": "calling method open_transport", "data": {"traceback": ')


# ---------------------------------------------------------------------------------------------
# -32000: exceptions raised by the handler
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("action, message", [
    ("value-error", "calling method build"),
    ("io-timeout", "IoTimeoutError"),
    ("transport-closed", "TransportClosedError"),
    ("unsupported", "UnsupportedTVMVersionError"),
    ("server-error", "free-form message"),
    ("jsonrpc-bad-code", "odd code"),
    ("nan", "calling method build"),
    ("inf", "calling method build"),
    ("path", "calling method build"),
    ("odd", "calling method build"),
    ("server-error-bad-data", "calling method build"),
])
def test_handler_errors_32000(quirk, action, message):
    raw = quirk.request(build({"action": action}, 4))
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": 4, "error": {"code": -32000, "message": "'
                    + message.encode() + b'", "data": {"traceback": ')
    assert quirk.alive()


def test_server_error_data_keeps_its_keys_and_gains_traceback(quirk):
    raw = quirk.request(build({"action": "server-error-data"}, 4))
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": 4, "error": {"code": -32000, "message": "with data", '
                         b'"data": {"k": 1, "traceback": ')


def test_server_error_with_non_object_data_keeps_it(quirk):
    raw = quirk.request(build({"action": "server-error-str-data"}, 4))
    assert raw == b'{"jsonrpc": "2.0", "id": 4, "error": {"code": -32000, "message": "str data", "data": "note"}}\n'


def test_jsonrpc_error_from_handler_is_sent_as_is(quirk):
    raw = quirk.request(build({"action": "jsonrpc-error"}, 4))
    assert raw == (b'{"jsonrpc": "2.0", "id": 4, "error": {"code": -32602, "message": "handler says no", '
                   b'"data": {"why": "test"}}}\n')


def test_typed_error_from_server_info_query(quirk):
    raw = quirk.request(req("server_info_query", {"tvm_version": "unsupported"}, "q"))
    split_traceback(raw, b'{"jsonrpc": "2.0", "id": "q", "error": {"code": -32000, '
                         b'"message": "UnsupportedTVMVersionError", "data": {"traceback": ')


def test_traceback_marks_the_first_server_frame(quirk):
    raw = quirk.request(build({"action": "value-error"}, 4))
    tb = json.loads(raw)["error"]["data"]["traceback"]
    lines = tb.splitlines()
    assert lines[1].startswith('  File "') and lines[1].endswith("# <--- Outermost server-side stack frame")
    assert tb.count("# <--- Outermost server-side stack frame") == 1
    assert lines[-1] == "ValueError: plain failure"
