"""Benchmark of `microtvm tune`: the DS-CNN keyword-spotting net at its MLPerf Tiny size (input
1x49x10, 4 depthwise-separable blocks of 64 channels), float32 and int8, on the emulated
Cortex-M4 (mps2-an386, QEMU -icount shift=0).

    .venv/bin/python benchmarks/tuning.py

For each: instructions per whole inference with TVM's default lowering (the baseline, same run)
and with the records `microtvm tune` wrote (goal: at least 2x fewer), the candidates measured,
the tuning time and candidates per minute. Then the tuned figure beside the published MLPerf
Tiny v0.7 keyword-spotting latencies the issue cites, converted to cycles at the NUCLEO-L4R5ZI's
120 MHz: microTVM with CMSIS-NN, 100 ms (12.0 M cycles), and TFLite Micro's reference, 182 ms
(21.8 M cycles). Those are int8 models on a real Cortex-M4; ours are instruction counts on an
emulated one, which is not cycle-exact (no wait states, no pipeline stalls counted): a scale,
not a like-for-like comparison.
"""
from __future__ import annotations

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
from microtvm_registry.compile.sample_models import ds_cnn, quantize_qdq  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import generate_project  # noqa: E402
from microtvm_registry.tuning.tuner import tune_model  # noqa: E402

BOARD, CORE = "mps2-an386", "cortex-m4"
MLPERF_CLOCK_HZ = 120e6
MLPERF = {"microTVM + CMSIS-NN (int8, NUCLEO-L4R5ZI)": 0.100, "TFLite Micro reference (int8, NUCLEO-L4R5ZI)": 0.182}


def inference_count(model: Path, work: Path, tag: str, records=None):
    """(instructions per inference, the plan's static RAM: arena + workspace)."""
    compiled = compile_model(model, work / f"{tag}.tar", target=CORE, records=records, board=BOARD if records else None)
    project = generate_project(get_packaged_resource("templates/cortex-m"), compiled.path, work / tag, {"board": BOARD})
    with project:
        project.build()
        project.flash()
    shape = (1, 1, 49, 10)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with Session.open(work / tag) as sess:
        sess.run(compiled.name, {"input": x})
        count = sess.time_evaluator(compiled.name, number=1, repeat=1)().counts[0]
    return count, compiled.plan.arena_bytes + compiled.plan.workspace_bytes


def main() -> int:
    import onnx

    work = Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    try:
        float_path = work / "ds_cnn.onnx"
        onnx.save(ds_cnn(), str(float_path))
        models = {"float32": float_path, "int8": quantize_qdq(float_path, work / "ds_cnn_int8.onnx", "input", (1, 1, 49, 10))}
        tuned_counts = {}
        for kind, path in models.items():
            records = work / f"{kind}.records.jsonl"
            start = time.monotonic()
            report = tune_model(path, BOARD, records)
            seconds = time.monotonic() - start
            before, ram_before = inference_count(path, work, f"{kind}-default")
            after, ram_after = inference_count(path, work, f"{kind}-tuned", records=records)
            tuned_counts[kind] = after
            print(f"== DS-CNN {kind} on {BOARD} ({CORE}, QEMU -icount: instructions)")
            print(f"   default lowering (baseline): {before:,.0f} per inference")
            print(f"   tuned: {after:,.0f} per inference = {before / after:.2f}x fewer (goal >= 2x)")
            print(f"   plan RAM (arena + workspace): {ram_before:,} B default -> {ram_after:,} B tuned = {ram_after / ram_before:.2f}x")
            print(f"   {report.measured} candidates over {len(report.kernels)} kernels in {seconds:.0f} s "
                  f"({report.measured / (seconds / 60):.0f} per minute, including import, builds and QEMU sessions)")
            for k in sorted(report.kernels, key=lambda k: -(k.default_count or 0))[:4]:
                if k.default_count and k.best_count:
                    print(f"     {k.kernel:<28} {k.default_count:>12,.0f} -> {k.best_count:>12,.0f} ({k.default_count / k.best_count:.2f}x): {k.best.describe()}")
        print("== against the published MLPerf Tiny v0.7 keyword-spotting latencies (cycles at 120 MHz; a scale, see the docstring)")
        for name, seconds in MLPERF.items():
            cycles = seconds * MLPERF_CLOCK_HZ
            print(f"   {name}: {seconds * 1e3:.0f} ms = {cycles / 1e6:.1f} M cycles; tuned int8 here {tuned_counts['int8'] / 1e6:.1f} M "
                  f"instructions = {tuned_counts['int8'] / cycles:.2f}x, tuned float32 {tuned_counts['float32'] / 1e6:.1f} M = {tuned_counts['float32'] / cycles:.2f}x")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
