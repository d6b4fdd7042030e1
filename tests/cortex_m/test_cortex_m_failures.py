"""What goes wrong on a board says so in one line, and never leaves QEMU running: a model that
does not fit, a firmware that never answers, QEMU killed mid-session, the server killed."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from registry_support import run_cli
from support.cortex_m import TEMPLATE, qemu_pids, still_running
from microtvm_registry.device.session import Session
from microtvm_registry.errors import BuildError, SessionError
from microtvm_registry.project import GeneratedProject, generate_project
from microtvm_registry.project_api import server

pytestmark = pytest.mark.needs_tvm

SILENT_MAIN = """
/* A firmware of the test's own that boots and never answers. */
int main(void) {
  for (;;) __asm volatile("wfi");
}
"""


def test_a_workspace_larger_than_the_board_s_ram_is_refused_at_create_project(tmp_path, kernels_mlf):
    """Before: accepted, and left to the linker at build."""
    with pytest.raises(server.ServerError) as info:
        generate_project(TEMPLATE, kernels_mlf, tmp_path / "big", {"board": "mps2-an386", "workspace_size_bytes": 8 << 20})
    assert ("a workspace of 8,388,608 bytes (-o workspace_size_bytes) does not fit mps2-an386's RAM less its stack and heap "
            "(4,161,536 bytes); pass a smaller workspace_size_bytes") in info.value.message
    assert not (tmp_path / "big").exists()


def test_a_model_that_does_not_fit_names_the_region_and_the_bytes(tmp_path, kernels_mlf):
    """A workspace that leaves the stack and heap their room but not the rest of the firmware's
    data: the linker's overflow, in the board's terms."""
    room = 4 * 1024 * 1024 - 32 * 1024
    project = generate_project(
        TEMPLATE, kernels_mlf, tmp_path / "big", {"board": "mps2-an386", "workspace_size_bytes": room}
    )
    with project, pytest.raises(BuildError) as info:
        project.build()
    line = str(info.value).splitlines()[0]
    assert "does not fit mps2-an386: region RAM needs" in line
    needed = int(line.split("needs ")[1].split()[0])
    assert needed > 4 * 1024 * 1024
    assert "the board has 4194304" in line
    assert not (tmp_path / "big" / "build" / "firmware.elf").exists()


def _silent_project(built_boards, fresh_copy) -> Path:
    project_dir = fresh_copy(built_boards.get("mps2-an386"))
    (project_dir / "src" / "main.c").write_text(SILENT_MAIN)
    with GeneratedProject.from_directory(project_dir) as project:
        project.build()
    return project_dir


def test_flashing_a_firmware_that_never_answers_fails_and_ends_qemu(built_boards, fresh_copy):
    project_dir = _silent_project(built_boards, fresh_copy)
    (project_dir / "flashed" / "firmware.elf").unlink()
    with GeneratedProject.from_directory(project_dir) as project:
        start = time.monotonic()
        with pytest.raises(server.ServerError, match="did not answer on mps2-an386 within 3 s.*QEMU was stopped"):
            project.flash({"boot_timeout_sec": 3})
        assert time.monotonic() - start < 30
    assert not (project_dir / "flashed" / "firmware.elf").exists()


def test_a_session_with_a_silent_firmware_times_out_clearly(built_boards, fresh_copy):
    project_dir = _silent_project(built_boards, fresh_copy)
    # put the silent image in place of the flashed one, as a bad flash would
    (project_dir / "flashed" / "firmware.elf").write_bytes((project_dir / "build" / "firmware.elf").read_bytes())
    with pytest.raises(SessionError, match="hello: the device sent nothing for 2 s"):
        with Session.open(project_dir, timeout_sec=2):
            pass


def test_run_with_a_silent_firmware_says_how_to_wait_longer(built_boards, fresh_copy, tmp_path):
    """The hint names the flag the CLI has (before: "pass a larger timeout_sec", which it had not)."""
    project_dir = _silent_project(built_boards, fresh_copy)
    (project_dir / "flashed" / "firmware.elf").write_bytes((project_dir / "build" / "firmware.elf").read_bytes())
    np.save(tmp_path / "x.npy", np.ones((4, 16), np.float32))
    out = run_cli("run", str(project_dir), "-i", f"x={tmp_path / 'x.npy'}", "--timeout", "2", "--output-dir", str(tmp_path))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1, out.stderr
    assert "hello: the device sent nothing for 2 s" in lines[0] and "microtvm run --timeout SECONDS" in lines[0]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _our_qemu():
    """(QEMU pid, the server that started it) among this test process's descendants."""
    for qpid in qemu_pids():
        chain, pid = [], qpid
        while pid > 1:
            pid = _parent(pid)
            chain.append(pid)
        if os.getpid() in chain:
            return qpid, chain[0]
    raise AssertionError("no QEMU was started by this test")


