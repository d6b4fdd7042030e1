"""`microtvm verify PROJECT --against MODEL`: the project (host, or an emulated Cortex-M4) and the
model's own reference interpreter (TFLite Micro's for .tflite, onnxruntime for .onnx) on the same
inputs, each output within the tolerance its arithmetic promises; a deliberately wrong build is
caught (exit 1), a wrong model or wrong inputs are one line. `run` prints small outputs and writes
files only with --output-dir."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from registry_support import run_cli
from support import tflite_models as tm
from support.onnx_models import quantize_qdq, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
from test_tflite import compile_and_build  # noqa: E402

pytestmark = pytest.mark.needs_tvm

TARGETS = {"host": ("host", None), "mps2-an386": ("cortex-m4", {"board": "mps2-an386"})}


def _tflite_project(tmp_path, where, build=None):
    """A TFLite int8 model built for ``where``: library_net (two inputs, int8 outputs) unless
    ``build`` names another."""
    model = (build or tm.library_net)(tmp_path / "model.tflite")
    target, options = TARGETS[where]
    _compiled, project = compile_and_build(model, tmp_path, target, options)
    return model, project


@pytest.fixture(scope="module")
def host_library_net(tmp_path_factory):
    """library_net built once for the host; tests that change it work on a copy."""
    return _tflite_project(tmp_path_factory.mktemp("verify-host"), "host")


def _onnx_project(tmp_path, where):
    from microtvm_registry.compile.sample_models import demo_kws

    float_path = save(demo_kws(), tmp_path / "kws.onnx")
    model = quantize_qdq(float_path, tmp_path / "kws_q.onnx", "input", (1, 1, 10, 6))
    target, options = TARGETS[where]
    _compiled, project = compile_and_build(model, tmp_path, target, options)
    return model, project


@pytest.mark.parametrize("where", sorted(TARGETS))
@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_verify_agrees_with_the_reference(tmp_path, where, kind, host_library_net):
    if (kind, where) == ("tflite", "host"):
        model, project = host_library_net
    else:
        model, project = (_tflite_project if kind == "tflite" else _onnx_project)(tmp_path, where)
    out = run_cli("verify", str(project), "--against", str(model), "--samples", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    reference = "TFLite Micro" if kind == "tflite" else "onnxruntime"
    assert lines[0] == f"verify {project} against {model.name} ({reference}; 3 sample(s); arithmetic " + (
        "tflite-micro)" if kind == "tflite" else "onnxruntime)")
    assert lines[-1].startswith(f"OK: {len(lines) - 2} output(s) equal {reference}'s within the model's tolerance on 3 sample(s)")
    data = json.loads(run_cli("verify", str(project), "--against", str(model), "--samples", "2", "--json").stdout)
    assert data["ok"] is True and data["samples"] == 2 and data["reference"] == reference
    for output in data["outputs"]:
        assert output["max_diff"] <= output["tolerance"] and output["differing"] == 0 and output["values"] > 0
        if kind == "tflite" and output["dtype"] == "int8":
            assert output["tolerance"] == 0 and output["unit"] == "steps"
    if kind == "tflite":
        assert "int8" in {o["dtype"] for o in data["outputs"]}


def test_a_deliberately_wrong_build_is_caught(tmp_path, host_library_net):
    """One weight changed in the project's model C and rebuilt: verify exits 1 and names the output."""
    from microtvm_registry.project import GeneratedProject

    import shutil

    model, built = host_library_net
    project = tmp_path / "copy"
    shutil.copytree(built, project, symlinks=True)
    (source,) = (project / "model" / "codegen" / "host" / "src").glob("*_model.c")
    text = source.read_text()
    # the first int8 weight array: flip its first value
    match = re.search(r"(static const int8_t \w+\[\d+\][^=]*= \{)\s*(-?\d+)", text)
    assert match, "no int8 weights in the model's C"
    value = int(match.group(2))
    text = text[: match.start(2)] + str(-value if value not in (0, -128) else 77) + text[match.end(2):]
    source.write_text(text)
    with GeneratedProject.from_directory(project) as generated:
        generated.build()
    out = run_cli("verify", str(project), "--against", str(model), "--samples", "4")
    assert out.returncode == 1, out.stdout + out.stderr
    verdict = out.stdout.splitlines()[-1]
    assert verdict.startswith("DIFFERENT: output ") and "steps (tolerance 0)" in verdict
    assert json.loads(run_cli("verify", str(project), "--against", str(model), "--json").stdout)["ok"] is False


def _conv_net(path):
    return tm.conv_net(path, True)  # one input


