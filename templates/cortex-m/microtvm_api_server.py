"""Project API server of the microtvm-registry "cortex-m" template (platform_name "cortex-m").

A generated project is bare-metal firmware for one board of ``boards.json``: the model's kernels
(C from today's apache-tvm, exported with ``microtvm_registry.compile.mlf``), the device runtime
shared with the host template (templates/common/runtime), start-up code and vector table, a
linker script made from the board's memory regions, the board's UART driver, and the same
framed session protocol as the host template, spoken over the UART.

* Emulated boards (QEMU's MPS2/MPS3 machines): ``flash`` makes the built image the board's and
  proves it boots (QEMU starts it once, it answers, QEMU ends); ``open_transport`` starts QEMU
  on that image with the UART on a pseudo-terminal and opens it with pyserial. Closing the
  transport or the server ends QEMU.
* Real boards: ``flash`` runs pyOCD (``pip install pyocd``) or the ``flash_command`` given;
  ``open_transport`` opens ``serial_port`` (or the one connected board that matches: ``auto``).

This script runs under the client's interpreter, which has microtvm_registry installed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from microtvm_registry.compile import template_kit as kit
from microtvm_registry.project_api import server

PROJECT_DIR = Path(__file__).resolve().parent
MODEL_TAR_NAME = "model.tar"
IS_TEMPLATE = not (PROJECT_DIR / MODEL_TAR_NAME).exists()
PROJECT_FILE = "project.json"
FIRMWARE = Path("build") / "firmware.elf"
FLASHED = Path("flashed") / "firmware.elf"
BUILD_REPORT = "build-report.json"
DEFAULT_WORKSPACE_SIZE_BYTES = 64 * 1024
STACK_SIZE = 16 * 1024
MIN_HEAP_SIZE = 16 * 1024
BOOT_TIMEOUT_SEC = 20.0
BUILD_LOG_TAIL_LINES = 25
TOOLCHAIN = "arm-none-eabi-gcc"
TOOLCHAIN_HINT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi (Debian/Ubuntu)"
OPT_LEVELS = ["-O0", "-O1", "-O2", "-O3", "-Os"]
FPU_FLAGS = {None: [], "auto": ["-mfloat-abi=hard"]}


def _load_boards() -> Dict[str, Dict[str, Any]]:
    with open(PROJECT_DIR / "boards.json", encoding="utf-8") as fh:
        return {b["name"]: b for b in json.load(fh)["boards"]}


BOARDS = _load_boards()


CONFIG = {} if IS_TEMPLATE else kit.config_of(PROJECT_DIR, PROJECT_FILE)

PROJECT_OPTIONS = [
    server.ProjectOption(
        "board",
        required=["generate_project"],
        type="str",
        choices=sorted(BOARDS),
        help="The board to build for (emulated: " + ", ".join(n for n, b in sorted(BOARDS.items()) if b.get("qemu")) + ").",
    ),
    server.ProjectOption(
        "serial_port",
        optional=["open_transport", "flash"],
        type="str",
        help="A real board's serial port (/dev/ttyACM0, COM3), or 'auto' for the one connected board that matches.",
    ),
    server.ProjectOption(
        "opt_level",
        optional=["generate_project"],
        type="str",
        choices=OPT_LEVELS,
        default="-O2",
        help="Compiler optimization level of the firmware.",
    ),
    server.ProjectOption(
        "workspace_size_bytes",
        optional=["generate_project"],
        type="int",
        default=None,  # a compiled model's plan sizes it; see project_workspace_bytes
        help="Bytes of static workspace for generated code (TVMBackendAllocWorkspace), in the board's RAM; default: what a compiled model's plan needs, else 65536.",
    ),
    server.ProjectOption(
        "icount",
        optional=["generate_project"],
        type="bool",
        default=True,
        help="Emulated boards: run QEMU with -icount shift=0, so timings count instructions exactly.",
    ),
    server.ProjectOption(
        "flash_command",
        optional=["flash"],
        type="str",
        help="Real boards: the command that flashes, with {elf}, {bin} and {board} filled in (default: pyOCD).",
    ),
    server.ProjectOption(
        "boot_timeout_sec",
        optional=["flash"],
        type="int",
        default=int(BOOT_TIMEOUT_SEC),
        help="Emulated boards: seconds the flashed firmware has to answer under QEMU before flash fails.",
    ),
    server.ProjectOption(
        "verbose",
        optional=["build", "flash"],
        type="bool",
        default=False,
        help="Print the compiler commands and the tools' output.",
    ),
]


def CortexMError(message: str) -> server.ServerError:
    """A failed step, as the plain ServerError whose free-form message crosses the wire."""
    return server.ServerError(message)


def _int_option(options: Dict[str, Any], name: str, default: Optional[int]) -> Optional[int]:
    try:
        return kit.int_option(options, name, default)
    except kit.TemplateKitError as err:
        raise CortexMError(str(err)) from None


def _board(name: Any) -> Dict[str, Any]:
    if not name:
        raise CortexMError(f"option board is required; one of: {', '.join(sorted(BOARDS))}")
    if name not in BOARDS:
        raise CortexMError(f"unknown board {name!r}; boards: {', '.join(sorted(BOARDS))}")
    return BOARDS[name]


def arch_flags(board: Dict[str, Any]) -> List[str]:
    flags = [f"-mcpu={board['core']}", "-mthumb"]
    fpu = board.get("fpu")
    if fpu in FPU_FLAGS:
        flags += FPU_FLAGS[fpu]
    else:
        flags += [f"-mfpu={fpu}", f"-mfloat-abi={board.get('float_abi', 'hard')}"]
    if fpu is None:
        flags.append("-mfloat-abi=soft")
    return flags


def _region(board: Dict[str, Any], kind: str) -> Dict[str, Any]:
    return next(r for r in board["memory"] if r["kind"] == kind)


def linker_script(board: Dict[str, Any]) -> str:
    template = (PROJECT_DIR / "firmware.ld.template").read_text()
    regions = []
    for r in board["memory"]:
        attrs = "rx" if r["kind"] == "code" else "rwx"
        regions.append(f"  {r['name']} ({attrs}) : ORIGIN = {r['origin']}, LENGTH = {int(r['length'])}")
    return (
        template.replace("@BOARD@", board["name"])
        .replace("@REGIONS@", "\n".join(regions))
        .replace("@CODE@", _region(board, "code")["name"])
        .replace("@DATA@", _region(board, "data")["name"])
        .replace("@STACK_SIZE@", str(STACK_SIZE))
        .replace("@MIN_HEAP_SIZE@", str(MIN_HEAP_SIZE))
    )


def board_config_header(board: Dict[str, Any], workspace: int, icount: bool) -> str:
    uart = board["uart"]
    emulated = board.get("qemu") is not None
    counter_hz = board["qemu"]["timer_hz"] if emulated else board["clock_hz"]
    lines = [
        f"/* Board facts for {board['name']}, written by generate_project from boards.json. */",
        "#ifndef MTVM_BOARD_CONFIG_H_",
        "#define MTVM_BOARD_CONFIG_H_",
        f'#define MTVM_BOARD_NAME "{board["name"]}"',
        f"#define MTVM_CPU_HZ {int(board['clock_hz'])}ull",
        f"#define MTVM_COUNTER_HZ {int(counter_hz)}ull",
        f"#define MTVM_EMULATED {1 if emulated else 0}",
        f"#define MTVM_ICOUNT_SHIFT {0 if (emulated and icount) else -1}",
        f"#define MTVM_HAS_FPU {0 if board.get('fpu') is None else 1}",
        f"#define MTVM_HAS_DWT {1 if board.get('dwt') else 0}",
        f"#define MTVM_NUM_IRQS {int(board['num_irqs'])}",
        f"#define MTVM_WORKSPACE_SIZE_BYTES {workspace}u",
        f"#define MTVM_UART_BASE {uart['base']}u",
        f"#define MTVM_UART_CLOCK_HZ {int(uart['clock_hz'])}u",
        f"#define MTVM_UART_BAUD {int(uart['baud'])}u",
        "#define MTVM_UART_IRQS {" + ", ".join(str(int(i)) for i in uart["irqs"]) + "}",
    ]
    if uart["kind"] == "stm32":
        brr = round(int(uart.get("brr_scale", 1)) * int(uart["clock_hz"]) / int(uart["baud"]))
        writes = ", ".join(f"{{{w['address']}u, {w['mask']}u, {w['value']}u}}" for w in uart["setup"])
        lines += [f"#define MTVM_UART_BRR {brr}u", f"#define MTVM_UART_SETUP {{{writes}}}"]
    lines += ["#endif", ""]
    return "\n".join(lines)


UART_DRIVERS = {"cmsdk": "uart_cmsdk.c", "stm32": "uart_stm32.c"}

_OVERFLOW_RE = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


def build_report(elf: Path, board: Dict[str, Any]) -> Dict[str, Any]:
    """Flash and RAM use read from the ELF, per memory region of the board."""
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile

    regions = [
        {"name": r["name"], "kind": r["kind"], "origin": int(r["origin"], 16), "length": int(r["length"]), "used": 0}
        for r in board["memory"]
    ]

    def region_of(addr: int) -> Optional[Dict[str, Any]]:
        return next((r for r in regions if r["origin"] <= addr < r["origin"] + r["length"]), None)

    sections: Dict[str, int] = {}
    symbols: Dict[str, int] = {}
    with open(elf, "rb") as fh:
        elffile = ELFFile(fh)
        loads = [s for s in elffile.iter_segments() if s["p_type"] == "PT_LOAD"]
        for sec in elffile.iter_sections():
            size = sec["sh_size"]
            if not sec["sh_flags"] & SH_FLAGS.SHF_ALLOC or size == 0:
                continue
            sections[sec.name] = size
            vma = sec["sh_addr"]
            home = region_of(vma)
            if home is not None:
                home["used"] += size
            if sec["sh_type"] != "SHT_NOBITS":
                seg = next((s for s in loads if s["p_vaddr"] <= vma < s["p_vaddr"] + max(s["p_memsz"], 1)), None)
                if seg is not None:
                    lma_region = region_of(seg["p_paddr"] + (vma - seg["p_vaddr"]))
                    if lma_region is not None and lma_region is not home:
                        lma_region["used"] += size
        symtab = elffile.get_section_by_name(".symtab")
        if symtab is not None:
            for name in ("g_workspace",):
                found = symtab.get_symbol_by_name(name)
                if found:
                    symbols[name] = found[0]["st_size"]
    code, data = _region(board, "code")["name"], _region(board, "data")["name"]
    return {
        "board": board["name"],
        "core": board["core"],
        "elf": str(elf),
        "regions": regions,
        "flash": {
            "region": code,
            "code_bytes": sections.get(".text", 0),
            "constants_bytes": sections.get(".rodata", 0),
            "data_image_bytes": sections.get(".data", 0),
        },
        "ram": {
            "region": data,
            "data_bytes": sections.get(".data", 0),
            "bss_bytes": sections.get(".bss", 0),
            "workspace_bytes": symbols.get("g_workspace", 0),
            "stack_bytes": STACK_SIZE,
            "min_heap_bytes": MIN_HEAP_SIZE,
        },
    }


def format_report(report: Dict[str, Any]) -> str:
    lines = [f"build report: {report['board']} ({report['core']})"]
    for r in report["regions"]:
        share = 100.0 * r["used"] / r["length"] if r["length"] else 0.0
        lines.append(f"  {r['name']:<6} {r['used']:>10,} of {r['length']:>10,} bytes ({share:.1f}%)")
    f, m = report["flash"], report["ram"]
    lines.append(
        f"  flash: code {f['code_bytes']:,}, constants {f['constants_bytes']:,}, initial data {f['data_image_bytes']:,}"
    )
    lines.append(
        f"  ram: workspace {m['workspace_bytes']:,}, other static {m['data_bytes'] + m['bss_bytes'] - m['workspace_bytes']:,}, "
        f"stack {m['stack_bytes']:,}, heap for tensors: the rest"
    )
    return "\n".join(lines)


def _boot_check(board: Dict[str, Any], image: Path, icount: bool, timeout_sec: float = BOOT_TIMEOUT_SEC) -> float:
    """Starts QEMU on ``image``, asks the firmware hello, ends QEMU; seconds to the answer."""
    from microtvm_registry.device import protocol
    from microtvm_registry.device.qemu import QemuBoard
    from microtvm_registry.device.serial_transport import SerialTransport

    qemu = QemuBoard(board["qemu"]["machine"], image, 0 if icount else None, board=board["name"])
    start = time.monotonic()
    qemu.start()
    try:
        link = SerialTransport(qemu.pty, alive=qemu.exit_reason)
        try:
            link.write(protocol.encode_frame(protocol.MSG_HELLO), 5)
            decoder = protocol.FrameDecoder()
            deadline = start + timeout_sec
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CortexMError(
                        f"the firmware did not answer on {board['name']} within {timeout_sec:g} s of QEMU starting; "
                        "QEMU was stopped and nothing was flashed"
                    )
                try:
                    frames = decoder.feed(link.read(4096, min(left, 1.0)))
                except server.IoTimeoutError:
                    continue
                except server.TransportClosedError as err:
                    raise CortexMError(f"{err or 'QEMU ended'} before the firmware answered; nothing was flashed") from None
                if frames:
                    if frames[0].type != protocol.REPLY_HELLO:
                        raise CortexMError(f"the firmware answered hello with message type 0x{frames[0].type:02x}")
                    return time.monotonic() - start
        finally:
            link.close()
    finally:
        qemu.close()


def _auto_port(board: Dict[str, Any]) -> str:
    """The one connected device that can be this board (``serial_port=auto``)."""
    from microtvm_registry.boards.discovery import pick_port
    from microtvm_registry.errors import BoardError

    try:
        return pick_port(board["name"])
    except BoardError as err:
        raise CortexMError(str(err)) from None


class Handler(server.ProjectAPIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._transport = None
        self._qemu = None

    def server_info_query(self, tvm_version: str) -> server.ServerInfo:
        return server.ServerInfo(
            platform_name="cortex-m",
            is_template=IS_TEMPLATE,
            model_library_format_path="" if IS_TEMPLATE else str(PROJECT_DIR / MODEL_TAR_NAME),
            project_options=PROJECT_OPTIONS,
        )

    # -------------------------------------------------------------- generate

    def generate_project(self, model_library_format_path, standalone_crt_dir, project_dir, options):
        options = options or {}
        board = _board(options.get("board"))
        opt = options.get("opt_level") or "-O2"
        if opt not in OPT_LEVELS:
            raise CortexMError(f"option opt_level={opt!r} is not one of {', '.join(OPT_LEVELS)}")
        config = {
            "board": board["name"],
            "opt_level": opt,
            "workspace_size_bytes": _int_option(options, "workspace_size_bytes", None),
            "icount": kit.bool_option(options.get("icount"), True),
        }
        try:
            with kit.staged_project(Path(project_dir)) as out:
                self._populate(out, Path(model_library_format_path), board, config)
        except kit.TemplateKitError as err:
            raise CortexMError(str(err)) from None

    def _populate(self, out: Path, mlf_path: Path, board: Dict[str, Any], config: Dict[str, Any]) -> None:
        shutil.copy2(__file__, out / "microtvm_api_server.py")
        shutil.copy2(PROJECT_DIR / "boards.json", out / "boards.json")
        shutil.copy2(PROJECT_DIR / "firmware.ld.template", out / "firmware.ld.template")
        shutil.copytree(kit.shared_runtime(PROJECT_DIR), out / "runtime")
        shutil.copytree(PROJECT_DIR / "src", out / "src")
        _library, config["workspace_size_bytes"] = kit.add_model(
            out, mlf_path, config["workspace_size_bytes"], DEFAULT_WORKSPACE_SIZE_BYTES
        )
        (out / "src" / "board_config.h").write_text(
            board_config_header(board, config["workspace_size_bytes"], config["icount"])
        )
        (out / "firmware.ld").write_text(linker_script(board))
        makefile = (PROJECT_DIR / "Makefile.template").read_text()
        (out / "Makefile").write_text(
            makefile.replace("@BOARD@", board["name"])
            .replace("@ARCH_FLAGS@", " ".join(arch_flags(board)))
            .replace("@OPT@", config["opt_level"])
            .replace("@UART_DRIVER@", UART_DRIVERS[board["uart"]["kind"]])
        )
        (out / PROJECT_FILE).write_text(json.dumps(config, indent=2) + "\n")

    # ----------------------------------------------------------------- build

    def _board_of_project(self) -> Dict[str, Any]:
        if IS_TEMPLATE:
            raise CortexMError("this is the template, not a generated project; run generate_project first")
        return _board(CONFIG.get("board"))

    def build(self, options):
        options = options or {}
        board = self._board_of_project()
        if shutil.which(TOOLCHAIN) is None:
            raise CortexMError(f"{TOOLCHAIN} is not on PATH, and cortex-m firmware needs it; install it with: {TOOLCHAIN_HINT}")
        make = shutil.which("make")
        if make is None:
            raise CortexMError("`make` is not on PATH; install make (e.g. apt-get install make)")
        verbose = kit.bool_option(options.get("verbose"))
        cmd = [make, "-C", str(PROJECT_DIR)] + (["V=1"] if verbose else [])
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = proc.stdout.decode("utf-8", "replace")
        if verbose:
            sys.stderr.write(output)
        if proc.returncode != 0:
            lines = output.rstrip().splitlines()
            overflow = _OVERFLOW_RE.search(output)
            if overflow:
                name, extra = overflow.group(1), int(overflow.group(2))
                region = next(r for r in board["memory"] if r["name"] == name)
                have = int(region["length"])
                raise CortexMError(
                    f"the firmware does not fit {board['name']}: region {name} needs {have + extra} bytes, "
                    f"the board has {have} (over by {extra}); use a smaller model or workspace_size_bytes"
                )
            tail = "\n".join(lines[-BUILD_LOG_TAIL_LINES:])
            raise CortexMError(
                f"build of {PROJECT_DIR} failed (make exited {proc.returncode}): {kit.telling_line(lines)}; "
                f"the compiler's last lines:\n{tail}"
            )
        report = build_report(PROJECT_DIR / FIRMWARE, board)
        (PROJECT_DIR / "build" / BUILD_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        sys.stderr.write(format_report(report) + "\n")

    # ----------------------------------------------------------------- flash

    def flash(self, options):
        options = options or {}
        board = self._board_of_project()
        image = PROJECT_DIR / FIRMWARE
        if not image.is_file():
            raise CortexMError(f"{image} does not exist; build the project first")
        if board.get("qemu"):
            timeout = _int_option(options, "boot_timeout_sec", int(BOOT_TIMEOUT_SEC))
            seconds = _boot_check(board, image, CONFIG.get("icount", True), float(timeout or BOOT_TIMEOUT_SEC))
            target = PROJECT_DIR / FLASHED
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copy2(image, tmp)
            os.replace(tmp, target)
            if kit.bool_option(options.get("verbose")):
                sys.stderr.write(f"flashed {board['name']} (emulated): the firmware answered {seconds * 1000:.0f} ms after QEMU started\n")
            return
        self._flash_real(board, image, options)

    def _flash_real(self, board: Dict[str, Any], image: Path, options: Dict[str, Any]) -> None:
        command = options.get("flash_command")
        if command:
            cmd = [part.format(elf=image, bin=image.with_suffix(".bin"), board=board["name"]) for part in shlex.split(command)]
        elif shutil.which("pyocd"):
            cmd = ["pyocd", "flash", "-t", board["pyocd_target"], str(image)]
        else:
            raise CortexMError(
                f"flashing {board['name']} needs pyOCD (pip install pyocd) or -o flash_command='TOOL ... {{elf}}'"
            )
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = proc.stdout.decode("utf-8", "replace")
        if kit.bool_option(options.get("verbose")):
            sys.stderr.write(output)
        if proc.returncode != 0:
            last = (output.strip().splitlines() or ["no output"])[-1]
            raise CortexMError(f"flashing {board['name']} with {cmd[0]} failed (exit {proc.returncode}): {last}")

    # ------------------------------------------------------------- transport

    def open_transport(self, options):
        from microtvm_registry.device.qemu import QemuBoard, QemuError, install_signal_cleanup
        from microtvm_registry.device.serial_transport import SerialPortError, SerialTransport

        options = options or {}
        board = self._board_of_project()
        self.close_transport()
        try:
            if board.get("qemu"):
                image = PROJECT_DIR / FLASHED
                if not image.is_file():
                    raise CortexMError(f"{image} does not exist; flash the project first (microtvm flash {PROJECT_DIR})")
                install_signal_cleanup()
                self._qemu = QemuBoard(
                    board["qemu"]["machine"], image, 0 if CONFIG.get("icount", True) else None, board=board["name"]
                )
                self._qemu.start()
                self._transport = SerialTransport(self._qemu.pty, alive=self._qemu.exit_reason)
            else:
                port = options.get("serial_port") or ""
                if not port:
                    raise CortexMError(f"option serial_port is required for {board['name']} (a port, or 'auto')")
                if port == "auto":
                    port = _auto_port(board)
                self._transport = SerialTransport(port)
        except (QemuError, SerialPortError) as err:
            self.close_transport()
            raise CortexMError(str(err)) from None
        except BaseException:
            self.close_transport()
            raise
        return server.TransportTimeouts(
            session_start_retry_timeout_sec=2.0,
            session_start_timeout_sec=10.0,
            session_established_timeout_sec=30.0,
        )

    def close_transport(self):
        transport, self._transport = self._transport, None
        qemu, self._qemu = self._qemu, None
        if transport is not None:
            transport.close()
        if qemu is not None:
            qemu.close()

    def _live(self):
        if self._transport is None:
            raise server.TransportClosedError()
        return self._transport

    def read_transport(self, n, timeout_sec):
        try:
            return self._live().read(n, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()
            raise

    def write_transport(self, data, timeout_sec):
        try:
            self._live().write(data, timeout_sec)
        except server.TransportClosedError:
            self.close_transport()
            raise


if __name__ == "__main__":
    server.main(Handler())
