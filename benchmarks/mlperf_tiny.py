"""Benchmark: the MLPerf Tiny int8 reference models against TensorFlow Lite Micro on the same
emulated board, every figure a ratio to the anchor's exact counts.

    .venv/bin/python benchmarks/mlperf_tiny.py [--models kws,vww,ic,ad] [--kernels tvm,cmsis-nn]

For each int8 model in ../shared/models/mlperf-tiny (KWS, VWW, IC, AD) and each kernel provider
(``--kernels tvm``: every layer a TVM kernel; ``cmsis-nn``: the layers CMSIS-NN computes as calls
of arm/cmsis-nn, fetched through the registry, from ../shared/mirrors when that is there):
compiled for the Cortex-M4, built with the cortex-m template for mps2-an386, run under QEMU
-icount shift=0, and checked against TFLite Micro's interpreter (all-zero input) before anything
is counted:

* instructions per inference: what `run --time` reports for the all-zero input (the anchor's
  ``insn_zeros``), QEMU -icount: exact, so the anchor's constants compare honestly;
* plan: arena + workspace (the RAM the model itself needs) against TFLM's smallest working arena;
* runtime: the firmware's own static RAM (everything in .data + .bss but the plan: the session
  runtime, the port, the model's tensor table, the C library), from the build report;
* RAM: .data + .bss of our whole firmware (plan + runtime) against TFLM's;
* flash: code + constants + initial data of our firmware against TFLM's.

The baseline is ../shared/data/tflm-anchor.json: TFLite Micro with its reference kernels ("ref")
and with CMSIS-NN ("cmsis_nn"), measured on the same QEMU board (its "how" says how). Exits 0;
the ratios are the result (goals are in the issues, not asserted here).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from microtvm_registry import get_packaged_resource  # noqa: E402
from microtvm_registry.compile.model import compile_model  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import generate_project  # noqa: E402

SHARED = REPO.parent / "shared"
ANCHOR = SHARED / "data" / "tflm-anchor.json"
BOARD, CORE = "mps2-an386", "cortex-m4"


def measure(key: str, model: Path, work: Path, kernels: str) -> dict:
    from tflite_micro.python.tflite_micro import runtime

    started = time.monotonic()
    name = f"{key}-{kernels}"
    compiled = compile_model(model, work / f"{name}.tar", target=CORE, kernels=kernels)
    project = generate_project(get_packaged_resource("templates/cortex-m"), compiled.path, work / name, {"board": BOARD})
    with project:
        project.build()
        project.flash()
    report = json.loads((work / name / "build" / "build-report.json").read_text())
    inputs = [np.zeros(t.shape, t.dtype) for t in compiled.plan.inputs]
    interpreter = runtime.Interpreter.from_file(str(model))
    for n, x in enumerate(inputs):
        interpreter.set_input(x, n)
    interpreter.invoke()
    want = interpreter.get_output(0)
    with Session.open(work / name) as sess:
        function = sess.model["function"]
        got = sess.run(function, inputs)[compiled.plan.outputs[0].name]
        outputs = [np.zeros(t.shape, t.dtype) for t in compiled.plan.outputs]
        timing = sess.time_evaluator(function, number=1, repeat=1)(*inputs, *outputs)
    f, r = report["flash"], report["ram"]
    return {
        "exact": bool(np.array_equal(got, want)),
        "instructions": timing.counts[0],
        "plan": compiled.summary["arena_bytes"] + compiled.summary["workspace_bytes"],
        "ram": r["data_bytes"] + r["bss_bytes"],
        "runtime": report["parts"]["runtime_bytes"],
        "flash": f["code_bytes"] + f["constants_bytes"] + f["data_image_bytes"],
        "seconds": time.monotonic() - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="kws,vww,ic,ad", help="which of kws, vww, ic, ad (default: all)")
    parser.add_argument("--kernels", default="tvm,cmsis-nn", help="which kernel providers (default: tvm,cmsis-nn)")
    args = parser.parse_args()
    mirror = SHARED / "mirrors" / "CMSIS-NN.git"
    if mirror.is_dir() and not os.environ.get("MICROTVM_REGISTRY_GIT_MIRROR"):
        # no network here: the curated index's upstream URL answered by the local mirror
        os.environ["MICROTVM_REGISTRY_GIT_MIRROR"] = f"https://github.com/ARM-software/CMSIS-NN.git=file://{mirror}"
    if not ANCHOR.is_file():
        print(f"{ANCHOR} is absent: the anchor figures live in ../shared/data", file=sys.stderr)
        return 1
    anchor = json.loads(ANCHOR.read_text())["models"]
    work = Path(tempfile.mkdtemp(prefix="mlperf-tiny-"))
    rows = []
    try:
        for key in args.models.split(","):
            for kernels in args.kernels.split(","):
                model = SHARED / "models" / "mlperf-tiny" / anchor[key]["file"]
                ours = measure(key, model, work, kernels)
                ref, nn = anchor[key]["ref"], anchor[key]["cmsis_nn"]
                rows.append((key, kernels, ours, ref, nn))
                print(f"{key} --kernels {kernels}: measured in {ours['seconds']:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"MLPerf Tiny int8 on {BOARD} ({CORE}, QEMU -icount shift=0); ratios to TFLite Micro on the same board "
          "(ref: reference kernels, nn: CMSIS-NN kernels)")
    header = ["model", "kernels", "exact", "instructions", "x ref", "x nn", "plan B", "x arena", "runtime B", "RAM B", "x nn RAM", "flash B", "x nn flash"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for key, kernels, ours, ref, nn in rows:
        print(" | ".join([
            key.upper(), kernels, "yes" if ours["exact"] else "NO",
            f"{ours['instructions']:,.0f}", f"{ours['instructions'] / ref['insn_zeros']:.2f}", f"{ours['instructions'] / nn['insn_zeros']:.4f}",
            f"{ours['plan']:,}", f"{ours['plan'] / nn['arena_min']:.2f}",
            f"{ours['runtime']:,}", f"{ours['ram']:,}", f"{ours['ram'] / nn['ram']:.2f}",
            f"{ours['flash']:,}", f"{ours['flash'] / nn['flash']:.2f}",
        ]))
    return 0 if all(ours["exact"] for _, _, ours, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