def test_your_own_inputs_float_ones_quantized_on_request(tmp_path, host_library_net):
    """library_net takes two int8 inputs: one subfolder per sample, NAME.npy per input."""
    model, project = host_library_net
    facts = json.loads(run_cli("compile", str(model), "-o", str(tmp_path / "again.tar"), "--json").stdout)["inputs"]
    assert len(facts) == 2 and all(f["dtype"] == "int8" and "scale" in f for f in facts)
    samples = tmp_path / "samples"
    rng = np.random.default_rng(4)
    for n in range(3):
        for fact in facts:
            (samples / f"s{n}").mkdir(parents=True, exist_ok=True)
            np.save(samples / f"s{n}" / f"{fact['name']}.npy", rng.uniform(-2, 2, fact["shape"]).astype(np.float32))
    out = run_cli("verify", str(project), "--against", str(model), "--inputs", str(samples))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "holds float32" in out.stderr and "add --quantize-inputs" in out.stderr
    out = run_cli("verify", str(project), "--against", str(model), "--inputs", str(samples), "--quantize-inputs", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["samples"] == 3
    (samples / "s1" / f"{facts[1]['name']}.npy").unlink()
    out = run_cli("verify", str(project), "--against", str(model), "--inputs", str(samples), "--quantize-inputs")
    assert out.returncode == 1 and f"has no {facts[1]['name']}.npy" in out.stderr


def test_the_wrong_model_is_one_line(tmp_path, host_library_net):
    _model, project = host_library_net
    other = tm.elementwise_net(tmp_path / "other.tflite", True)
    out = run_cli("verify", str(project), "--against", str(other))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "other.tflite takes" in out.stderr and "give the model the project was compiled from" in out.stderr
    out = run_cli("verify", str(project), "--against", str(tmp_path / "missing.tflite"))
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_run_prints_small_outputs_and_writes_only_with_output_dir(tmp_path):
    model, project = _tflite_project(tmp_path, "host", _conv_net)
    x = tm.random_inputs(model, 1)[0]
    np.save(tmp_path / "x.npy", x)
    work = tmp_path / "cwd"
    work.mkdir()
    out = run_cli("run", str(project), "-i", str(tmp_path / "x.npy"), cwd=work)
    assert out.returncode == 0, out.stderr
    assert list(work.iterdir()) == []  # nothing written without --output-dir
    (want,) = tm.tflm_reference(model, [x], tmp_path / "ref")
    line = next(line for line in out.stdout.splitlines() if line.startswith("output "))
    assert json.loads(line.split(": ", 1)[1]) == pytest.approx(want.reshape(-1).tolist(), rel=1e-5, abs=1e-5)
    data = json.loads(run_cli("run", str(project), "-i", str(tmp_path / "x.npy"), "--json", cwd=work).stdout)
    assert np.asarray(data["outputs"][0]["values"]) == pytest.approx(want, rel=1e-5, abs=1e-5)
    assert "path" not in data["outputs"][0]
    # --quantize-inputs: the real values of an int8 input, quantized by run with its scale and zero point
    edge = tm.edge_conv(tmp_path / "edge.tflite", in_zero=-128, out_scale=0.05, stride=2, padding="SAME", size=(7, 5))
    _compiled, edge_project = compile_and_build(edge, tmp_path)
    q = tm.random_inputs(edge, 2)[0]
    (fact,) = json.loads(run_cli("compile", str(edge), "-o", str(tmp_path / "edge.tar"), "--json").stdout)["inputs"]
    np.save(tmp_path / "real.npy", ((q.astype(np.float32) - fact["zero_point"]) * fact["scale"]).astype(np.float32))
    (want,) = tm.tflm_reference(edge, [q], tmp_path / "ref-edge")
    data = json.loads(run_cli("run", str(edge_project), "-i", str(tmp_path / "real.npy"), "--quantize-inputs", "--json", cwd=work).stdout)
    assert np.array_equal(np.asarray(data["outputs"][0]["values"], want.dtype), want)
    out = run_cli("run", str(edge_project), "-i", str(tmp_path / "real.npy"), cwd=work)
    assert out.returncode == 1 and "float32" in out.stderr
    # --dequantize-outputs: the outputs as real numbers through their scale and zero point
    (out_fact,) = json.loads(run_cli("compile", str(edge), "-o", str(tmp_path / "edge2.tar"), "--json").stdout)["outputs"]
    data = json.loads(run_cli("run", str(edge_project), "-i", str(tmp_path / "real.npy"), "--quantize-inputs", "--dequantize-outputs",
                              "--json", cwd=work).stdout)
    real = (want.astype(np.float64) - out_fact["zero_point"]) * out_fact["scale"]
    assert data["outputs"][0]["dequantized"] is True
    assert np.asarray(data["outputs"][0]["values"]) == pytest.approx(real)
