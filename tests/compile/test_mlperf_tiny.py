"""The MLPerf Tiny reference models (../shared/models/mlperf-tiny): the seven that are not hybrid
compile, run in a host project and equal TFLite Micro's interpreter (int8 to the bit, float32
within 1e-5 x max(1, max |reference|)); the hybrid one gets its one line."""
from __future__ import annotations

import pytest

from registry_support import run_cli
from support import tflite_models as tm
from test_tflite import compile_and_build, run_against_tflite_micro

pytestmark = pytest.mark.needs_tvm

COMPILED = ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8", "vww_96_float", "pretrainedResnet", "ad01_fp32"]


def _model(name):
    model = tm.SHARED_MODELS / f"{name}.tflite"
    if not model.is_file():
        pytest.skip(f"{model} is absent (the MLPerf Tiny models live in ../shared/models/mlperf-tiny)")
    return model


@pytest.mark.parametrize("name", COMPILED)
def test_mlperf_tiny_models_equal_tflite_micro_on_host(tmp_path, name):
    model = _model(name)
    compiled, project = compile_and_build(model, tmp_path)
    assert compiled.arithmetic == ("float32" if name in ("vww_96_float", "pretrainedResnet", "ad01_fp32") else "tflite-micro")
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(0, 1))


def test_the_hybrid_model_gets_its_line(tmp_path):
    model = _model("kws_ref_model_float32")
    out = run_cli("compile", str(model), "-o", str(tmp_path / "k.tar"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "is a hybrid model" in out.stderr and "full-integer quantization" in out.stderr


def test_the_onnx_conversion_of_ad01_int8_compiles_and_matches_onnxruntime(tmp_path):
    """The tf2onnx conversion of ad01_int8 (../shared/models/mlperf-tiny-onnx) failed with
    "unexpected KeyError: 'lv99'": a QDQ output that is also the graph's output vanished in the
    integer rewrite. Now it compiles and gives onnxruntime's answer within one int8 step."""
    import numpy as np
    import onnxruntime

    model = tm.SHARED_MODELS.parent / "mlperf-tiny-onnx" / "ad01_int8.onnx"
    if not model.is_file():
        pytest.skip(f"{model} is absent (the converted models live in ../shared/models/mlperf-tiny-onnx)")
    from microtvm_registry import get_packaged_resource
    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.device.session import Session
    from microtvm_registry.project import generate_project

    compiled = compile_model(model, tmp_path / "ad.tar", inputs={"input_1": [1, 640]})
    assert compiled.arithmetic == "onnxruntime" and "dense" in compiled.plan.integer_ops
    project = generate_project(get_packaged_resource("templates/host"), compiled.path, tmp_path / "proj")
    with project:
        project.build()
    x = np.random.default_rng(0).integers(-128, 128, (1, 640)).astype(np.int8)
    (want,) = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input_1": x})
    with Session.open(tmp_path / "proj") as sess:
        got = sess.run(sess.model["function"], {"input_1": x})[compiled.plan.outputs[0].name]
    assert np.max(np.abs(got.astype(np.int32) - want.astype(np.int32))) <= 1
