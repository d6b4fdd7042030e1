"""What is plugged in: serial ports (pyserial), debug probes without a serial port (pyusb), and
emulated boards whose QEMU runs now, each matched to the boards of the database it can be.

Why match this way: a USB id names a board only sometimes. An ST-LINK/V2-1 (0483:374b) sits on
dozens of NUCLEO and Discovery boards, so a device is shown with every board its id allows
("ambiguous"), narrowed only by what the device itself says (a USB product string that names the
board); it is never guessed. ``pick_port`` (``serial_port=auto``) then asks the other way round:
which one connected device can be the project's board.

pyserial's ``list_ports.comports()`` and pyusb's ``usb.core.find`` are looked up when called,
so a test double installed on those modules stands in for real hardware.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import BoardError
from .database import BoardDatabase, load_board_database

NO_BACKEND_HINT = (
    "debug probes without a serial port are not listed: pyusb has no USB backend ({why}); "
    "install libusb (apt-get install libusb-1.0-0, brew install libusb) to see them"
)
UNREADABLE_HINT = "USB strings unreadable (permission denied?): a udev rule for the device lets them be read"


@dataclass
class Device:
    """One thing plugged in (or running, for an emulated board)."""

    kind: str  # "serial" | "probe" | "emulated"
    port: Optional[str]  # the serial port, None for a probe without one
    vid: Optional[str] = None
    pid: Optional[str] = None
    serial_number: Optional[str] = None
    description: str = ""
    manufacturer: Optional[str] = None
    product: Optional[str] = None
    location: Optional[str] = None
    probe: Optional[str] = None  # the debug probe it is (ST-LINK/V2-1, CMSIS-DAP ...), if known
    candidates: List[str] = field(default_factory=list)  # boards it can be
    narrowed_by: Optional[str] = None  # what the device said that narrowed the candidates
    note: Optional[str] = None
    uses: List[str] = field(default_factory=list)  # template specs + options, when one board

    @property
    def usb_id(self) -> Optional[str]:
        return f"{self.vid}:{self.pid}" if self.vid else None

    @property
    def status(self) -> str:
        if self.kind == "emulated":
            return "emulated"
        if len(self.candidates) == 1:
            return "board"
        return "ambiguous" if self.candidates else "unknown"

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items()}
        out["usb_id"] = self.usb_id
        out["status"] = self.status
        return out


def _hex4(value: Optional[int]) -> Optional[str]:
    return None if value is None else f"{value:04x}"


def _match(device: Device, db: BoardDatabase) -> None:
    """Fills candidates (and narrows them by the product string), the probe, and the uses."""
    if device.vid is None:
        return
    pairs = db.with_usb_id(device.vid, device.pid or "")
    candidates = [b for b, _ in pairs]
    if len(candidates) > 1 and device.product:
        said = [b for b, u in pairs if u.product and u.product.lower() in device.product.lower()]
        if said:
            candidates, device.narrowed_by = said, f"USB product string {device.product!r}"
    device.candidates = sorted({b.name for b in candidates})
    probe = db.probe(device.vid, device.pid or "", device.product)
    if probe is not None:
        device.probe = probe.name
    if len(candidates) == 1:
        device.uses = [t.use for t in candidates[0].templates]


def serial_devices(db: BoardDatabase) -> List[Device]:
    """pyserial's USB serial ports, matched to boards. Ports without a USB id are left out: the
    ttyS0..31 of every PC say nothing about a board."""
    from serial.tools import list_ports

    found = []
    for port in list_ports.comports():
        if port.vid is None:
            continue
        device = Device(
            kind="serial",
            port=port.device,
            vid=_hex4(port.vid),
            pid=_hex4(port.pid),
            serial_number=port.serial_number,
            description=port.description if port.description and port.description != "n/a" else "",
            manufacturer=port.manufacturer,
            product=port.product,
            location=port.location,
        )
        _match(device, db)
        found.append(device)
    return found


def _usb_string(dev, attribute: str) -> Tuple[Optional[str], bool]:
    """(string, readable): pyusb reads string descriptors from the device, which needs access to
    it; without a udev rule that fails (ValueError 'no langid', or USBError 13)."""
    import usb.core

    try:
        return getattr(dev, attribute), True
    except (ValueError, usb.core.USBError, NotImplementedError):
        return None, False


def probe_devices(db: BoardDatabase, serial: List[Device]) -> Tuple[List[Device], List[str]]:
    """Debug probes (and boards) on USB that have no serial port of their own; a probe whose
    serial port is already listed adds its name to that entry instead."""
    import usb.core

    try:
        usb_devices = list(usb.core.find(find_all=True))
    except (usb.core.NoBackendError, usb.core.USBError) as err:
        return [], [NO_BACKEND_HINT.format(why=err)]
    by_location: Dict[str, List[Any]] = {}
    for s in serial:
        if s.location:
            by_location.setdefault(s.location.split(":")[0], []).append(s)
    found = []
    for dev in usb_devices:
        vid, pid = _hex4(dev.idVendor) or "0000", _hex4(dev.idProduct) or "0000"
        product, readable = _usb_string(dev, "product")
        probe = db.probe(vid, pid, product)  # by its id, else by what its product string says
        if probe is None and not db.with_usb_id(vid, pid):
            continue
        ports = getattr(dev, "port_numbers", None) or ()
        location = f"{dev.bus}-{'.'.join(str(p) for p in ports)}" if ports else None
        if location and location in by_location:
            for s in by_location[location]:
                if probe is not None and s.probe is None:
                    s.probe = probe.name
            continue  # its serial port is listed already
        manufacturer, _ = _usb_string(dev, "manufacturer") if readable else (None, False)
        serial_number, _ = _usb_string(dev, "serial_number") if readable else (None, False)
        device = Device(
            kind="probe",
            port=None,
            vid=vid,
            pid=pid,
            serial_number=serial_number,
            description=product or "",
            manufacturer=manufacturer,
            product=product,
            location=location,
            note=None if readable else UNREADABLE_HINT,
        )
        _match(device, db)
        found.append(device)
    return found, []


def emulated_devices(db: BoardDatabase) -> List[Device]:
    from ..device.qemu import running_boards

    found = []
    for running in running_boards():
        device = Device(
            kind="emulated",
            port=running.pty,
            description=f"QEMU {running.machine} (pid {running.pid})",
            candidates=[running.board],
        )
        try:
            device.uses = [t.use for t in db.get(running.board).templates]
        except BoardError:
            pass
        found.append(device)
    return found


def list_devices(db: Optional[BoardDatabase] = None) -> Tuple[List[Device], List[str]]:
    """(devices, warnings): serial ports, probes without one, running emulated boards."""
    db = db or load_board_database()
    serial = serial_devices(db)
    probes, warnings = probe_devices(db, serial)
    return serial + probes + emulated_devices(db), warnings


def describe(device: Device) -> str:
    what = device.port or f"USB {device.usb_id}"
    extra = f" ({device.usb_id})" if device.port and device.usb_id else ""
    return f"{what}{extra}"


def pick_port(
    board: str, devices: Optional[List[Device]] = None, db: Optional[BoardDatabase] = None, option: str = "serial_port"
) -> str:
    """The serial port of the one connected device that can be ``board`` (``<option>=auto``).

    None, or several, is a BoardError that lists what was found, so the user can pass the port.
    """
    db = db or load_board_database()
    names = set(db.get(board).names())
    if devices is None:
        devices, _ = list_devices(db)
    matching = [d for d in devices if d.port and names & set(d.candidates)]
    ports = [d.port for d in matching if d.port]
    if len(ports) == 1:
        return ports[0]
    seen = ", ".join(describe(d) for d in devices) or "nothing"
    if not matching:
        wanted = ", ".join(u.id for u in db.get(board).usb) or "no USB ids known"
        raise BoardError(
            f"{option}=auto: no connected device can be {board} ({wanted}); found: {seen}; "
            f"plug the board in, or pass -o {option}=PORT"
        )
    raise BoardError(
        f"{option}=auto: {len(matching)} connected devices can be {board}: "
        f"{', '.join(describe(d) for d in matching)}; pass -o {option}=PORT"
    )
