"""`microtvm compile MODEL.tflite`: every operator we compile, int8 and float32, in small models
built in code, compiled for host, built into a host project (the real C compiler) and run through
the Project API; each output checked against TFLite Micro's own interpreter: int8 to the bit,
float32 within 1e-5 x max(1, max |reference|). Every model a user may hand us that we cannot
compile is one line naming what is wrong and what to do."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from registry_support import run_cli
from support import tflite_models as tm

pytestmark = pytest.mark.needs_tvm

SEEDS = (1, 2, 3)


def compile_and_build(model: Path, work: Path, target: str = "host", options=None, kernels: str = "tvm"):
    """(compiled model, built project folder) for ``model`` on ``target``."""
    from microtvm_registry import get_packaged_resource
    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.project import generate_project

    compiled = compile_model(model, work / f"{model.stem}.tar", target=target, kernels=kernels)
    template = "host" if target == "host" else "cortex-m"
    project = generate_project(get_packaged_resource(f"templates/{template}"), compiled.path, work / f"proj-{model.stem}", options)
    project.build()
    if template != "host":
        project.flash()
    project.close()
    return compiled, work / f"proj-{model.stem}"


def run_against_tflite_micro(model: Path, compiled, project: Path, work: Path, seeds=SEEDS) -> None:
    from microtvm_registry.device.session import Session

    with Session.open(project) as sess:
        for seed in seeds:
            inputs = tm.random_inputs(model, seed) if seed else tm.zero_inputs(model)
            want = tm.tflm_reference(model, inputs, work / f"ref-{model.stem}-{seed}")
            got = sess.run(sess.model["function"], inputs)
            outputs = [got[t.name] for t in compiled.plan.outputs]
            assert len(outputs) == len(want)
            for n, (g, w) in enumerate(zip(outputs, want)):
                tm.assert_matches(g, w, f"{model.name} output {n}, seed {seed}")


MODELS = {
    "conv_net_int8": lambda p: tm.conv_net(p, True),
    "conv_net_float": lambda p: tm.conv_net(p, False),
    "elementwise_int8": lambda p: tm.elementwise_net(p, True),
    "elementwise_float": lambda p: tm.elementwise_net(p, False),
    "edge_zp_min_same_stride2": lambda p: tm.edge_conv(p, in_zero=-128, out_scale=0.05, stride=2, padding="SAME", size=(7, 5)),
    "edge_zp_max_valid_shift_up": lambda p: tm.edge_conv(p, in_zero=127, out_scale=1e-4, stride=1, padding="VALID", size=(6, 5)),
    "edge_odd_valid_stride2": lambda p: tm.edge_conv(p, in_zero=-128, out_scale=0.002, stride=2, padding="VALID", size=(9, 7)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_operator_matches_tflite_micro_on_host(tmp_path, name):
    model = MODELS[name](tmp_path / f"{name}.tflite")
    compiled, project = compile_and_build(model, tmp_path)
    assert compiled.format == "tflite"
    assert compiled.arithmetic == ("float32" if name.endswith("float") else "tflite-micro")
    run_against_tflite_micro(model, compiled, project, tmp_path)


def test_the_operators_are_the_ones_the_issue_names(tmp_path):
    """The models above cover every operator we compile, int8 and float32."""
    from microtvm_registry.compile.frontends.tflite_graph import SUPPORTED, read_graph

    for int8 in (True, False):
        seen = set()
        for build in (tm.conv_net, tm.elementwise_net):
            seen |= set(read_graph(build(tmp_path / f"m{int8}{build.__name__}.tflite", int8)).operator_counts())
        expected = set(SUPPORTED) - ({"QUANTIZE", "DEQUANTIZE"} if not int8 else set())
        assert seen == expected, sorted(expected - seen)


def test_the_format_is_read_from_the_content_not_the_suffix(tmp_path):
    model = tm.edge_conv(tmp_path / "m.tflite", in_zero=0, out_scale=0.05, stride=1, padding="SAME", size=(5, 5))
    renamed = tmp_path / "m.onnx"
    renamed.write_bytes(model.read_bytes())
    out = run_cli("--json", "compile", str(renamed), "-o", str(tmp_path / "m.tar"))
    assert out.returncode == 0, out.stderr
    facts = json.loads(out.stdout)
    assert facts["format"] == "tflite" and facts["arithmetic"] == "tflite-micro"
    # compile --json lists what an application needs to feed the model
    assert facts["inputs"] == [{"name": "x", "c_name": "x", "dtype": "int8", "shape": [1, 5, 5, 2],
                                "scale": pytest.approx(0.05), "zero_point": 0}]
    assert facts["outputs"][0]["shape"] == [1, 5, 5, 3] and "scale" in facts["outputs"][0]


def test_the_header_carries_the_facts_as_constants(tmp_path):
    """A firmware quantizes a float feature vector with the header's constants alone: a program
    of the test's own does so with the standalone entry point and gets TFLite Micro's answer."""
    edge = tm.edge_conv(tmp_path / "edge.tflite", in_zero=-128, out_scale=0.05, stride=2, padding="SAME", size=(7, 5))
    from microtvm_registry.compile.model import compile_model

    compiled = compile_model(edge, tmp_path / "edge.tar")
    mlf = tmp_path / "mlf"
    mlf.mkdir()
    subprocess.run(["tar", "xf", str(compiled.path), "-C", str(mlf)], check=True)
    header = (mlf / "codegen" / "host" / "include" / "edge_model.h").read_text()
    for define in ("EDGE_MODEL_API_VERSION 2", f"EDGE_INPUT_X_SCALE {float(np.float32(0.05))!r}f", "EDGE_INPUT_X_ZERO_POINT (-128)",
                   "EDGE_INPUT_X_SHAPE {1, 7, 5, 2}", "EDGE_INPUT_X_INDEX 0", "EDGE_OUTPUT_Y_ELEMENTS 36u", "EDGE_OUTPUT_Y_ZERO_POINT (0)"):
        assert define in header, define
    main = tmp_path / "main.c"
    main.write_text(
        '#include <math.h>\n#include <stdio.h>\n#include "edge_model.h"\n#include "mtvm_runtime.h"\n'
        "int main(void) {\n"
        "  static float features[EDGE_INPUT_X_ELEMENTS]; static signed char x[EDGE_INPUT_X_BYTES], y[EDGE_OUTPUT_Y_BYTES];\n"
        "  if (fread(features, sizeof(float), EDGE_INPUT_X_ELEMENTS, stdin) != EDGE_INPUT_X_ELEMENTS) return 3;\n"
        "  for (unsigned i = 0; i < EDGE_INPUT_X_ELEMENTS; ++i) {\n"
        "    long q = lroundf(features[i] / EDGE_INPUT_X_SCALE) + EDGE_INPUT_X_ZERO_POINT;\n"
        "    x[i] = (signed char)(q < -128 ? -128 : q > 127 ? 127 : q);\n  }\n"
        "  const void* in[EDGE_NUM_INPUTS] = {x}; void* out[EDGE_NUM_OUTPUTS] = {y};\n"
        "  if (edge_run(in, out)) { fprintf(stderr, \"%s\\n\", mtvm_error_message()); return 4; }\n"
        "  fwrite(y, 1, sizeof y, stdout); return 0;\n}\n"
    )
    exe = tmp_path / "standalone"
    sources = [str(p) for p in (mlf / "codegen" / "host" / "src").glob("*.c")] + [str(mlf / "runtime" / "mtvm_runtime.c")]
    subprocess.run(["cc", "-O2", "-std=gnu11", "-I", str(mlf / "codegen" / "host" / "include"), "-I", str(mlf / "runtime"),
                    "-o", str(exe), str(main), *sources, "-lm"], check=True, capture_output=True)
    features = np.random.default_rng(4).uniform(-3, 3, (1, 7, 5, 2)).astype(np.float32)
    out = subprocess.run([str(exe)], input=features.tobytes(), capture_output=True, check=True)
    quantized = np.clip(np.round(features / np.float32(0.05)) - 128, -128, 127).astype(np.int8)
    (want,) = tm.tflm_reference(edge, [quantized], tmp_path / "ref")
    np.testing.assert_array_equal(np.frombuffer(out.stdout, np.int8).reshape(want.shape), want)


def _writer():
    from microtvm_registry.compile.tflite_writer import TfliteWriter

    return TfliteWriter()


def _one_line_error(tmp_path, model: Path, *extra) -> str:
    out = run_cli("compile", str(model), "-o", str(tmp_path / "o.tar"), *extra)
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microtvm: error: "), out.stderr
    assert not (tmp_path / "o.tar").exists()
    return lines[0]


def _conv_model(path: Path, x_dtype="int8", w_dtype="int8", w_zero=0, activation_dtype=None, subgraphs=0) -> Path:
    w = _writer()
    q = {"scale": 0.1, "zero_point": 0} if x_dtype in ("int8", "int16", "uint8") else {}
    x = w.tensor("x", [1, 4, 4, 2], x_dtype, **q)
    wdata = np.ones((3, 1, 1, 2), w_dtype)
    wq = {"scale": [0.1, 0.1, 0.1], "zero_point": [w_zero] * 3} if w_dtype in ("int8",) else {}
    weights = w.tensor("conv_weights", [3, 1, 1, 2], w_dtype, wdata, **wq)
    y = w.tensor("y", [1, 4, 4, 3], activation_dtype or ("float32" if x_dtype == "float32" else x_dtype), **q)
    w.op("CONV_2D", [x, weights, -1], [y], padding="SAME", stride_w=1, stride_h=1, fused_activation_function="NONE")
    path.write_bytes(w.to_bytes([x], [y], extra_subgraphs=subgraphs))
    return path


def test_what_we_cannot_compile_is_one_line_each(tmp_path):
    w = _writer()
    x = w.tensor("x", [1, 4], "float32")
    a, b = w.tensor("a", [1, 4], "float32"), w.tensor("b", [1, 4], "float32")
    w.op("TANH", [x], [a])
    w.op("ABS", [a], [b])
    (tmp_path / "ops.tflite").write_bytes(w.to_bytes([x], [b]))
    line = _one_line_error(tmp_path, tmp_path / "ops.tflite")
    assert "uses operators microtvm-registry does not compile: ABS, TANH;" in line and "CONV_2D" in line

    line = _one_line_error(tmp_path, _conv_model(tmp_path / "hybrid.tflite", x_dtype="float32", w_dtype="int8"))
    assert "is a hybrid model" in line and "conv_weights" in line and "TFLite Micro refuses" in line
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "i16.tflite", x_dtype="int16"))
    assert "tensor 'x'" in line and "int16 activations" in line
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "u8.tflite", x_dtype="uint8"))
    assert "tensor 'x'" in line and "uint8 activations" in line
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "f16.tflite", x_dtype="float32", w_dtype="float16"))
    assert "tensor 'conv_weights'" in line and "float16" in line
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "asym.tflite", w_zero=3))
    assert "weights 'conv_weights'" in line and "non-zero zero point" in line
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "two.tflite", subgraphs=1))
    assert "has 2 subgraphs" in line
    (tmp_path / "neither.bin").write_bytes(b"\x00\x01 definitely not a model")
    line = _one_line_error(tmp_path, tmp_path / "neither.bin")
    assert "neither a TFLite model" in line and "nor an ONNX model" in line
    damaged = tmp_path / "damaged.tflite"
    damaged.write_bytes(_conv_model(tmp_path / "ok.tflite").read_bytes()[:60])
    assert "is not a readable TFLite model" in _one_line_error(tmp_path, damaged)
    line = _one_line_error(tmp_path, _conv_model(tmp_path / "ok2.tflite"), "--input", "x=1,5,4,2")
    assert "does not fit the model's shape" in line


def test_run_binds_a_file_without_a_name_to_the_only_input(tmp_path):
    model = tm.edge_conv(tmp_path / "m.tflite", in_zero=-128, out_scale=0.05, stride=2, padding="SAME", size=(7, 5))
    compiled, project = compile_and_build(model, tmp_path)
    (x,) = tm.random_inputs(model, 9)
    np.save(tmp_path / "x.npy", x)
    out = run_cli("run", str(project), "-i", str(tmp_path / "x.npy"), "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    (want,) = tm.tflm_reference(model, [x], tmp_path / "ref")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), want)


def test_run_refuses_a_nameless_file_for_a_model_of_two_inputs(tmp_path):
    model = tm.elementwise_net(tmp_path / "two.tflite", True)
    compiled, project = compile_and_build(model, tmp_path)
    np.save(tmp_path / "a.npy", np.zeros((1, 4, 5, 6), np.int8))
    out = run_cli("run", str(project), "-i", str(tmp_path / "a.npy"), "--output-dir", str(tmp_path / "out"))
    assert out.returncode == 1 and "takes 2 inputs (a, b); give each as -i NAME=FILE.npy" in out.stderr