def test_qemu_killed_mid_session_is_a_closed_transport_that_says_why(built_boards, capfd):
    x = np.ones((4, 16), np.float32)
    w = np.ones((8, 16), np.float32)
    with GeneratedProject.from_directory(built_boards.get("mps2-an386")) as project:
        with Session.open(project) as sess:
            sess.run("dense", {"x": x, "w": w})
            os.kill(_our_qemu()[0], signal.SIGKILL)
            with pytest.raises(server.TransportClosedError):
                sess.run("dense", {"x": x, "w": w})
    assert "closed: QEMU (mps2-an386) was killed by signal 9" in capfd.readouterr().err


def test_killing_the_server_ends_its_qemu(built_boards):
    with GeneratedProject.from_directory(built_boards.get("mps2-an386")) as project:
        with project.transport() as transport:
            qemu, server_pid = _our_qemu()
            os.kill(server_pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while qemu in qemu_pids() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert qemu not in qemu_pids()
            with pytest.raises(Exception):
                transport.read(1, timeout_sec=2)


def test_open_transport_before_flash_says_to_flash(built_boards, fresh_copy):
    project_dir = fresh_copy(built_boards.get("mps2-an500", flash=False))
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError, match="flash the project first"):
            with project.transport():
                pass


def test_build_report_is_written_and_fits(built_boards):
    report = json.loads((built_boards.get("mps3-an547") / "build" / "build-report.json").read_text())
    regions = {r["name"]: r for r in report["regions"]}
    assert regions["FLASH"]["origin"] == 0x10000000 and regions["RAM"]["origin"] == 0x30000000
    assert 0 < regions["FLASH"]["used"] < regions["FLASH"]["length"]
    assert regions["RAM"]["used"] >= report["ram"]["workspace_bytes"] + report["ram"]["stack_bytes"]
    assert report["ram"]["workspace_bytes"] == 64 * 1024
    assert report["flash"]["code_bytes"] > 1000


def test_the_build_report_names_plan_runtime_and_stack(built_boards):
    """RAM split into what the model planned, what the firmware itself keeps (at most 8 KiB: the
    session's slot table is pointers, the CRC table const, the error text 512 B) and the stack."""
    report = json.loads((built_boards.get("mps2-an386") / "build" / "build-report.json").read_text())
    parts, ram = report["parts"], report["ram"]
    assert parts["plan_bytes"] == ram["workspace_bytes"] == 64 * 1024  # an MLF from TVM: no arena of ours
    assert parts["plan_bytes"] + parts["runtime_bytes"] == ram["data_bytes"] + ram["bss_bytes"]
    assert 1024 < parts["runtime_bytes"] <= 8 * 1024, parts
    assert parts["stack_bytes"] == ram["stack_bytes"]


def test_a_device_error_prints_its_64_bit_figures(built_boards):
    """newlib-nano's printf has no %llu: the firmware's figures were printed as "lu"."""
    from microtvm_registry.device import protocol
    from microtvm_registry.device.session import Session

    with Session.open(built_boards.get("mps2-an386")) as sess:
        with pytest.raises(protocol.DeviceError) as err:
            sess._exchange([(protocol.MSG_UPLOAD, protocol.upload_payload(3, "int8", [1000], b"\x01" * 7))], "upload")
        assert "upload of slot 3: 7 data bytes for a tensor of 1000 bytes" in str(err.value)
        # the session goes on: a good upload of the same slot is read back, then freed
        sess._exchange([(protocol.MSG_UPLOAD, protocol.upload_payload(3, "int8", [4], b"\x05\x06\x07\x08"))], "upload")
        (data,) = sess._exchange([(protocol.MSG_READ, protocol.slot_payload(3))], "read")
        assert data.payload == b"\x05\x06\x07\x08"
        sess.free_all()


def test_ctrl_c_mid_session_ends_everything_with_one_line(built_boards, fresh_copy):
    """Ctrl-C reaches the CLI's whole process group (CLI, template server, QEMU), as in a
    terminal. The silent firmware keeps the CLI waiting for hello, so the interrupt lands
    mid-session every time."""
    import subprocess
    import sys

    project_dir = _silent_project(built_boards, fresh_copy)
    (project_dir / "flashed" / "firmware.elf").write_bytes((project_dir / "build" / "firmware.elf").read_bytes())
    before = set(qemu_pids())
    cli = subprocess.Popen(
        [sys.executable, "-m", "microtvm_registry", "run", str(project_dir), "-f", "dense"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's job has it
    )
    try:
        deadline = time.monotonic() + 60
        while not set(qemu_pids()) - before:
            assert cli.poll() is None and time.monotonic() < deadline, "the session never started QEMU"
            time.sleep(0.05)
        started = set(qemu_pids()) - before
        time.sleep(0.3)  # the session is now waiting on the silent board
        os.killpg(cli.pid, signal.SIGINT)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130
    assert err.decode() == "microtvm: interrupted\n"  # no traceback from the CLI or the template's server
    assert out == b""
    # Nothing started for the session still runs once the CLI has returned (a zombie waiting to
    # be reaped by init has stopped running; the autouse fixture waits for those to go).
    assert still_running(started) == []
