"""Real misbehaving servers: the client reports each fault clearly and never leaks."""
from __future__ import annotations

import gc
import os
import time
import signal

import pytest

from fault_servers import children_of, fault_env, make_server_dir, open_fds
from microtvm_registry import procs
from microtvm_registry.project_api import client as C


@pytest.fixture
def srv(tmp_path):
    return make_server_dir(tmp_path / "srv")


def start(folder, mode, timeout=30.0, after=0):
    return C.instantiate_from_dir(folder, env=fault_env(mode, after=after), timeout=timeout)


@pytest.fixture(autouse=True)
def no_leaks():
    """The client leaks neither children nor descriptors. A leak is a descriptor opened during the
    test and still open after it; one closed meanwhile is not (another thread's or an inherited
    one, e.g. a pipe the parent of pytest passed down), so only the first kind is counted, after
    the garbage of earlier tests is collected and any close still in flight has had a moment."""
    gc.collect()
    fds = set(open_fds())
    kids = children_of(os.getpid())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        gc.collect()
        leaked = set(open_fds()) - fds
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert children_of(os.getpid()) == kids
    assert not leaked, f"descriptors left open: {_targets(leaked)}"


def _targets(fds):
    """What each descriptor points at, for a failure message that says what leaked."""
    out = {}
    for fd in sorted(fds):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            out[fd] = "?"
    return out


def test_crash_mid_call(srv):
    client = start(srv, "crash", after=1)
    assert client.server_info_query()["platform_name"] == "fault"
    with pytest.raises(C.ServerDiedError) as info:
        client.build({})
    msg = str(info.value)
    assert "died while handling build" in msg and "exited with status 3" in msg and str(srv) in msg
    assert "\n" not in msg
    assert isinstance(info.value, C.ConnectionShutdownError)
    assert client.is_shutdown and client.process.returncode == 3


def test_killed_by_signal(srv):
    with start(srv, "sigkill") as client:
        with pytest.raises(C.ServerDiedError, match="killed by SIGKILL"):
            client.flash({})


def test_exit_at_start(srv):
    with start(srv, "exit_at_start") as client:
        with pytest.raises(C.ServerDiedError, match="server_info_query.*exited with status 5"):
            client.server_info_query()


def test_partial_reply_then_exit(srv):
    with start(srv, "partial_then_exit") as client:
        with pytest.raises(C.ServerDiedError, match="status 7"):
            client.build({})


def test_hang_times_out_and_server_is_stopped(srv):
    client = start(srv, "hang", timeout=0.5)
    with pytest.raises(C.ServerTimeoutError) as info:
        client.build({})
    msg = str(info.value)
    assert "did not answer build within 0.5 s" in msg and "was stopped" in msg
    assert client.process.returncode == -signal.SIGTERM
    with pytest.raises(C.ConnectionShutdownError):
        client.build({})


