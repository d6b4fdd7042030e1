"""``microtvm boards`` and ``microtvm devices``: which boards can be targeted, with which template
and options, and which of them is plugged in (or running, for an emulated one), on which port."""
from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional

from ..formats.names import printable
from ._common import add_json_flag, print_json, print_table


def register(subparsers) -> None:
    """Add ``boards``, ``devices`` and ``size``."""
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

    size = subparsers.add_parser(
        "size",
        help="does a compiled model fit a board? built for it (no board needed), its flash and RAM against the part's",
        description=(
            "Build MODEL_TAR's firmware for BOARD with the cortex-m template in a temporary folder (the Arm toolchain, "
            "no hardware) and report flash and RAM against the part's own memory, as the build report does after "
            "create-project and build: the fit check for a part you do not have yet."
        ),
    )
    size.add_argument("mlf", metavar="MODEL_TAR", help="a Model Library Format tar from microtvm compile")
    size.add_argument("--board", required=True, metavar="BOARD", help="a board of the cortex-m template (microtvm boards)")
    add_json_flag(size)
    size.set_defaults(handler=cmd_size)


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
        print("no boards found: none plugged in (serial adapters, debug probes) and no emulated board running "
              "(microtvm flash starts one; `microtvm boards --emulated` lists them); a real board: is it plugged in, "
              "with a cable that carries data?")
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


def cmd_size(args: argparse.Namespace) -> int:
    """Exit 0 when the firmware fits the board (with its stack and heap reserve), 1 when not."""
    import json
    import tempfile
    from pathlib import Path

    from ..errors import BuildError, MicrotvmError
    from ..packaged import get_packaged_resource
    from ..project import generate_project

    mlf = Path(args.mlf)
    if not mlf.is_file():
        raise MicrotvmError(f"{mlf} does not exist; compile a model first (microtvm compile MODEL -o {mlf.name} --target CORE)")
    with tempfile.TemporaryDirectory(prefix="microtvm-size-") as tmp:
        project_dir = Path(tmp) / "fit"
        project = generate_project(get_packaged_resource("templates/cortex-m"), mlf, project_dir, {"board": args.board})
        with project:
            try:
                project.build()
            except BuildError as err:
                line = str(err).splitlines()[0]
                if "does not fit" not in line:
                    raise
                if args.json:
                    print_json({"board": args.board, "fits": False, "reason": line})
                else:
                    print(f"{mlf.name} does not fit {args.board}: {line}")
                return 1
        report = json.loads((project_dir / "build" / "build-report.json").read_text())
    if args.json:
        print_json(dict(report, fits=True))
        return 0
    from ..template_kit.firmware import format_report

    # the build report's own lines, under a heading that answers the question asked
    print(f"{mlf.name} fits {report['board']} ({report['core']}):")
    print("\n".join(format_report(report).splitlines()[1:]))
    return 0
