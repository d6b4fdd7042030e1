"""`microtvm tune` on the emulated Cortex-M4 (real firmware under QEMU, the real CLI): a small
conv2d and a dense, a handful of trials. Records are written and re-read, compiling with them
gives the same outputs, the chosen kernels are never slower than the default lowering, a re-run
resumes, and Ctrl-C keeps what was measured and leaves no QEMU behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from registry_support import run_cli
from support.cortex_m import qemu_pids, still_running
from support.onnx_models import random_inputs, save

pytestmark = pytest.mark.needs_tvm
BOARD = "mps2-an386"


def conv_dense():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("cw", (4, 2, 3, 3)), ("cb", (4,)), ("fw", (3, 4 * 6 * 4)), ("fb", (3,)))]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "cd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    model = save(conv_dense(), work / "cd.onnx")
    records = work / "cd.records.jsonl"
    out = run_cli("tune", str(model), "--board", BOARD, "--trials", "3", "--records", str(records), "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    return model, records, json.loads(out.stdout)


def test_records_are_written_one_line_per_candidate(tuned):
    _, records, report = tuned
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == report["measured"] > 0
    for line in lines:
        assert line["board"] == BOARD and line["target"] == "cortex-m4" and line["unit"] == "instructions"
        assert set(line["workload"]) == {"operator", "args", "hash"} and line["description"]
        assert isinstance(line["correct"], bool) and line["tools"]["microtvm-registry"]
    kernels = {k["kernel"]: k for k in report["kernels"]}
    assert any(name.startswith("fused_conv2d") for name in kernels) and any("matmul" in name for name in kernels)
    for k in kernels.values():  # each candidate was checked; the chosen one is never slower than the default
        assert k["best"] is not None and k["best"] <= k["default"]
    assert all(line["correct"] for line in lines)


def test_compiling_with_the_records_gives_the_same_outputs(tuned, tmp_path):
    from microtvm_registry import get_packaged_resource
    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.device.session import Session
    from microtvm_registry.project import generate_project

    model, records, report = tuned
    plain = compile_model(model, tmp_path / "plain.tar", target="cortex-m4")
    tuned_model = compile_model(model, tmp_path / "tuned.tar", target="cortex-m4", records=records, board=BOARD)
    assert tuned_model.untuned == [] and set(tuned_model.tuned) == {k["kernel"] for k in report["kernels"]}
    inputs = random_inputs({"x": (1, 2, 6, 4)}, seed=4)
    outputs, counts = [], []
    for compiled in (plain, tuned_model):
        project = generate_project(get_packaged_resource("templates/cortex-m"), compiled.path, tmp_path / compiled.path.stem, {"board": BOARD})
        with project:
            project.build()
            project.flash()
        with Session.open(tmp_path / compiled.path.stem) as sess:
            outputs.append(sess.run(compiled.name, inputs)["y"])
            counts.append(sess.time_evaluator(compiled.name, number=1, repeat=1)().counts[0])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    assert counts[1] <= counts[0]  # the tuned model is not slower


def test_a_rerun_resumes_and_measures_nothing_again(tuned):
    model, records, _ = tuned
    before = records.read_text()
    out = run_cli("tune", str(model), "--board", BOARD, "--trials", "3", "--records", str(records), "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["measured"] == 0 and records.read_text() == before


def test_ctrl_c_keeps_the_records_measured_so_far(tmp_path):
    model = save(conv_dense(), tmp_path / "cd.onnx")
    records = tmp_path / "r.jsonl"
    before = set(qemu_pids())
    cli = subprocess.Popen(
        [sys.executable, "-m", "microtvm_registry", "tune", str(model), "--board", BOARD, "--records", str(records)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while not (records.exists() and records.read_text().count("\n") >= 2):
            assert cli.poll() is None and time.monotonic() < deadline, cli.stderr.read().decode() if cli.poll() is not None else "no record"
            time.sleep(0.05)
        os.killpg(cli.pid, signal.SIGINT)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 130 and err.decode().strip().endswith("microtvm: interrupted")
    kept = [json.loads(line) for line in records.read_text().splitlines()]  # every line whole
    assert len(kept) >= 2
    deadline = time.monotonic() + 10
    while still_running(set(qemu_pids()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert still_running(set(qemu_pids()) - before) == []
    again = run_cli("tune", str(model), "--board", BOARD, "--records", str(records), "--json", timeout=600)
    assert again.returncode == 0, again.stderr
    total = len(records.read_text().splitlines())
    assert json.loads(again.stdout)["measured"] == total - len(kept)  # only what was not measured yet



def test_a_tflite_model_is_tuned_and_its_tuned_build_still_equals_tflite_micro(tmp_path):
    """tune and compile --records take .tflite models too; the tuned int8 kernels still give
    TFLite Micro's answer to the bit."""
    from support import tflite_models as tm

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "compile"))
    from test_tflite import run_against_tflite_micro

    from microtvm_registry import get_packaged_resource
    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.project import generate_project

    model = tm.edge_conv(tmp_path / "edge.tflite", in_zero=-128, out_scale=0.05, stride=2, padding="SAME", size=(7, 5))
    records = tmp_path / "edge.records.jsonl"
    out = run_cli("tune", str(model), "--board", BOARD, "--trials", "4", "--records", str(records), "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["measured"] >= 2 and [k["kernel"] for k in report["kernels"]] == ["conv2d_int8"]
    compiled = compile_model(model, tmp_path / "tuned.tar", target="cortex-m4", records=records, board=BOARD)
    assert set(compiled.tuned) == {"conv2d_int8"}
    project = generate_project(get_packaged_resource("templates/cortex-m"), compiled.path, tmp_path / "proj", {"board": BOARD})
    with project:
        project.build()
        project.flash()
    run_against_tflite_micro(model, compiled, tmp_path / "proj", tmp_path, seeds=(1, 2))


def _measured_set(records):
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    return {(line["workload"]["hash"], line["description"], line["count"], line["correct"]) for line in lines}


def test_jobs_measure_kernels_at_once_and_the_same(tuned, tmp_path):
    """--jobs 2: two emulated boards at once; under -icount every count is exact, so the records
    are the one-board run's, line for line (in another order)."""
    model, records, report = tuned
    parallel = tmp_path / "parallel.jsonl"
    out = run_cli("tune", str(model), "--board", BOARD, "--trials", "3", "--records", str(parallel), "--jobs", "2", "--json", timeout=600)
    assert out.returncode == 0, out.stderr
    assert _measured_set(parallel) == _measured_set(records)
    assert [k["kernel"] for k in json.loads(out.stdout)["kernels"]] == [k["kernel"] for k in report["kernels"]]


def test_shards_split_the_candidates_and_their_records_merge(tuned, tmp_path):
    """--shard 1/2 and 2/2 on two "machines" (two records files): together exactly the one-run
    set, neither measures what the other does, and compile takes both files."""
    from microtvm_registry.compile.model import compile_model

    model, records, _report = tuned
    shards = [tmp_path / f"shard{i}.jsonl" for i in (1, 2)]
    for i, path in enumerate(shards, start=1):
        out = run_cli("tune", str(model), "--board", BOARD, "--trials", "3", "--records", str(path), "--shard", f"{i}/2", timeout=600)
        assert out.returncode == 0, out.stderr
    first, second = (_measured_set(p) for p in shards)
    assert first and second and not first & second
    assert first | second == _measured_set(records)
    merged = compile_model(model, tmp_path / "merged.tar", target="cortex-m4", records=shards, board=BOARD)
    single = compile_model(model, tmp_path / "single.tar", target="cortex-m4", records=records, board=BOARD)
    assert merged.tuned == single.tuned and merged.untuned == []
    out = run_cli("compile", str(model), "-o", str(tmp_path / "cli.tar"), "--target", "cortex-m4", "--records", *map(str, shards), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tuned"] == single.tuned


@pytest.mark.parametrize("args, words", [
    (["--shard", "3/2"], "is not I/N"),
    (["--shard", "x"], "is not I/N"),
    (["--jobs", "0"], "--jobs 0: give 1 or more"),
])
def test_bad_jobs_and_shards_are_one_line(tmp_path, args, words):
    model = save(conv_dense(), tmp_path / "cd.onnx")
    out = run_cli("tune", str(model), "--board", BOARD, *args)
    assert out.returncode in (1, 2) and words in out.stderr, out.stderr
