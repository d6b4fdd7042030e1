"""What is plugged in, matched to boards: each UsbDouble scenario, in-process (the CLI and the
template server are tested through the same double in subprocesses elsewhere)."""
from __future__ import annotations

import json

import pytest

from microtvm_registry.boards.database import load_board_database
from microtvm_registry.boards.discovery import list_devices, pick_port
from microtvm_registry.errors import BoardError
from support.usb_double import SCENARIOS, install, names

STLINK_BOARDS = ["nucleo_f746zg", "nucleo_l4r5zi", "stm32f746g_disco"]


@pytest.fixture
def plug(monkeypatch):
    def plug(scenario):
        install(SCENARIOS[scenario] if isinstance(scenario, str) else scenario, setattr=monkeypatch.setattr)

    return plug


def test_nothing_plugged_in(plug):
    plug("nothing")
    assert list_devices() == ([], [])
    with pytest.raises(BoardError, match=r"no connected device can be nucleo_l4r5zi \(0483:374b\); found: nothing"):
        pick_port("nucleo_l4r5zi")


def test_a_nucleo_is_one_serial_port_with_its_probe_and_candidates(plug):
    plug("one_nucleo_l4r5zi")
    devices, warnings = list_devices()
    assert warnings == [] and names(devices) == ["/dev/ttyACM0"]  # its ST-LINK is not listed twice
    nucleo = devices[0]
    assert nucleo.kind == "serial" and nucleo.usb_id == "0483:374b" and nucleo.probe == "ST-LINK/V2-1"
    # the ST-LINK's id is on several boards, and nothing it says names which: never guessed
    assert nucleo.status == "ambiguous" and nucleo.candidates == STLINK_BOARDS
    assert nucleo.serial_number == "0670FF383930434B43175436"
    assert pick_port("nucleo_l4r5zi") == "/dev/ttyACM0"  # but it is the one that can be this board
    with pytest.raises(BoardError, match=r"no connected device can be mps2-an386 \(no USB ids known\); found: /dev/ttyACM0 \(0483:374b\)"):
        pick_port("mps2-an386")


def test_two_boards_with_the_same_stlink_ids_are_both_listed_and_auto_refuses(plug):
    plug("two_stlinks")
    devices, _ = list_devices()
    assert names(devices) == ["/dev/ttyACM0", "/dev/ttyACM1"]
    assert all(d.candidates == STLINK_BOARDS for d in devices)
    with pytest.raises(BoardError, match=r"2 connected devices can be nucleo_f746zg: /dev/ttyACM0 \(0483:374b\), /dev/ttyACM1 \(0483:374b\); pass -o serial_port=PORT"):
        pick_port("nucleo_f746zg")


def test_a_cmsis_dap_probe_without_a_serial_port_is_found_by_its_product_string(plug):
    plug("cmsis_dap")
    devices, _ = list_devices()
    assert len(devices) == 1
    probe = devices[0]
    assert probe.kind == "probe" and probe.port is None and probe.probe == "CMSIS-DAP probe"
    assert probe.usb_id == "c251:f001" and probe.status == "unknown"  # a probe fits any Cortex-M board


def test_a_plain_serial_adapter_is_listed_as_no_known_board(plug):
    plug("ftdi")
    devices, _ = list_devices()
    assert names(devices) == ["/dev/ttyUSB0"]
    assert devices[0].status == "unknown" and devices[0].description == "FT232R USB UART"
    with pytest.raises(BoardError, match=r"found: /dev/ttyUSB0 \(0403:6001\)"):
        pick_port("nucleo_l4r5zi")


def test_a_device_whose_strings_cannot_be_read_is_listed_with_why(plug):
    plug("unreadable")
    devices, _ = list_devices()
    assert len(devices) == 1
    jlink = devices[0]
    assert jlink.probe == "J-Link" and jlink.product is None and "permission denied" in jlink.note
    assert jlink.location == "2-1.3"


def test_without_a_usb_backend_serial_ports_are_still_listed_and_it_says_why(plug):
    plug("no_backend")
    devices, warnings = list_devices()
    assert names(devices) == ["/dev/ttyACM0"]
    assert len(warnings) == 1 and "pyusb has no USB backend (No backend available)" in warnings[0]
    assert "install libusb" in warnings[0]


def test_a_product_string_that_names_the_board_narrows_a_shared_id(plug, tmp_path):
    from microtvm_registry import get_packaged_resource

    db_file = tmp_path / "boards.json"

    shipped = json.loads(get_packaged_resource("boards/boards.json").read_text())
    shared = {"vid": "16c0", "pid": "0483", "kind": "native-usb", "name": "Teensyduino serial", "serial_port": True}
    for board in shipped["boards"]:
        if board["name"] == "teensy40":
            board["usb"] = [dict(shared, product="Teensy 4.0")]
        if board["name"] == "teensy41":
            board["usb"] = [dict(shared, product="Teensy 4.1")]
    db_file.write_text(json.dumps(shipped))
    plug({"ports": [{"device": "/dev/ttyACM3", "vid": 0x16C0, "pid": 0x0483, "product": "Teensy 4.1", "location": "3-1:1.0",
                      "serial_number": "12345", "description": "Teensy 4.1 Serial"}], "usb": []})
    devices, _ = list_devices(load_board_database(db_file))
    assert devices[0].candidates == ["teensy41"] and devices[0].narrowed_by == "USB product string 'Teensy 4.1'"
    assert devices[0].uses == ["apache-tvm/arduino@0.18.0 -o board=teensy41"]
