"""Benchmark of the cortex-m template on QEMU's emulated boards, each figure beside a baseline
measured in this run.

    .venv/bin/python benchmarks/cortex_m.py

1. Serial throughput through the Project API and the session (an echo of 16 KiB) vs the same
   emulated UART driven raw: a firmware echo loop of this benchmark's own, read with pyserial.
   Goal: >= 0.8x of the raw link. The session is request/response (a frame up, then a frame
   down), so the raw baseline the goal is judged against does the same: its firmware reads a
   length and that many bytes, then sends them back. A byte-by-byte echo, which overlaps the
   two directions as no request/response exchange can, is printed beside it. Raw and session
   runs alternate, ROUNDS times, and medians are compared: this machine is noisy.
2. A no-op call and a 64 KiB upload through the session: emulated mps2-an386 vs host.
3. The demo's kernels (dense, bias_add, relu, fused): instructions per call on every emulated
   board (QEMU -icount shift=0: counts repeat to one timer tick), and flash / RAM use.
4. Time from generate_project to the device's first answer (generate, build, flash, open, hello).

Needs apache-tvm, numpy, make, arm-none-eabi-gcc and qemu-system-arm.
"""
from __future__ import annotations

import json
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from microtvm_registry import get_packaged_resource  # noqa: E402
from microtvm_registry.cli.host_cmds import build_demo_module  # noqa: E402
from microtvm_registry.compile.mlf import export_model_library_format  # noqa: E402
from microtvm_registry.device.qemu import QemuBoard  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import GeneratedProject, generate_project  # noqa: E402

ECHO_BYTES = 16 * 1024
UPLOAD_BYTES = 64 * 1024
ROUNDS = 3
RAW_ECHO_MAIN = """
/* The benchmark's raw echo firmware. 'B' + u32 length + bytes: the block is sent back once it
 * is all in (request/response, as the session's echo). 'S': from then on every byte is sent
 * back as it arrives (a streaming echo). */
#include "mtvm_port.h"
void mtvm_board_init(void);
static uint8_t block[%d];
int main(void) {
  mtvm_board_init();
  uint8_t mode;
  mtvm_port_read(&mode, 1);
  for (;;) {
    if (mode == 'B') {
      uint8_t len[4];
      mtvm_port_read(len, 4);
      uint32_t n = len[0] | len[1] << 8 | len[2] << 16 | (uint32_t)len[3] << 24;
      mtvm_port_read(block, n);
      mtvm_port_write(block, n);
      mtvm_port_read(&mode, 1);
    } else {
      uint8_t b;
      mtvm_port_read(&b, 1);
      mtvm_port_write(&b, 1);
    }
  }
}
""" % (16 * 1024)
BOARDS = ["mps2-an385", "mps2-an386", "mps2-an500", "mps2-an505", "mps3-an547"]


