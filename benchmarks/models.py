"""Benchmark of whole compiled models, each figure beside a baseline measured in this run.

    .venv/bin/python benchmarks/models.py

For the demo's keyword-spotting network and the DS-CNN keyword-spotting net at its MLPerf Tiny
size (input 1x49x10, 4 depthwise-separable blocks of 64 channels), float32 and int8 (onnxruntime's
static QDQ quantization, compiled to integer kernels), and int8 against float32:

1. Per inference on the emulated Cortex-M4 (mps2-an386, QEMU -icount shift=0): instructions,
   exact and repeatable (an instruction count, not a Cortex-M4's cycles), and per call.
2. Memory: flash used (code + weights) against the weights alone; RAM of the plan (arena +
   workspace) against every intermediate tensor laid end to end (what no planning would need);
   the firmware's whole RAM use (arena, workspace, stack, the session's buffers).
3. Host latency: the compiled model in the host template (timed by the device program's own
   clock) against onnxruntime on the same model and input (median of many runs).

Needs apache-tvm, onnx, onnxruntime, numpy, make, a C compiler, arm-none-eabi-gcc and QEMU.
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from microtvm_registry import get_packaged_resource  # noqa: E402
from microtvm_registry.compile.model import compile_model  # noqa: E402
from microtvm_registry.compile.sample_models import demo_kws, ds_cnn, quantize_qdq  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import generate_project  # noqa: E402

BOARD, CORE = "mps2-an386", "cortex-m4"
ORT_RUNS = 300


def _project(template: str, mlf: Path, folder: Path, board=None) -> Path:
    project = generate_project(get_packaged_resource(f"templates/{template}"), mlf, folder, {"board": board} if board else None)
    with project:
        project.build()
        if board:
            project.flash()
    return folder


def bench(name: str, model, work: Path, int8: bool = False) -> dict:
    import onnx
    import onnxruntime

    path = work / f"{name}.onnx"
    onnx.save(model, str(path))
    input_name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if int8:
        path = quantize_qdq(path, work / f"{name}_int8.onnx", input_name, shape)
        name = f"{name}_int8"
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = ort.run(None, {input_name: x})

    # 1 + 2: the emulated Cortex-M4
    compiled = compile_model(path, work / f"{name}-m4.tar", target=CORE)
    plan = compiled.plan
    board_dir = _project("cortex-m", compiled.path, work / f"{name}-m4", BOARD)
    with Session.open(board_dir) as sess:
        got = sess.run(compiled.name, {input_name: x})
        (out,) = got.values()
        timing = sess.time_evaluator(compiled.name, number=1, repeat=2)()
        calls = sess.call_times()
    error = float(np.max(np.abs(out - want)))
    report = json.loads((board_dir / "build" / "build-report.json").read_text())
    used = {r["kind"]: r["used"] for r in report["regions"]}
    intermediates = {n: plan.tensors[n] for c in plan.calls for n in c.args if plan.tensors[n].kind == "arena"}
    naive = sum(t.nbytes for t in intermediates.values())
    planned = plan.arena_bytes + plan.workspace_bytes

    ints = f"; int8 kernels: {', '.join(plan.integer_ops)}, float: {', '.join(plan.float_ops) or 'none'}" if int8 else ""
    print(f"== {name}: {sum(plan.operators.values())} ONNX operators -> {len(plan.calls)} kernel calls; "
          f"max abs error vs onnxruntime{' (its int8)' if int8 else ''} {error:.2g}{ints}")
    print(f"1. {BOARD} ({CORE}, QEMU -icount): {timing.counts[0]:,.0f} instructions per inference "
          f"(repeat: {timing.counts[1]:,.0f}); {timing.results[0] * 1e3:.1f} ms at the board's 25 MHz if one instruction took one cycle")
    for kernel, count, unit in sorted(calls, key=lambda c: -c[1])[:4]:
        print(f"     {kernel:<32} {count:>12,.0f} {unit} ({100 * count / timing.counts[0]:.0f}%)")
    print(f"2. flash used {used['code']:,} B = {used['code'] / plan.weights_bytes:.2f}x the weights ({plan.weights_bytes:,} B)")
    print(f"   plan RAM (arena {plan.arena_bytes:,} + workspace {plan.workspace_bytes:,}) = {planned:,} B "
          f"= {planned / naive:.2f}x the intermediates laid end to end ({naive:,} B, baseline)")
    print(f"   firmware RAM in all {used['data']:,} B (with stack {report['ram']['stack_bytes']:,} B and the session's "
          f"{report['ram']['workspace_bytes']:,} B kernel workspace)")

    # 3: host vs onnxruntime
    compiled_host = compile_model(path, work / f"{name}-host.tar", target="host")
    host_dir = _project("host", compiled_host.path, work / f"{name}-host")
    with Session.open(host_dir) as sess:
        got = sess.run(compiled_host.name, {input_name: x})
        host = sess.time_evaluator(compiled_host.name, number=50, repeat=5)().median
    for _ in range(20):
        ort.run(None, {input_name: x})
    samples = []
    for _ in range(ORT_RUNS):
        start = time.perf_counter()
        ort.run(None, {input_name: x})
        samples.append(time.perf_counter() - start)
    base = statistics.median(samples)
    print(f"3. host: compiled model {host * 1e6:.1f} us per inference vs onnxruntime {base * 1e6:.1f} us "
          f"(baseline, median of {ORT_RUNS}, Python call included) = {host / base:.2f}x")
    return {"instructions": timing.counts[0], "flash": used["code"], "plan_ram": planned, "weights": plan.weights_bytes}


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-models-"))
    try:
        for name, model in (("kws_demo", demo_kws()), ("ds_cnn_mlperf", ds_cnn())):
            f32 = bench(name, model, work)
            i8 = bench(name, model, work, int8=True)
            print(f"-- {name}: int8 vs float32 (baseline) on {BOARD}: instructions {i8['instructions'] / f32['instructions']:.2f}x, "
                  f"weights {i8['weights'] / f32['weights']:.2f}x, flash {i8['flash'] / f32['flash']:.2f}x, "
                  f"plan RAM {i8['plan_ram'] / f32['plan_ram']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
