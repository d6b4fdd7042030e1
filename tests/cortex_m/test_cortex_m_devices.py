"""A running emulated board is a device too: while its QEMU runs, `microtvm devices` lists its pty
as that board, through the real CLI; once QEMU ends (closed, or killed with no chance to say
so) it is gone from the list."""
from __future__ import annotations

import json
import os
import signal

import pytest

from microtvm_registry.device.qemu import QemuBoard, running_boards
from registry_support import run_cli
from support.usb_double import SCENARIOS, environment

pytestmark = pytest.mark.needs_tvm


def _devices(tmp_path):
    out = run_cli("devices", "--json", env=environment(SCENARIOS["nothing"], tmp_path))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_running_emulated_board_is_listed_with_its_pty(built_boards, tmp_path):
    image = built_boards.get("mps2-an386") / "flashed" / "firmware.elf"
    with QemuBoard("mps2-an386", image, 0, board="mps2-an386") as board:
        listed = _devices(tmp_path)
        assert [(d["kind"], d["port"], d["candidates"], d["status"]) for d in listed] == [
            ("emulated", board.pty, ["mps2-an386"], "emulated")
        ]
        assert listed[0]["uses"] == ["cortex-m -o board=mps2-an386"]
        out = run_cli("devices", env=environment(SCENARIOS["nothing"], tmp_path))
        assert board.pty in out.stdout and "mps2-an386 (emulated)" in out.stdout
    assert _devices(tmp_path) == []


def test_a_killed_qemu_is_not_listed_and_its_note_is_cleared(built_boards, tmp_path):
    image = built_boards.get("mps3-an547") / "flashed" / "firmware.elf"
    board = QemuBoard("mps3-an547", image, 0, board="mps3-an547")
    board.start()
    try:
        assert [r.board for r in running_boards()] == ["mps3-an547"]
        os.kill(board.pid, signal.SIGKILL)  # as when its server dies: no close, the note stays behind
        board._proc.wait()
        assert _devices(tmp_path) == []
        assert running_boards() == []
    finally:
        board.close()


@pytest.mark.parametrize("note, words", [
    (b'{"board": "b", "machine": "m", "pty": "/dev/null", "pid": 1e400, "image": "i"}', "its pid inf is not a process id"),
    (b'{"board": "b", "machine": "m", "pty": "/dev/null", "pid": -1, "image": "i"}', "its pid -1 is not a process id"),
    (b'{"board": "b", "machine": "m", "pty": "/dev/null", "pid": 99999999999999999999999, "image": "i"}', "is not a process id"),
    (b'{"board": 7, "machine": "m", "pty": "/dev/null", "pid": 1, "image": "i"}', "its board is not a string"),
    (b"[" * 100_000 + b"]" * 100_000, "it is over 65536 bytes"),
    (b"[" * 30_000 + b"]" * 30_000, "it is nested too deeply"),
    (b"\xff\xfe", "invalid start byte"),
    (b"[1, 2]", "it is not a JSON object"),
])
def test_a_malformed_note_is_named_removed_and_the_running_board_still_listed(built_boards, tmp_path, note, words):
    """Before: `devices` failed with "unexpected OverflowError" (or a nesting error) naming no
    file, and a pid of -1 was listed as a running board."""
    image = built_boards.get("mps2-an386") / "flashed" / "firmware.elf"
    with QemuBoard("mps2-an386", image, 0, board="mps2-an386") as board:
        bad = board._note.parent / "1.json"
        bad.write_bytes(note)
        out = run_cli("devices", "--json", env=environment(SCENARIOS["nothing"], tmp_path))
        assert out.returncode == 0, out.stderr
        assert [d["port"] for d in json.loads(out.stdout)] == [board.pty]
        assert f"removed the emulated-board note {bad}: " in out.stderr and words in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and not bad.exists()
