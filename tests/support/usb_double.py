"""UsbDouble: a named test double for the USB hardware we cannot have here.

It replaces exactly the two calls through which our code sees hardware, pyserial's
``serial.tools.list_ports.comports`` and pyusb's ``usb.core.find``, with devices described
as those libraries describe real ones (pyserial's own ListPortInfo; device objects with pyusb's
attribute names, whose string descriptors raise pyusb's error when unreadable). Nothing of our
own code is replaced. In a subprocess (the CLI, a template's server) it is installed by
``usb_double_site/sitecustomize.py`` when MICROTVM_TEST_USB_DOUBLE names a scenario file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List

ENV = "MICROTVM_TEST_USB_DOUBLE"
SITE_DIR = Path(__file__).resolve().parent / "usb_double_site"
NO_LANGID = "The device has no langid (permission issue, no string descriptors supported or device error)"

# Realistic descriptors, as Linux's sysfs and the devices report them.
STLINK_V21 = {"vid": 0x0483, "pid": 0x374B, "manufacturer": "STMicroelectronics", "product": "STM32 STLink",
              "interface": "ST-Link VCP Ctrl", "description": "STM32 STLink - ST-Link VCP Ctrl"}
SCENARIOS: Dict[str, Dict[str, Any]] = {
    "nothing": {"ports": [], "usb": []},
    "one_nucleo_l4r5zi": {
        "ports": [dict(STLINK_V21, device="/dev/ttyACM0", serial_number="0670FF383930434B43175436", location="1-2:1.2")],
        "usb": [{"vid": 0x0483, "pid": 0x374B, "bus": 1, "port_numbers": [2], "product": "STM32 STLink",
                 "manufacturer": "STMicroelectronics", "serial_number": "0670FF383930434B43175436"}],
    },
    "two_stlinks": {
        "ports": [dict(STLINK_V21, device="/dev/ttyACM0", serial_number="066DFF535155878281151932", location="1-1:1.2"),
                  dict(STLINK_V21, device="/dev/ttyACM1", serial_number="0671FF485550755187121723", location="1-3:1.2")],
        "usb": [],
    },
    "cmsis_dap": {
        "ports": [],
        "usb": [{"vid": 0xC251, "pid": 0xF001, "bus": 1, "port_numbers": [4], "product": "ARM CMSIS-DAP",
                 "manufacturer": "Keil Software", "serial_number": "0001A0000000"}],
    },
    "ftdi": {
        "ports": [{"device": "/dev/ttyUSB0", "vid": 0x0403, "pid": 0x6001, "serial_number": "A50285BI", "location": "1-5:1.0",
                   "manufacturer": "FTDI", "product": "FT232R USB UART", "interface": None, "description": "FT232R USB UART"}],
        "usb": [],
    },
    "unreadable": {
        "ports": [],
        "usb": [{"vid": 0x1366, "pid": 0x0101, "bus": 2, "port_numbers": [1, 3], "unreadable": True}],
    },
    "nano33ble": {
        "ports": [{"device": "/dev/ttyACM0", "vid": 0x2341, "pid": 0x805A, "serial_number": "9F2D5D8C50515133", "location": "1-4:1.0",
                   "manufacturer": "Arduino", "product": "Nano 33 BLE", "interface": None, "description": "Nano 33 BLE"}],
        "usb": [],
    },
    "no_backend": {
        "ports": [dict(STLINK_V21, device="/dev/ttyACM0", serial_number="0670FF383930434B43175436", location="1-2:1.2")],
        "usb": "no-backend",
    },
}


class FakeUsbDevice:
    """What pyusb's usb.core.Device shows of a device: ids, place, and string descriptors."""

    def __init__(self, spec: Dict[str, Any]) -> None:
        self.idVendor = spec["vid"]
        self.idProduct = spec["pid"]
        self.bus = spec.get("bus", 1)
        self.address = spec.get("address", 7)
        self.port_numbers = tuple(spec.get("port_numbers", ()))
        self._spec = spec

    def _string(self, name: str):
        if self._spec.get("unreadable"):
            raise ValueError(NO_LANGID)  # what pyusb raises without permission to the device
        return self._spec.get(name)

    manufacturer = property(lambda self: self._string("manufacturer"))
    product = property(lambda self: self._string("product"))
    serial_number = property(lambda self: self._string("serial_number"))


def _port(spec: Dict[str, Any]):
    from serial.tools.list_ports_common import ListPortInfo

    info = ListPortInfo(spec["device"], skip_link_detection=True)
    for key in ("vid", "pid", "serial_number", "location", "manufacturer", "product", "interface", "description"):
        if key in spec:
            setattr(info, key, spec[key])
    info.hwid = info.usb_info() if info.vid is not None else "n/a"
    return info


def install(scenario: Dict[str, Any], setattr=setattr) -> None:
    """Put the scenario's devices where pyserial and pyusb report hardware (``setattr``: pass
    pytest's ``monkeypatch.setattr`` in-process, so the real functions come back after the test)."""
    import usb.core
    from serial.tools import list_ports

    ports = [_port(p) for p in scenario["ports"]]
    setattr(list_ports, "comports", lambda include_links=False: list(ports))

    def find(find_all=False, **kwargs):
        if scenario["usb"] == "no-backend":
            raise usb.core.NoBackendError("No backend available")
        found = [FakeUsbDevice(d) for d in scenario["usb"]]
        found = [d for d in found if all(getattr(d, k) == v for k, v in kwargs.items())]
        return iter(found) if find_all else (found[0] if found else None)

    setattr(usb.core, "find", find)


def environment(scenario: Dict[str, Any], folder: Path) -> Dict[str, str]:
    """Env vars that install ``scenario`` in a subprocess (the CLI, and the servers it starts)."""
    path = folder / "usb-double.json"
    path.write_text(json.dumps(scenario))
    old = os.environ.get("PYTHONPATH")
    return {ENV: str(path), "PYTHONPATH": str(SITE_DIR) + (os.pathsep + old if old else "")}


def install_from_env() -> None:
    path = os.environ.get(ENV)
    if path:
        install(json.loads(Path(path).read_text()))


def with_port(scenario: str, index: int, device: str) -> Dict[str, Any]:
    """A scenario whose ``index``-th serial port is ``device`` (a real pty the test serves)."""
    copy = json.loads(json.dumps(SCENARIOS[scenario]))
    copy["ports"][index]["device"] = device
    return copy


def names(devices: List[Any]) -> List[str]:
    return [d.port or d.usb_id for d in devices]
