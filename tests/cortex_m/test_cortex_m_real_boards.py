"""Real boards, as far as this machine can go without them: their firmware builds and fits, flashing
runs the command the user gives, and the serial transport talks to a board over a real
pseudo-terminal. The boards themselves are replaced by named test doubles: FakeFlasher (a script
that records how it was called) and BoardOnAPty (a thread answering the session protocol)."""
from __future__ import annotations

import json
import os
import sys
import threading
import tty

import pytest

from support.cortex_m import BOARDS, REAL
from microtvm_registry.device import protocol
from microtvm_registry.project import GeneratedProject
from microtvm_registry.project_api import server

pytestmark = pytest.mark.needs_tvm


@pytest.mark.parametrize("board", REAL)
def test_real_board_firmware_builds_and_fits(built_boards, board):
    project = built_boards.get(board, flash=False)
    report = json.loads((project / "build" / "build-report.json").read_text())
    regions = {r["name"]: r for r in report["regions"]}
    for region in BOARDS[board]["memory"]:
        assert regions[region["name"]]["origin"] == int(region["origin"], 16)
        assert 0 < regions[region["name"]]["used"] < region["length"]
    assert (project / "build" / "firmware.bin").stat().st_size > 1000


def _fake_flasher(tmp_path):
    """FakeFlasher: stands in for a probe we do not have; records its arguments in calls.json."""
    record = tmp_path / "calls.json"
    flasher = tmp_path / "fake-flasher"
    flasher.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    flasher.chmod(0o755)
    return flasher, record


def test_flash_command_runs_with_the_image_filled_in(tmp_path, built_boards, fresh_copy):
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    flasher, record = _fake_flasher(tmp_path)
    with GeneratedProject.from_directory(project_dir) as project:
        project.flash({"flash_command": f"{flasher} --target {{board}} {{elf}}"})
    assert json.loads(record.read_text()) == ["--target", "nucleo_l4r5zi", str(project_dir / "build" / "firmware.elf")]


def test_flash_without_pyocd_or_a_command_says_what_to_install(built_boards, fresh_copy, monkeypatch):
    project_dir = fresh_copy(built_boards.get("nucleo_f746zg", flash=False))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pyocd there (the test venv has none either)
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError, match=r"needs pyOCD \(pip install pyocd\) or -o flash_command"):
            project.flash()


def test_serial_port_auto_with_no_matching_device_lists_what_it_found(built_boards, fresh_copy):
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError, match=r"serial_port=auto: no connected device can be nucleo_l4r5zi \(0483:374b\); found:"):
            with project.transport({"serial_port": "auto"}):
                pass


class BoardOnAPty(threading.Thread):
    """Test double for a real board on a USB serial port: answers hello and echo on a pty."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.master, self.slave = os.openpty()  # the slave stays open: closing it hangs the line up
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.requests = []

    def run(self) -> None:
        decoder = protocol.FrameDecoder()
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for frame in decoder.feed(data):
                self.requests.append(frame.type)
                if frame.type == protocol.MSG_HELLO:
                    reply = protocol.encode_frame(protocol.REPLY_HELLO, b"\x01\x00\x00\x00" + b"\x00" * 8 + b"\x00" * 4)
                else:
                    reply = protocol.encode_frame(protocol.REPLY_ECHO, frame.payload)
                os.write(self.master, reply)


def test_a_real_board_is_talked_to_over_its_serial_port(built_boards, fresh_copy):
    from microtvm_registry.device.session import Session

    board = BoardOnAPty()
    board.start()
    project_dir = fresh_copy(built_boards.get("nucleo_f746zg", flash=False))
    with GeneratedProject.from_directory(project_dir) as project:
        with project.transport({"serial_port": board.port}) as transport:
            sess = Session(transport, timeout_sec=10)
            assert sess.echo(b"\x00\x01\x11\x13 over a real pty") == b"\x00\x01\x11\x13 over a real pty"
    assert board.requests == [protocol.MSG_HELLO, protocol.MSG_ECHO]
    os.close(board.master)
    os.close(board.slave)


def test_a_missing_serial_port_is_one_clear_error(built_boards, fresh_copy):
    project_dir = fresh_copy(built_boards.get("nucleo_f746zg", flash=False))
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError, match=r"cannot open serial port /dev/ttyNOPE.*check the cable"):
            with project.transport({"serial_port": "/dev/ttyNOPE"}):
                pass


def test_serial_port_auto_finds_the_one_board_that_can_be_the_projects(built_boards, fresh_copy, monkeypatch, tmp_path):
    """The UsbDouble says an ST-LINK/V2-1 is on a port, and that port is a real pty with the
    BoardOnAPty double behind it: the template's server picks it by itself and talks to it."""
    from microtvm_registry.device.session import Session
    from support.usb_double import environment, with_port

    board = BoardOnAPty()
    board.start()
    for key, value in environment(with_port("one_nucleo_l4r5zi", 0, board.port), tmp_path).items():
        monkeypatch.setenv(key, value)  # the template's server inherits these: the double is in there
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    try:
        with GeneratedProject.from_directory(project_dir) as project:
            with project.transport({"serial_port": "auto"}) as transport:
                assert Session(transport, timeout_sec=10).echo(b"found by auto") == b"found by auto"
    finally:
        os.close(board.master)
        os.close(board.slave)
    assert board.requests == [protocol.MSG_HELLO, protocol.MSG_ECHO]


def test_serial_port_auto_with_two_candidates_names_both(built_boards, fresh_copy, monkeypatch, tmp_path):
    from support.usb_double import SCENARIOS, environment

    for key, value in environment(SCENARIOS["two_stlinks"], tmp_path).items():
        monkeypatch.setenv(key, value)
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError, match=r"2 connected devices can be nucleo_l4r5zi: /dev/ttyACM0 \(0483:374b\), /dev/ttyACM1"):
            with project.transport({"serial_port": "auto"}):
                pass


@pytest.mark.parametrize("command, words", [
    ("{flasher} {x}", "option flash_command: {x} is not a field it fills; use {elf}, {bin}, {board}"),
    ("{flasher} {0}", "option flash_command: {0} is not a field it fills"),
    ("{flasher} {elf!r}", "{elf!r} is not a field it fills"),
    ("{flasher} 'unclosed {elf}", "option flash_command: No closing quotation in"),
    ("{flasher} a{b", "has a lone brace; write {{ and }} for a literal brace"),
    ("no-such-flasher-xyz {elf}", "option flash_command: its program 'no-such-flasher-xyz' is not on PATH"),
])
def test_a_bad_flash_command_is_one_sentence(tmp_path, built_boards, fresh_copy, command, words):
    """Before: KeyError 'x', IndexError, a bare ValueError, or FileNotFoundError's traceback."""
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    flasher, record = _fake_flasher(tmp_path)
    with GeneratedProject.from_directory(project_dir) as project:
        with pytest.raises(server.ServerError) as err:
            project.flash({"flash_command": command.replace("{flasher}", str(flasher))})
    assert words in err.value.message and "\n" not in err.value.message.strip()
    assert not record.exists()  # refused before anything ran


def test_a_flash_command_may_hold_literal_braces(tmp_path, built_boards, fresh_copy):
    project_dir = fresh_copy(built_boards.get("nucleo_l4r5zi", flash=False))
    flasher, record = _fake_flasher(tmp_path)
    with GeneratedProject.from_directory(project_dir) as project:
        project.flash({"flash_command": f"{flasher} --config '{{{{\"speed\": 4000}}}}' {{bin}}"})
    assert json.loads(record.read_text()) == ['--config', '{"speed": 4000}', str(project_dir / "build" / "firmware.bin")]
