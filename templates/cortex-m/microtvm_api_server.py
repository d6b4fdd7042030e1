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

What every template shares (generating, building with make, the transport's life) is the
template kit's ``TemplateServer``; this file is what is Cortex-M: its boards, compiler flags,
start-up code and UART drivers. It runs under the client's interpreter, which has
microtvm_registry installed, and uses only its public template kit.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping

from microtvm_registry import template_kit as kit
from microtvm_registry.project_api import server

PROJECT_DIR = Path(__file__).resolve().parent
FIRMWARE = Path("build") / "firmware.elf"
FLASHED = Path("flashed") / "firmware.elf"
BUILD_REPORT = "build-report.json"
DEFAULT_WORKSPACE_SIZE_BYTES = 64 * 1024
STACK_SIZE = 16 * 1024
MIN_HEAP_SIZE = 16 * 1024
BOOT_TIMEOUT_SEC = 20.0
FAMILY = kit.family_of("cortex-m4")  # the Cortex-M family of targets.json: its toolchain
TOOLCHAIN = FAMILY.toolchain.tools[0]
OPT_LEVELS = ["-O0", "-O1", "-O2", "-O3", "-Os"]
FPU_FLAGS = {None: [], "auto": ["-mfloat-abi=hard"]}


def _load_boards() -> Dict[str, Dict[str, Any]]:
    with open(PROJECT_DIR / "boards.json", encoding="utf-8") as fh:
        return {b["name"]: b for b in json.load(fh)["boards"]}


BOARDS = _load_boards()


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
        help="Real boards: the command that flashes, with {elf}, {bin} and {board} filled in ({{ and }} for literal braces; default: pyOCD).",
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


def _board(name: Any) -> Dict[str, Any]:
    if not name:
        raise kit.TemplateKitError(f"option board is required; one of: {', '.join(sorted(BOARDS))}")
    if name not in BOARDS:
        raise kit.TemplateKitError(f"unknown board {name!r}; boards: {', '.join(sorted(BOARDS))}")
    return BOARDS[name]


def arch_flags(board: Dict[str, Any]) -> List[str]:
    flags = [f"-mcpu={board['core']}"] + list(FAMILY.compiler_flags)
    fpu = board.get("fpu")
    if fpu in FPU_FLAGS:
        flags += FPU_FLAGS[fpu]
    else:
        flags += [f"-mfpu={fpu}", f"-mfloat-abi={board.get('float_abi', 'hard')}"]
    if fpu is None:
        flags.append("-mfloat-abi=soft")
    return flags


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


def _check_model_core(model: Mapping[str, Any], board: Dict[str, Any]) -> None:
    """A model compiled for another core: its C builds with the board's flags, but a kernel
    library's scratch buffers were sized for the core it was compiled for (CMSIS-NN's DSP, MVE
    and plain-C paths need different ones), so that is refused; otherwise a note."""
    compiled_for = model.get("target")
    if not compiled_for or compiled_for == board["core"]:
        return
    libraries = [lib.get("name", "?") for lib in model.get("libraries") or [] if isinstance(lib, dict)]
    if libraries:
        raise kit.TemplateKitError(
            f"the model was compiled for {compiled_for} with {', '.join(libraries)}, whose buffers are sized for that core; "
            f"{board['name']} is a {board['core']}: recompile with --target {board['core']}"
        )
    sys.stderr.write(
        f"note: the model was compiled for {compiled_for}; {board['name']} is a {board['core']}: it builds with the board's "
        f"flags, but its kernels were chosen for {compiled_for} (recompile with --target {board['core']} for the board's own)\n"
    )


class Handler(kit.TemplateServer):
    platform_name = "cortex-m"
    project_options = PROJECT_OPTIONS

    # -------------------------------------------------------------- generate

    def project_config(self, options: Mapping[str, Any]) -> Dict[str, Any]:
        board = _board(options.get("board"))
        opt = options.get("opt_level") or "-O2"
        if opt not in OPT_LEVELS:
            raise kit.TemplateKitError(f"option opt_level={opt!r} is not one of {', '.join(OPT_LEVELS)}")
        return {
            "board": board["name"],
            "opt_level": opt,
            "workspace_size_bytes": kit.int_option(options, "workspace_size_bytes", None),
            "icount": kit.bool_option(options.get("icount"), True),
        }

    def populate(self, out: Path, mlf_path: Path, config: Dict[str, Any]) -> None:
        board = BOARDS[config["board"]]
        for name in ("boards.json", "firmware.ld.template"):
            shutil.copy2(PROJECT_DIR / name, out / name)
        shutil.copytree(kit.shared_runtime(PROJECT_DIR), out / "runtime")
        shutil.copytree(PROJECT_DIR / "src", out / "src")
        ram = kit.region(board, "data")
        room = (int(ram["length"]) - STACK_SIZE - MIN_HEAP_SIZE, f"{board['name']}'s {ram['name']} less its stack and heap")
        _library, config["workspace_size_bytes"] = kit.add_model(
            out, mlf_path, config["workspace_size_bytes"], DEFAULT_WORKSPACE_SIZE_BYTES, room
        )
        _check_model_core(_library.model or {}, board)
        (out / "src" / "board_config.h").write_text(
            board_config_header(board, config["workspace_size_bytes"], config["icount"])
        )
        template = (PROJECT_DIR / "firmware.ld.template").read_text()
        (out / "firmware.ld").write_text(kit.linker_script(template, board, STACK_SIZE, MIN_HEAP_SIZE))
        makefile = (PROJECT_DIR / "Makefile.template").read_text()
        (out / "Makefile").write_text(
            makefile.replace("@BOARD@", board["name"])
            .replace("@ARCH_FLAGS@", " ".join(arch_flags(board)))
            .replace("@OPT@", config["opt_level"])
            .replace("@UART_DRIVER@", UART_DRIVERS[board["uart"]["kind"]])
        )

    # ----------------------------------------------------------------- build

    def board(self) -> Dict[str, Any]:
        self.require_project()
        try:
            return _board(self.config.get("board"))
        except kit.TemplateKitError as err:
            raise kit.template_error(str(err)) from None

    def build(self, options):
        self.board()
        if shutil.which(TOOLCHAIN) is None:
            raise kit.template_error(
                f"{TOOLCHAIN} is not on PATH, and cortex-m firmware needs it; install it with: {FAMILY.toolchain.install_hint}"
            )
        super().build(options)

    def explain_build_failure(self, output: str):
        return kit.explain_overflow(output, self.board())

    def after_build(self, output: str) -> None:
        report = kit.build_report(PROJECT_DIR / FIRMWARE, self.board(), STACK_SIZE, MIN_HEAP_SIZE,
                                  symbols=kit.model_symbols(PROJECT_DIR), libraries=kit.project_libraries(PROJECT_DIR))
        (PROJECT_DIR / "build" / BUILD_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        sys.stderr.write(kit.format_report(report) + "\n")

    # ----------------------------------------------------------------- flash

    def flash(self, options):
        options = options or {}
        board = self.board()
        image = PROJECT_DIR / FIRMWARE
        if not image.is_file():
            raise kit.template_error(f"{image} does not exist; build the project first")
        if board.get("qemu"):
            try:
                timeout = kit.int_option(options, "boot_timeout_sec", int(BOOT_TIMEOUT_SEC))
                seconds = kit.boot_check(board, image, self.config.get("icount", True), float(timeout or BOOT_TIMEOUT_SEC))
            except kit.TemplateKitError as err:
                raise kit.template_error(str(err)) from None
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
            fields = {"elf": str(image), "bin": str(image.with_suffix(".bin")), "board": board["name"]}
            try:
                cmd = kit.fill_command("flash_command", command, fields)
            except kit.TemplateKitError as err:
                raise kit.template_error(str(err)) from None
        elif shutil.which("pyocd"):
            cmd = ["pyocd", "flash", "-t", board["pyocd_target"], str(image)]
        else:
            raise kit.template_error(
                f"flashing {board['name']} needs pyOCD (pip install pyocd) or -o flash_command='TOOL ... {{elf}}'"
            )
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        output = proc.stdout.decode("utf-8", "replace")
        if kit.bool_option(options.get("verbose")):
            sys.stderr.write(output)
        if proc.returncode != 0:
            last = (output.strip().splitlines() or ["no output"])[-1]
            raise kit.template_error(f"flashing {board['name']} with {cmd[0]} failed (exit {proc.returncode}): {last}")

    # ------------------------------------------------------------- transport

    def open_device(self, options: Mapping[str, Any]):
        board = self.board()
        self._qemu = None
        if board.get("qemu"):
            image = PROJECT_DIR / FLASHED
            if not image.is_file():
                raise kit.TemplateKitError(f"{image} does not exist; flash the project first (microtvm flash {PROJECT_DIR})")
            transport, self._qemu = kit.open_emulated(board, image, self.config.get("icount", True))
        else:
            port = options.get("serial_port") or ""
            if not port:
                raise kit.TemplateKitError(f"option serial_port is required for {board['name']} (a port, or 'auto')")
            transport = kit.open_serial(port, board["name"])
        return transport, server.TransportTimeouts(
            session_start_retry_timeout_sec=2.0,
            session_start_timeout_sec=10.0,
            session_established_timeout_sec=30.0,
        )

    def close_device(self) -> None:
        qemu, self._qemu = getattr(self, "_qemu", None), None
        if qemu is not None:
            qemu.close()


if __name__ == "__main__":
    server.main(Handler(__file__))