def kernels(tvm):
    from tvm import te

    module = build_demo_module()
    one = te.placeholder((1,), name="one", dtype="float32")
    one_out = te.compute((1,), lambda i: one[i], name="one_out")
    src = te.placeholder((UPLOAD_BYTES // 4,), name="src", dtype="float32")
    sink = te.compute((1,), lambda i: src[0], name="sink")
    module["noop"] = te.create_prim_func([one, one_out])
    module["take"] = te.create_prim_func([src, sink])
    return module


def build_raw_echo(project: Path, work: Path) -> Path:
    """The raw echo firmware, built from a copy of the generated project (same board, same UART)."""
    raw = work / "raw-echo"
    shutil.copytree(project, raw)
    (raw / "src" / "main.c").write_text(RAW_ECHO_MAIN)
    shutil.rmtree(raw / "build", ignore_errors=True)
    with GeneratedProject.from_directory(raw) as p:
        p.build()
    return raw / "build" / "firmware.elf"


def raw_echo(image: Path, streaming: bool) -> float:
    """Bytes per second through the raw echo firmware over the emulated UART, read with pyserial."""
    import serial

    payload = bytes(range(256)) * (ECHO_BYTES // 256)
    with QemuBoard("mps2-an386", image, 0) as board:
        port = serial.Serial(board.pty, 115200, timeout=10)
        got = bytearray()
        if streaming:
            port.write(b"Sx")
            assert port.read(1) == b"x"  # the line is up: time from here

            def reader():
                while len(got) < len(payload):
                    got.extend(port.read(len(payload) - len(got)))

            thread = threading.Thread(target=reader)
            start = time.perf_counter()
            thread.start()
            port.write(payload)
            thread.join()
        else:
            port.write(b"B" + struct.pack("<I", 1) + b"x")
            assert port.read(1) == b"x"  # the line is up: time from here
            start = time.perf_counter()
            port.write(b"B" + struct.pack("<I", len(payload)) + payload)
            while len(got) < len(payload):
                got.extend(port.read(len(payload) - len(got)))
        seconds = time.perf_counter() - start
        port.close()
    assert bytes(got) == payload
    return len(payload) / seconds


def session_echo(project_dir: Path) -> float:
    """Bytes per second of a 16 KiB echo through the Project API and the session."""
    payload = bytes(range(256)) * (ECHO_BYTES // 256)
    with Session.open(project_dir) as sess:
        sess.echo(b"x")
        start = time.perf_counter()
        assert sess.echo(payload) == payload
        return len(payload) / (time.perf_counter() - start)


def session_figures(project_dir: Path, with_upload: bool = True):
    x = np.zeros(UPLOAD_BYTES // 4, np.float32)
    with Session.open(project_dir) as sess:
        one = np.zeros(1, np.float32)
        sess.call("noop", one, np.zeros(1, np.float32))
        n = 20
        start = time.perf_counter()
        for _ in range(n):
            sess.call("noop", one, np.zeros(1, np.float32))
        noop = (time.perf_counter() - start) / n
        upload = None
        if with_upload:
            start = time.perf_counter()
            sess.run("take", {"src": x})
            upload = time.perf_counter() - start
    return noop, upload


def main() -> int:
    import tvm

    work = Path(tempfile.mkdtemp(prefix="bench-cortex-m-"))
    try:
        mlf = export_model_library_format(kernels(tvm), work / "model.tar", model_name="bench")
        cortex_m = get_packaged_resource("templates/cortex-m")

        # 4. generate -> first answer
        start = time.perf_counter()
        project = generate_project(cortex_m, mlf, work / "mps2-an386", {"board": "mps2-an386"})
        t_gen = time.perf_counter()
        project.build()
        t_build = time.perf_counter()
        project.flash()
        t_flash = time.perf_counter()
        with Session.open(project):
            t_hello = time.perf_counter()
        project.close()
        print("4. generate_project -> first answer of the device (mps2-an386):")
        print(f"   generate {t_gen - start:.2f} s, build {t_build - t_gen:.2f} s, flash (boot check) "
              f"{t_flash - t_build:.2f} s, open + hello {t_hello - t_flash:.2f} s; total {t_hello - start:.2f} s")

        # 1. serial throughput: raw and session alternate, medians compared
        image = build_raw_echo(work / "mps2-an386", work)
        block, stream, session = [], [], []
        for _ in range(ROUNDS):
            block.append(raw_echo(image, streaming=False))
            session.append(session_echo(work / "mps2-an386"))
            stream.append(raw_echo(image, streaming=True))
        raw, stream_rate, echo_rate = (statistics.median(v) for v in (block, stream, session))
        print(f"1. echo of 16 KiB over the emulated UART (mps2-an386), medians of {ROUNDS} alternating rounds:")
        print(f"   raw block echo (request/response) read with pyserial: {raw / 1024:.1f} KiB/s (baseline)")
        print(f"   session echo through the Project API: {echo_rate / 1024:.1f} KiB/s = {echo_rate / raw:.2f}x of raw (goal >= 0.8x)")
        print(f"   raw streaming echo (both directions at once): {stream_rate / 1024:.1f} KiB/s; "
              f"the session is {echo_rate / stream_rate:.2f}x of it")
        board_noop, board_upload = session_figures(work / "mps2-an386")

        # 2. vs host
        host = generate_project(get_packaged_resource("templates/host"), mlf, work / "host")
        host.build()
        host.close()
        host_noop, host_upload = session_figures(work / "host")
        print("2. through the session, emulated mps2-an386 vs host (baseline):")
        print(f"   no-op call: {board_noop * 1e3:.2f} ms vs {host_noop * 1e3:.3f} ms = {board_noop / host_noop:.0f}x")
        print(f"   64 KiB upload + call: {board_upload:.2f} s vs {host_upload * 1e3:.1f} ms = {board_upload / host_upload:.0f}x")

        # 3. demo kernels per board
        print("3. demo kernels, instructions per call under QEMU -icount shift=0 (mean of 3 x 5), flash and RAM:")
        names = ["dense", "bias_add", "relu", "dense_bias_relu"]
        print(f"   {'board':<11} " + " ".join(f"{n:>16}" for n in names) + f" {'FLASH B':>9} {'RAM B':>9}")
        results = {}
        for board in BOARDS:
            proj = generate_project(cortex_m, mlf, work / f"k-{board}", {"board": board})
            proj.build()
            proj.flash()
            with Session.open(proj) as sess:
                counts = [sess.time_evaluator(n, number=5, repeat=3)().mean_count for n in names]
            proj.close()
            report = json.loads((work / f"k-{board}" / "build" / "build-report.json").read_text())
            used = {r["kind"]: r["used"] for r in report["regions"]}
            results[board] = counts
            print(f"   {board:<11} " + " ".join(f"{c:>16,.0f}" for c in counts) + f" {used['code']:>9,} {used['data']:>9,}")
        base = results["mps2-an386"]
        print("   ratio to mps2-an386 (baseline): " + ", ".join(
            f"{b} {np.mean([c / r for c, r in zip(results[b], base)]):.2f}x" for b in BOARDS if b != "mps2-an386"))
        ok = echo_rate / raw >= 0.8
        print(f"serial goal >= 0.8x of raw: {'OK' if ok else 'MISSED'}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
