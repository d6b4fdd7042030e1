"""Tuning never changes a model's answer: every schedule candidate equals the default kernel on
probes that reach the borders of a fused pad, `compile --records` checks a record's kernel on the
host instead of trusting the file, malformed records are skipped (not half-applied), and a killed
or concurrent `tune` leaves nothing behind and measures nothing twice."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from registry_support import run_cli
from support.onnx_models import save

pytestmark = pytest.mark.needs_tvm
BOARD = "mps2-an386"


def pointwise_then_padded_depthwise():
    """A 1x1 convolution whose output feeds a stride-2 depthwise convolution with an asymmetric
    pad (VWW's shape): the integer rewrite fuses the pad into the 1x1 kernel's epilogue."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.4).astype(np.float32), n)
             for n, s in (("pw", (8, 4, 1, 1)), ("pb", (8,)), ("dw", (8, 1, 3, 3)), ("db", (8,)))]
    nodes = [
        helper.make_node("Conv", ["x", "pw", "pb"], ["p"]),
        helper.make_node("Relu", ["p"], ["pr"]),
        helper.make_node("Conv", ["pr", "dw", "db"], ["d"], group=8, strides=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "pwdw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    from microtvm_registry.compile.sample_models import quantize_qdq

    work = tmp_path_factory.mktemp("pwdw")
    float_model = save(pointwise_then_padded_depthwise(), work / "pwdw.onnx")
    return quantize_qdq(float_model, work / "pwdw_q.onnx", "x", (1, 4, 8, 8))


def test_every_candidate_equals_the_default_kernel_on_probes(qdq_model):
    """Before the fix, "epilogue inside loop 3, unrolled x4" (with inlining) computed only the part
    of a fused pad's output that the reduction's loops reach: the border kept whatever the buffer
    held, which the old check could not see (the reference had just filled it)."""
    from microtvm_registry.compile.frontends import import_model
    from microtvm_registry.compile.kernel_check import same_on_host
    from microtvm_registry.compile.lower import lower_to_kernels
    from microtvm_registry.compile.schedules import Recipe, ScheduleNotApplicable, apply, candidates

    imported = import_model(qdq_model)
    lowered = lower_to_kernels(imported.mod, "cortex-m4", imported.input_names, imported.output_names)
    constants = lowered.kernel_constants()
    padded = [name for name in lowered.prim_funcs if name.endswith(tuple(f"pad{n}" for n in range(10))) or "_pad" in name]
    assert any(name.startswith("fused_conv2d") and "pad" in name for name in padded), sorted(lowered.prim_funcs)
    checked = 0
    for name, func in sorted(lowered.prim_funcs.items()):
        for recipe in [Recipe(True, 3, 4, 0)] + candidates():
            try:
                scheduled = apply(func, recipe)
            except ScheduleNotApplicable:
                continue
            assert same_on_host(func, scheduled, constants.get(name, {})) is None, (name, recipe.describe())
            checked += 1
    assert checked > 10


def test_the_host_check_catches_a_kernel_that_computes_something_else(qdq_model):
    from microtvm_registry.compile.frontends import import_model
    from microtvm_registry.compile.kernel_check import same_on_host
    from microtvm_registry.compile.lower import lower_to_kernels

    imported = import_model(qdq_model)
    lowered = lower_to_kernels(imported.mod, "cortex-m4", imported.input_names, imported.output_names)
    funcs = lowered.prim_funcs
    constants = lowered.kernel_constants()
    name = next(iter(funcs))
    unwritten = funcs[name].with_body(__import__("tvm").tirx.Evaluate(0))  # a kernel that writes nothing
    assert "differ" in same_on_host(funcs[name], unwritten, constants.get(name, {}))


def _forged_record(workload, recipe, **more):
    line = {"workload": workload, "kernel": "k", "board": BOARD, "target": "cortex-m4", "schedule": recipe,
            "description": "forged", "count": 10.0, "unit": "instructions", "correct": True}
    line.update(more)
    return json.dumps(line)


def test_records_that_do_not_fit_stop_the_compile_and_malformed_ones_are_skipped(qdq_model, tmp_path):
    from microtvm_registry.compile.frontends import import_model
    from microtvm_registry.compile.lower import lower_to_kernels
    from microtvm_registry.compile.schedules import workload
    from microtvm_registry.compile.tuning_records import RecordsFile

    imported = import_model(qdq_model)
    lowered = lower_to_kernels(imported.mod, "cortex-m4", imported.input_names, imported.output_names)
    name, func = next((n, f) for n, f in sorted(lowered.prim_funcs.items()) if n.startswith("fused_conv2d"))
    wl = workload(name, func)
    records = tmp_path / "r.jsonl"
    good = {"inline": True, "epilogue_at": 0, "unroll": 1, "tile": 0}
    records.write_text("\n".join([
        _forged_record(wl, dict(good, inline="false")),  # a string where a boolean belongs
        _forged_record(wl, good, count=float("nan")),  # json writes NaN, and reads it back
        _forged_record(wl, dict(good, epilogue_at=-1)),
        _forged_record(wl, dict(good, unroll=1e400)).replace("Infinity", "1e400"),
        _forged_record(wl, good, correct="yes"),
        "x" * (200 * 1024),  # a line no record makes: skipped without being held
    ]) + "\n")
    read, damaged = RecordsFile(records).read()
    assert read == [] and damaged == 6
    # a record whose recipe cannot be applied to its kernel stops the compile in one line
    with open(records, "a") as fh:
        fh.write(_forged_record(wl, {"inline": False, "epilogue_at": 0, "unroll": 1, "tile": 64}) + "\n")
    out = run_cli("compile", str(qdq_model), "-o", str(tmp_path / "m.tar"), "--target", "cortex-m4", "--records", str(records))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert f"the record for {name}" in out.stderr and "does not fit the kernel" in out.stderr and "tune again" in out.stderr
    assert not (tmp_path / "m.tar").exists()


def _tune(model, records, env=None):
    return subprocess.Popen([sys.executable, "-m", "microtvm_registry", "tune", str(model), "--board", BOARD, "--trials", "3",
                             "--records", str(records), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_two_concurrent_runs_measure_each_candidate_once_and_leave_no_lock_file(qdq_model, tmp_path):
    records = tmp_path / "shared.jsonl"
    runs = [_tune(qdq_model, records) for _ in range(2)]
    outs = [r.communicate(timeout=900) for r in runs]
    for run, (stdout, stderr) in zip(runs, outs):
        assert run.returncode == 0, stderr
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    keys = [(line["workload"]["hash"], line["board"], json.dumps(line["schedule"], sort_keys=True)) for line in lines]
    assert len(keys) == len(set(keys)) > 0
    assert sum(json.loads(o)["measured"] for o, _ in outs) == len(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.jsonl"]


def test_sigterm_ends_tune_at_once_and_leaves_no_work_folder(qdq_model, tmp_path, isolated_environment):
    from microtvm_registry.dirs import runtime_dir

    tune_root = runtime_dir() / "tune"
    run = _tune(qdq_model, tmp_path / "r.jsonl")
    deadline = time.monotonic() + 300
    while not (tune_root.is_dir() and any(tune_root.iterdir())):
        assert run.poll() is None and time.monotonic() < deadline, "tune never made its work folder"
        time.sleep(0.1)
    time.sleep(1.0)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 143 and "microtvm: terminated" in stderr
    assert list(tune_root.iterdir()) == []
    # a folder a SIGKILLed run left (its pid no longer runs) is removed by the next run
    stale = tune_root / "999999-stale"
    stale.mkdir()
    done = _tune(qdq_model, tmp_path / "r.jsonl")
    done.communicate(timeout=900)
    assert done.returncode == 0 and not stale.exists()
