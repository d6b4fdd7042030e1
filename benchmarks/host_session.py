"""Benchmark of the host template's session path, each number beside a baseline from this run.

    /tmp/tvmvenv/bin/python benchmarks/host_session.py [--quick]

1. Round trip of a no-op kernel call (session -> Project API client -> template server -> device
   program and back) vs a raw pipe echo round trip through ``cat``.
2. Throughput of a 4 MiB tensor upload + download (a copy kernel) vs a raw pipe copy of 4 MiB
   through ``cat`` (both directions, 8 MiB moved in total either way).
3. A 128x128x128 matmul timed on the device (time_evaluator, the device's clock) vs the same
   kernel timed in-process with apache-tvm's time_evaluator: built with target "c" and loaded
   via export_library (same C, same compiler), and built with target "llvm".

Needs apache-tvm, numpy, make and a C compiler.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from microtvm_registry import get_packaged_resource  # noqa: E402
from microtvm_registry.compile.mlf import export_model_library_format  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import generate_project  # noqa: E402

MIB = 1 << 20
COPY_ELEMS = 4 * MIB // 4
MM = 128


def kernels(tvm):
    from tvm import te

    one = te.placeholder((1,), name="one", dtype="float32")
    one_out = te.compute((1,), lambda i: one[i], name="one_out")
    src = te.placeholder((COPY_ELEMS,), name="src", dtype="float32")
    dst = te.compute((COPY_ELEMS,), lambda i: src[i], name="dst")
    a = te.placeholder((MM, MM), name="a", dtype="float32")
    b = te.placeholder((MM, MM), name="b", dtype="float32")
    k = te.reduce_axis((0, MM), name="k")
    c = te.compute((MM, MM), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="c")
    return tvm.IRModule(
        {
            "noop": te.create_prim_func([one, one_out]),
            "copy": te.create_prim_func([src, dst]),
            "matmul": te.create_prim_func([a, b, c]),
        }
    )


def best_of(fn, rounds):
    """Per-call seconds: the best of a few rounds of ``rounds`` calls (least disturbed by noise)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, (time.perf_counter() - start) / rounds)
    return best


def raw_echo_round_trip(rounds):
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    msg = b"x" * 16
    fd_in, fd_out = proc.stdin.fileno(), proc.stdout.fileno()

    def once():
        os.write(fd_in, msg)
        got = 0
        while got < len(msg):
            got += len(os.read(fd_out, 64))

    try:
        return best_of(once, rounds)
    finally:
        proc.stdin.close()
        proc.wait()
        proc.stdout.close()


def raw_pipe_copy(nbytes):
    """Seconds to push ``nbytes`` through ``cat`` and read them back (writer in a thread)."""
    data = os.urandom(nbytes)
    best = float("inf")
    for _ in range(3):
        proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        start = time.perf_counter()

        def writer():
            proc.stdin.write(data)
            proc.stdin.close()

        thread = threading.Thread(target=writer)
        thread.start()
        chunks = []
        got = 0
        while got < nbytes:
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        thread.join()
        best = min(best, time.perf_counter() - start)
        proc.wait()
        proc.stdout.close()
        assert b"".join(chunks) == data
    return best


def row(what, value, baseline, unit, target):
    ratio = value / baseline if baseline else float("inf")
    print(f"{what:<44} {value:>12.4g} {unit:<6} baseline {baseline:>12.4g} {unit:<6} ratio {ratio:>8.2f}x   target: {target}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 50 if args.quick else 300

    import tvm

    work = Path(tempfile.mkdtemp(prefix="bench-host-"))
    mlf = export_model_library_format(kernels(tvm), work / "bench.tar", model_name="bench")
    project = generate_project(get_packaged_resource("templates/host"), mlf, work / "project",
                               {"workspace_size_bytes": 1 << 16})
    project.build()
    print(f"apache-tvm {tvm.__version__}; project in {project.path}")
    print()

    with Session.open(project, timeout_sec=120) as sess:
        one = np.ones(1, np.float32)
        out = np.zeros(1, np.float32)
        sess.call("noop", one, out)
        noop = best_of(lambda: sess.call("noop", one, out), rounds)
        echo = best_of(lambda: sess.echo(b"x" * 16), rounds)
        raw = raw_echo_round_trip(rounds)
        print("1. round trip")
        row("no-op kernel call via session + Project API", noop * 1e6, raw * 1e6, "us", "<= 1000 us per call")
        row("protocol echo via session + Project API", echo * 1e6, raw * 1e6, "us", "(informational)")
        print()

        src = np.random.default_rng(0).standard_normal(COPY_ELEMS, dtype=np.float32)
        res = sess.run("copy", {"src": src})
        assert np.array_equal(res["dst"], src)
        copy = best_of(lambda: sess.run("copy", {"src": src}), 3 if args.quick else 5)
        raw_copy = raw_pipe_copy(4 * MIB)
        print("2. 4 MiB tensor upload + download (8 MiB moved)")
        session_mibs = 8 / copy
        raw_mibs = 8 / raw_copy
        row("session seconds (upload+call+download)", copy * 1e3, raw_copy * 1e3, "ms", "(lower is better)")
        print(f"{'throughput':<44} {session_mibs:>12.4g} MiB/s  baseline {raw_mibs:>12.4g} MiB/s  "
              f"ratio {raw_mibs / session_mibs:>8.2f}x slower   target: >= 20 MiB/s through JSON-RPC + base85")
        print()

        rng = np.random.default_rng(1)
        a = rng.standard_normal((MM, MM), dtype=np.float32)
        b = rng.standard_normal((MM, MM), dtype=np.float32)
        c = np.zeros((MM, MM), np.float32)
        np.testing.assert_allclose(sess.call("matmul", a, b, c), a @ b, rtol=1e-4, atol=1e-3)
        device = sess.time_evaluator("matmul", number=20, repeat=5)(a, b, c)

    matmul_mod = tvm.IRModule({"matmul": kernels(tvm)["matmul"].with_attr("global_symbol", "matmul")})
    dev = tvm.cpu()
    ta, tb, tc = (tvm.runtime.tensor(x, dev) for x in (a, b, c))
    llvm = tvm.tirx.build(matmul_mod, target="llvm")
    inproc_llvm = llvm.time_evaluator("matmul", dev, number=20, repeat=5)(ta, tb, tc)
    # The same C the device runs, compiled by apache-tvm's export_library and loaded in-process:
    # this isolates the device program and runtime from the compiler difference.
    tvm.tirx.build(matmul_mod, target="c").export_library(str(work / "matmul_c.so"))
    c_lib = tvm.runtime.load_module(str(work / "matmul_c.so"))
    inproc_c = c_lib.time_evaluator("matmul", dev, number=20, repeat=5)(ta, tb, tc)
    print(f"3. {MM}x{MM}x{MM} matmul kernel time (naive schedule)")
    row("device program vs same C in-process (tvm c)", device.mean * 1e6, inproc_c.mean * 1e6, "us",
        "<= 1.5x of the same C run in-process by apache-tvm")
    row("device program vs in-process tvm llvm", device.mean * 1e6, inproc_llvm.mean * 1e6, "us",
        "(informational: LLVM -O3 vs the system cc -O2)")
    print()
    project.close()
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
