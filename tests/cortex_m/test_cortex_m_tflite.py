"""TFLite int8 on the emulated boards: the operator models of tests/compile/test_tflite.py and the
MLPerf Tiny int8 models (../shared/models/mlperf-tiny), compiled for the board's core, built with
arm-none-eabi-gcc, run under QEMU over the real serial line, and equal to TFLite Micro's own
interpreter bit for bit."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support import tflite_models as tm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compile"))
from test_tflite import MODELS, compile_and_build, run_against_tflite_micro  # noqa: E402

pytestmark = pytest.mark.needs_tvm

BOARD, CORE = "mps2-an386", "cortex-m4"
INT8 = sorted(name for name in MODELS if not name.endswith("float"))
MLPERF_INT8 = ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8"]


@pytest.mark.parametrize("name", INT8)
def test_int8_operators_match_tflite_micro_on_the_cortex_m4(tmp_path, name):
    model = MODELS[name](tmp_path / f"{name}.tflite")
    compiled, project = compile_and_build(model, tmp_path, CORE, {"board": BOARD})
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(1, 2))


@pytest.mark.parametrize("name", MLPERF_INT8)
def test_mlperf_tiny_int8_models_equal_tflite_micro_on_the_cortex_m4(tmp_path, name):
    model = tm.SHARED_MODELS / f"{name}.tflite"
    if not model.is_file():
        pytest.skip(f"{model} is absent (the MLPerf Tiny models live in ../shared/models/mlperf-tiny)")
    compiled, project = compile_and_build(model, tmp_path, CORE, {"board": BOARD})
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(0, 1))
