"""Property-based fuzzing of one long-lived server process over real pipes.

Random request lines (well-formed requests for every method, broken envelopes, any JSON, and
garbage bytes) go to a real quirk_server.py process. For every line the server must: never hang
(select-based read with a generous hang guard), answer with exactly one valid single-line JSON
reply in TVM's envelope when the spec says it answers, and exit (status 0) exactly where the spec
says it exits -- after which the test starts a new server.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVERS = Path(__file__).resolve().parent / "servers"
QUIRK = SERVERS / "quirk_server.py"
METHOD_RE = re.compile(r"^[a-zA-Z0-9_]+$")
ACTIONS = ["value-error", "server-error", "server-error-data", "server-error-str-data",
           "server-error-bad-data", "io-timeout", "transport-closed", "unsupported", "jsonrpc-error",
           "jsonrpc-bad-code", "nan", "inf", "path", "odd", "value", "stderr", "stdout", "missing-action"]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
timeouts = st.none() | st.floats(min_value=0, max_value=1) | json_values
options = st.dictionaries(st.text(max_size=6), json_values, max_size=3)

params_by_method = {
    "server_info_query": st.fixed_dictionaries(
        {"tvm_version": st.sampled_from(["0.18.0", "unsupported", "mapping", "path", "none"]) | st.text(max_size=6)}),
    "generate_project": st.fixed_dictionaries({
        "model_library_format_path": st.text(max_size=8), "standalone_crt_dir": st.text(max_size=8),
        "project_dir": st.text(max_size=8), "options": options}),
    "build": st.fixed_dictionaries({"options": st.fixed_dictionaries(
        {"action": st.sampled_from(ACTIONS)}, optional={"value": json_values})}) | st.fixed_dictionaries({"options": json_values}),
    "flash": st.fixed_dictionaries({"options": options | json_values}),
    "open_transport": st.fixed_dictionaries({"options": st.fixed_dictionaries(
        {}, optional={"timeouts": st.sampled_from(["none", "mapping", "other"])})}),
    "close_transport": st.just({}),
    "read_transport": st.fixed_dictionaries({"n": st.integers(-2, 3000) | json_values, "timeout_sec": timeouts}),
    "write_transport": st.fixed_dictionaries({
        "data": st.binary(max_size=64).map(lambda b: base64.b85encode(b).decode()) | st.text(max_size=8) | json_values,
        "timeout_sec": timeouts}),
}
other_methods = st.sampled_from(["nope", "__init__", "register", "__subclasshook__", "build\n", "a-b", "",
                                 "_call_build", "connect_transport"]) | st.text(max_size=10)


@st.composite
def well_formed(draw):
    """A request TVM's client could send (or almost): method and params drawn to match."""
    if draw(st.integers(0, 9)) < 8:
        method = draw(st.sampled_from(sorted(params_by_method)))
        params = draw(params_by_method[method])
        if draw(st.integers(0, 9)) == 0:  # an extra or a missing parameter
            if params and draw(st.booleans()):
                params = dict(params)
                params.pop(draw(st.sampled_from(sorted(params))))
            else:
                params = dict(params, **{draw(st.text(min_size=1, max_size=4)): 1})
    else:
        method = draw(other_methods)
        params = draw(options)
    request = {"jsonrpc": "2.0", "method": method, "params": params}
    id_choice = draw(st.integers(0, 19))
    if id_choice < 14:
        request["id"] = draw(st.integers(-10, 10 ** 20))
    elif id_choice < 17:
        request["id"] = draw(st.text(max_size=5) | st.booleans() | st.none())
    elif id_choice < 18:
        request["id"] = draw(st.floats() | json_values)
    # else: no id at all
    return request


@st.composite
def broken_envelope(draw):
    request = draw(well_formed())
    key = draw(st.sampled_from(["jsonrpc", "method", "params", "id"]))
    if draw(st.booleans()):
        request.pop(key, None)
    else:
        request[key] = draw(json_values)
    return request


def encode(obj, draw_style):
    separators, ensure_ascii = draw_style
    return json.dumps(obj, separators=separators, ensure_ascii=ensure_ascii).encode("utf-8")


styles = st.tuples(st.sampled_from([(", ", ": "), (",", ":")]), st.booleans())
request_lines = st.one_of(
    st.tuples(well_formed(), styles).map(lambda t: encode(*t)),
    st.tuples(broken_envelope(), styles).map(lambda t: encode(*t)),
    st.tuples(json_values, styles).map(lambda t: encode(*t)),
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
).map(lambda b: b.replace(b"\r", b" ").replace(b"\n", b" "))


def expectation(line: bytes):
    """What the spec says happens: ("exit", None) | ("reply-exit", None) | ("reply", id)."""
    try:
        request = json.loads(line.decode("utf-8"))
    except Exception:
        return "exit", None
    if (not isinstance(request, dict) or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str) or not METHOD_RE.match(request["method"])
            or not isinstance(request.get("params"), dict)
            or not isinstance(request.get("id"), (str, int, type(None)))):
        return "reply-exit", None
    return "reply", request.get("id")


def _reject_constant(name):
    raise ValueError(f"reply contains the non-JSON token {name}")


def check_reply(raw: bytes, expected_id, invalid_request: bool) -> None:
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1 and b"\r" not in raw, raw
    assert max(raw) < 128, "json.dumps default escapes everything non-ASCII"
    reply = json.loads(raw, parse_constant=_reject_constant)
    assert isinstance(reply, dict)
    keys = list(reply)
    assert keys in (["jsonrpc", "id", "result"], ["jsonrpc", "id", "error"]), keys
    assert reply["jsonrpc"] == "2.0"
    assert json.dumps(reply["id"]) == json.dumps(expected_id)
    assert json.dumps(reply, allow_nan=False).encode() + b"\n" == raw  # exactly json.dumps' layout
    if "error" in reply:
        error = reply["error"]
        assert list(error) == ["code", "message", "data"]
        assert isinstance(error["message"], str)
        if invalid_request:
            assert error["code"] == -32600 and error["data"] is None
        else:
            assert error["code"] in (-32601, -32602, -32000), error
    else:
        assert not invalid_request


def test_fuzz_long_lived_server(spawn_server, tmp_path):
    state = {"server": None, "restarts": 0, "replies": 0}

    def server():
        if state["server"] is None:
            state["server"] = spawn_server(QUIRK, cwd=tmp_path)
            state["restarts"] += 1
        return state["server"]

    def exited():
        srv, state["server"] = state["server"], None
        assert srv.expect_exit() == 0
        srv.close()

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(line=request_lines)
    def check(line):
        kind, expected_id = expectation(line)
        srv = server()
        srv.send(line + b"\n")
        if kind == "exit":
            exited()
            return
        raw = srv.read_line()  # the hang guard fails the test if nothing comes back
        assert raw, f"server exited instead of replying to {line!r}"
        check_reply(raw, expected_id, invalid_request=(kind == "reply-exit"))
        state["replies"] += 1
        if kind == "reply-exit":
            exited()

    check()
    # The last server (if any) is still alive and serving.
    assert server().request('{"jsonrpc": "2.0", "method": "close_transport", "params": {}, "id": 1}') == (
        b'{"jsonrpc": "2.0", "id": 1, "result": null}\n')
    assert state["replies"] > 50 and state["restarts"] > 2
