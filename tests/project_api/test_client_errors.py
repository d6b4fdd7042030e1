"""describe_wire_error: the one line a person sees for an error a real server sent."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from microtvm_registry.project_api import server
from microtvm_registry.project_api.client import describe_wire_error, instantiate_from_dir

QUIRK = Path(__file__).parent / "servers" / "quirk_server.py"


@pytest.fixture
def quirk_client(tmp_path):
    shutil.copy2(QUIRK, tmp_path / "microtvm_api_server.py")
    client = instantiate_from_dir(tmp_path, timeout=30)
    yield client
    client.close()


def _failure(client, action):
    with pytest.raises(server.JSONRPCError) as info:
        client.build({"action": action})
    return info.value


def test_generic_failure_names_the_exception_the_template_raised(quirk_client):
    err = _failure(quirk_client, "value-error")
    assert "calling method build" in str(err)  # TVM's str() is kept for API users
    assert describe_wire_error(err) == (
        "the template's server failed in build: ValueError: plain failure (run with -v for its traceback)"
    )


def test_free_form_and_typed_server_errors_keep_their_message(quirk_client):
    assert describe_wire_error(_failure(quirk_client, "server-error")) == (
        "the template's server failed in build: free-form message"
    )
    typed = _failure(quirk_client, "io-timeout")
    assert isinstance(typed, server.IoTimeoutError)
    assert describe_wire_error(typed) == "the template's server failed in build: IoTimeoutError"


def test_protocol_errors_say_what_was_refused(quirk_client):
    with pytest.raises(server.JSONRPCError) as info:
        quirk_client._request_reply("build", {"options": None})  # a peer that sends a bad call
    assert describe_wire_error(info.value) == (
        "the template's server refused build: JSON-RPC error -32602: "
        "method build: parameter options: want <class 'dict'>, got <class 'NoneType'>"
    )


def test_other_errors_give_their_first_line():
    assert describe_wire_error(ValueError("first\nsecond")) == "first"
    assert describe_wire_error(KeyError()) == "KeyError"