def _gone(pid):
    """No such process, or a zombie waiting for init to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2:].split()[0] == b"Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finding a server's children reads /proc (Linux)")
def test_a_stopped_server_takes_what_it_started_with_it(srv, tmp_path):
    pid_file = tmp_path / "child.pid"
    env = fault_env("hang_with_child")
    env["FAULT_CHILD_PID"] = str(pid_file)
    client = C.instantiate_from_dir(srv, env=env, timeout=1.0)
    with pytest.raises(C.ServerTimeoutError):
        client.build({})
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # a hang guard, not a speed limit
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), f"the server's child {child} outlived it"


def test_hang_ignoring_sigterm_is_killed(srv, monkeypatch):
    monkeypatch.setattr(C, "TERMINATE_GRACE_SEC", 0.3)
    client = start(srv, "hang_unkillable", timeout=0.5)
    with pytest.raises(C.ServerTimeoutError):
        client.server_info_query()
    assert client.process.returncode == -signal.SIGKILL


def test_transport_wait_adds_timeout_sec(srv):
    client = start(srv, "hang", timeout=0.2)
    assert client._wait_for(1.5) == pytest.approx(1.7)
    assert client._wait_for(None) == pytest.approx(0.2)
    with pytest.raises(C.ServerTimeoutError, match="read_transport within 0.45 s"):
        client.read_transport(1, 0.25)


@pytest.mark.parametrize(
    "mode, why",
    [
        ("garbage", "not JSON"),
        ("bad_utf8", "not JSON"),
        ("not_object", "not a JSON object"),
        ("wrong_jsonrpc", "jsonrpc is '1.0'"),
        ("no_result", "neither result nor error"),
        ("no_id", "no id"),
    ],
)
def test_malformed_replies(srv, mode, why):
    client = start(srv, mode)
    with pytest.raises(C.MalformedReplyError) as info:
        client.build({})
    assert why in str(info.value) and "build" in str(info.value)
    assert client.is_shutdown  # the stream cannot be trusted any more


def test_mismatched_id(srv):
    client = start(srv, "bad_id")
    with pytest.raises(C.MismatchedIdError, match="request id 1.*with id 2"):
        client.server_info_query()
    assert client.is_shutdown


def test_null_id_error_is_raised_as_the_error(srv):
    from microtvm_registry.project_api import server

    with start(srv, "null_id") as client:
        with pytest.raises(server.JSONRPCError, match="request: bad"):
            client.build({})
        with pytest.raises(C.ServerDiedError, match="status 0"):
            client.build({})


def test_reply_pipe_closed_but_process_alive(srv, monkeypatch):
    monkeypatch.setattr(C, "SHUTDOWN_GRACE_SEC", 0.2)
    client = start(srv, "close_reply_pipe")
    with pytest.raises(C.ConnectionShutdownError, match="closed its reply pipe") as info:
        client.build({})
    assert not isinstance(info.value, C.ServerDiedError)
    assert client.process.returncode is not None


def test_close_stops_server_that_ignores_eof(srv):
    client = C.instantiate_from_dir(srv, env=fault_env("slow_eof"), timeout=5)
    client.server_info_query()
    client._finalizer.detach()
    assert client._channel.close(grace=0.2) == -signal.SIGTERM


def test_garbage_collected_client_reaps_server(srv):
    client = start(srv, "ok")
    client.server_info_query()
    proc = client.process
    del client
    gc.collect()
    assert proc.returncode == 0


def test_launcher_not_executable(srv):
    launcher = srv / C.SERVER_LAUNCHER
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o644)
    with pytest.raises(C.ProjectAPIServerNotFoundError, match="chmod"):
        C.instantiate_from_dir(srv)


def test_bad_timeout_rejected_before_start(srv):
    with pytest.raises(ValueError):
        C.instantiate_from_dir(srv, timeout=0)


def test_write_to_dead_server(srv):
    client = start(srv, "crash", after=1)
    client.server_info_query()
    with pytest.raises(C.ServerDiedError):
        client.write_transport(b"\x00" * 200000, None)  # more than a pipe buffer


@pytest.mark.slow
def test_500_launches_leave_nothing_behind(tmp_path):
    """A mix of normal and faulty servers; every process reaped, every descriptor closed."""
    srv = make_server_dir(tmp_path / "srv")
    modes = ["ok", "ok", "ok", "crash", "garbage", "exit_at_start", "protocol2", "bad_id", "sigkill", "ok"]
    envs = {m: fault_env(m) for m in modes + ["hang"]}
    outcomes = {}
    for i in range(500):
        mode = "hang" if i % 100 == 99 else modes[i % len(modes)]
        timeout = 0.5 if mode == "hang" else 30.0
        try:
            client = C.instantiate_from_dir(srv, env=envs[mode], timeout=timeout)
            if i % 7 == 0:
                client.server_info_query()
                del client  # left to the garbage collector
                continue
            with client:
                client.server_info_query()
                client.build({})
            outcome = "ok"
        except C.ProjectAPIErrorBase as err:
            outcome = type(err).__name__
        outcomes.setdefault(mode, set()).add(outcome)
    assert outcomes["ok"] == {"ok"}
    assert outcomes["crash"] == {"ServerDiedError"}
    assert outcomes["garbage"] == {"MalformedReplyError"}
    assert outcomes["protocol2"] == {"UnsupportedProtocolVersionError"}
    assert outcomes["bad_id"] == {"MismatchedIdError"}
    assert outcomes["hang"] == {"ServerTimeoutError"}


def test_a_zombie_counts_as_stopped():
    """A process that has exited but is not reaped yet (its parent has not waited, or init in a
    container is slow to) has stopped: the client must not spend its grace period waiting on it."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while True:  # wait, without reaping, until it has exited
            with open(f"/proc/{child.pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert procs.is_running(child.pid) is False
        os.kill(child.pid, 0)  # what the old check asked: it still "exists"
    finally:
        child.wait()
    assert procs.is_running(child.pid) is False
    assert procs.is_running(os.getpid()) is True
