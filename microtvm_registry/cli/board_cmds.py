"""``microtvm boards`` and ``microtvm devices``: which boards can be targeted, with which template
and options, and which of them is plugged in (or running, for an emulated one), on which port."""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from ..formats.names import printable
from ._common import add_json_flag, print_json, print_table


def register(subparsers) -> None:
    """Add ``boards`` and ``devices``."""
    boards = subparsers.add_parser(
        "boards",
        help="list the boards every template can target, like `pio boards`",
        description=(
            "The board database shipped with microtvm-registry: each board's core, FPU, memory and clock, "
            "whether it is emulated, and every template that supports it with the options to give."
        ),
    )
    boards.add_argument("--template", metavar="T", help="only boards this template supports (cortex-m, apache-tvm/zephyr, zephyr, ...)")
    boards.add_argument("--core", metavar="CORE", help="only boards with this core (cortex-m4, cortex-m55, ...)")
    boards.add_argument("--emulated", action="store_true", help="only emulated boards (QEMU)")
    add_json_flag(boards)
    boards.set_defaults(handler=cmd_boards)

    devices = subparsers.add_parser(
        "devices",
        help="list connected boards, debug probes and running emulated boards, like `pio device list`",
        description=(
            "Serial ports (pyserial) and debug probes without a serial port (pyusb), each matched to the boards "
            "its USB id can be, plus emulated boards whose QEMU runs now. A USB id that several boards share is "
            "shown as ambiguous with its candidates, never guessed."
        ),
    )
    add_json_flag(devices)
    devices.set_defaults(handler=cmd_devices)


def _size(n: Optional[int]) -> str:
    if not n:
        return "-"
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{n / 1024:g} KiB"


def _clock(hz: Optional[int]) -> str:
    return f"{hz / 1e6:g} MHz" if hz else "-"


def cmd_boards(args: argparse.Namespace) -> int:
    from ..boards.database import load_board_database

    found = load_board_database().select(template=args.template, core=args.core, emulated=True if args.emulated else None)
    if args.json:
        print_json(
            [
                {
                    "name": b.name,
                    "aliases": list(b.aliases),
                    "vendor": b.vendor,
                    "description": b.description,
                    "core": b.core,
                    "fpu": b.fpu,
                    "flash_bytes": b.flash_bytes,
                    "ram_bytes": b.ram_bytes,
                    "clock_hz": b.clock_hz,
                    "emulated": b.emulated,
                    "qemu_machine": b.qemu_machine,
                    "usb": [u.__dict__ for u in b.usb],
                    "templates": [
                        {"template": t.template, "versions": list(t.versions) if t.versions else None, "options": t.options, "use": t.use}
                        for t in b.templates
                    ],
                }
                for b in found
            ]
        )
        return 0
    if not found:
        print("no board matches those filters; `microtvm boards` lists them all", file=sys.stderr)
        return 0
    rows: List[List[Any]] = [
        [
            b.name,
            b.vendor,
            b.core,
            "yes" if b.fpu else "no",
            _size(b.flash_bytes),
            _size(b.ram_bytes),
            _clock(b.clock_hz),
            "emulated" if b.emulated else "real",
            ", ".join(t.template for t in b.templates),
        ]
        for b in found
    ]
    print_table(["BOARD", "VENDOR", "CORE", "FPU", "FLASH", "RAM", "CLOCK", "KIND", "TEMPLATES"], rows)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from ..boards.discovery import list_devices

    devices, warnings = list_devices()
    for warning in warnings:
        print(f"microtvm: {warning}", file=sys.stderr)
    if args.json:
        print_json([d.as_dict() for d in devices])
        return 0
    if not devices:
        print("no boards, serial adapters or debug probes found; is the board plugged in (and its cable one that carries data)?")
        return 0
    rows = []
    for d in devices:
        if d.status in ("board", "emulated"):
            board = d.candidates[0] + (" (emulated)" if d.kind == "emulated" else "")
        elif d.status == "ambiguous":
            board = "one of: " + ", ".join(d.candidates)
        else:
            board = "unknown board"
        what = " ".join(x for x in (d.probe, d.description if d.description != d.probe else None) if x)
        rows.append([d.port or "-", d.kind, d.usb_id or "-", d.serial_number or "-", what or "-", board])
    print_table(["PORT", "KIND", "USB ID", "SERIAL", "DESCRIPTION", "BOARD"], rows)
    for d in devices:
        if d.uses:
            print(printable(f"{d.port or d.usb_id}: " + "; ".join(d.uses)))
        if d.note:
            print(printable(f"{d.port or d.usb_id}: {d.note}"))
    return 0
