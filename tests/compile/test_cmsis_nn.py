"""`microtvm compile M.tflite --kernels cmsis-nn`: the int8 layers CMSIS-NN computes are calls of
arm/cmsis-nn, fetched through the registry (from ../shared/mirrors/CMSIS-NN.git, as a user behind
a mirror would: --git-mirror), built into a real host project and checked against TFLite Micro's
own interpreter bit for bit; every other layer stays a TVM kernel. The Cortex-M runs (DSP, MVE and
plain-C paths under QEMU) are in tests/cortex_m/test_cortex_m_cmsis_nn.py."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from registry_support import run_cli
from support import cmsis_nn as cn
from support import tflite_models as tm
from test_tflite import MODELS, compile_and_build, run_against_tflite_micro

pytestmark = pytest.mark.needs_tvm

#: What library_net holds, and who computes it: the grouped conv and the broadcast ADD have no
#: CMSIS-NN s8 entry point that fits, so they stay TVM kernels (RESHAPE is a copy either way).
LIBRARY_NET_CALLS = {"cmsis-nn": 8, "tvm": 3}


def test_every_layer_cmsis_nn_computes_equals_tflite_micro_on_host(cmsis_nn, tmp_path):
    model = tm.library_net(tmp_path / "library_net.tflite")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    assert compiled.arithmetic == "tflite-micro"
    assert compiled.summary["calls_by_provider"] == LIBRARY_NET_CALLS
    (lib,) = compiled.libraries
    assert (lib["name"], lib["version"], lib["provider"], lib["calls"]) == ("arm/cmsis-nn", cn.DEFAULT_VERSION, "cmsis-nn", 8)
    assert lib["content_id"] == cn.content_id(cn.DEFAULT_VERSION) and lib["license"] == "Apache-2.0"
    # Only what the calls need is built: the s8 entry points and their helpers, no float source.
    built = sorted(p.relative_to(project / "lib" / "arm_cmsis-nn").as_posix() for p in (project / "lib" / "arm_cmsis-nn" / "Source").rglob("*.c"))
    assert built == sorted(lib["sources"]) and 10 < len(built) < 60
    assert not [s for s in built if s.endswith(("_f32.c", "_f16.c"))]
    assert (project / "lib" / "arm_cmsis-nn" / "LICENSE").is_file()
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(0, 1, 2, 3))


def test_the_model_library_format_records_the_library(cmsis_nn, tmp_path):
    model = tm.library_net(tmp_path / "m.tflite")
    out = run_cli("compile", str(model), "--target", "cortex-m4", "--kernels", "cmsis-nn", "-o", str(tmp_path / "m.tar"), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    (lib,) = summary["libraries"]
    assert (lib["name"], lib["version"], lib["content_id"]) == ("arm/cmsis-nn", cn.DEFAULT_VERSION, cn.content_id(cn.DEFAULT_VERSION))
    with tarfile.open(tmp_path / "m.tar") as tar:
        metadata = json.load(tar.extractfile("./metadata.json"))
        names = tar.getnames()
    recorded = metadata["modules"]["m"]["model"]
    assert recorded["kernel_provider"] == "cmsis-nn"
    assert [(r["name"], r["content_id"], r["calls"]) for r in recorded["libraries"]] == [("arm/cmsis-nn", lib["content_id"], 8)]
    assert any(n.endswith("codegen/host/src/m_cmsis_nn.c") for n in names)
    # The library's sources are not in the MLF: the project takes them from the verified cache.
    assert not any("arm_convolve" in n for n in names)
    text = run_cli("compile", str(model), "--target", "cortex-m4", "--kernels", "cmsis-nn", "-o", str(tmp_path / "n.tar")).stdout
    assert f"arm/cmsis-nn {cn.DEFAULT_VERSION} (content id {cn.content_id(cn.DEFAULT_VERSION)[:12]}): 8 of the calls" in text


@pytest.mark.parametrize("name", sorted(n for n in MODELS if not n.endswith("float")))
def test_the_small_int8_models_equal_tflite_micro_with_cmsis_nn(cmsis_nn, tmp_path, name):
    model = MODELS[name](tmp_path / f"{name}.tflite")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    assert compiled.summary["calls_by_provider"].get("cmsis-nn", 0) >= 1
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(0, 1))


def test_a_float_model_is_all_tvm_kernels(cmsis_nn, tmp_path):
    """CMSIS-NN's s8 API has nothing for float32: every layer stays TVM's, the answer the same."""
    model = MODELS["conv_net_float"](tmp_path / "f.tflite")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    assert set(compiled.summary["calls_by_provider"]) == {"tvm"}
    assert [lib["calls"] for lib in compiled.libraries] == [0]
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(1,))


@pytest.mark.parametrize("version", cn.VERSIONS)
def test_the_project_lock_chooses_the_version(cmsis_nn, tmp_path, monkeypatch, version):
    """`microtvm lock arm/cmsis-nn@==V` pins the library; compile in that project builds with it,
    and every version the index names gives TFLite Micro's answer."""
    project_dir = tmp_path / "app"
    project_dir.mkdir()
    out = run_cli("lock", f"arm/cmsis-nn@=={version}", cwd=project_dir)
    assert out.returncode == 0, out.stderr
    lock = (project_dir / "microtvm.lock").read_text()
    assert 'kind = "library"' in lock and cn.content_id(version) in lock
    monkeypatch.chdir(project_dir)
    model = tm.library_net(tmp_path / "v.tflite")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    assert [(lib["version"], lib["content_id"]) for lib in compiled.libraries] == [(version, cn.content_id(version))]
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(1,))


@pytest.mark.parametrize("name", ["kws_ref_model", "vww_96_int8", "pretrainedResnet_quant", "ad01_int8"])
def test_mlperf_tiny_int8_models_equal_tflite_micro_with_cmsis_nn_on_host(cmsis_nn, tmp_path, name):
    model = tm.SHARED_MODELS / f"{name}.tflite"
    if not model.is_file():
        pytest.skip(f"{model} is absent (the MLPerf Tiny models live in ../shared/models/mlperf-tiny)")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    calls = compiled.summary["calls_by_provider"]
    assert calls["cmsis-nn"] >= 3 and calls.get("tvm", 0) <= 2, calls  # everything but a reshape or so
    run_against_tflite_micro(model, compiled, project, tmp_path, seeds=(0, 1))


def test_an_onnx_model_is_one_line_before_anything_is_fetched(tmp_path, isolated_environment):
    model = tm.SHARED_MODELS.parent / "mlperf-tiny-onnx" / "ad01_int8.onnx"
    if not model.is_file():
        pytest.skip(f"{model} is absent (the converted models live in ../shared/models/mlperf-tiny-onnx)")
    out = run_cli("--offline", "compile", str(model), "--kernels", "cmsis-nn", "-o", str(tmp_path / "ad.tar"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "--kernels cmsis-nn takes .tflite models; ad01_int8.onnx is ONNX" in out.stderr
    assert "--kernels tvm" in out.stderr and "TFLite's arithmetic" in out.stderr
    assert not (tmp_path / "ad.tar").exists()
    assert not (isolated_environment / "cache" / "templates").exists()


def test_an_unknown_kernel_provider_is_one_line(tmp_path):
    model = tm.library_net(tmp_path / "m.tflite")
    out = run_cli("compile", str(model), "--kernels", "cmsis", "-o", str(tmp_path / "m.tar"))
    assert out.returncode == 2 and "cmsis-nn" in out.stderr and "invalid choice" in out.stderr


def test_offline_without_the_library_cached_says_what_to_do(tmp_path):
    """No mirror, no cache, --offline: one line naming the library and how to get it."""
    model = tm.library_net(tmp_path / "m.tflite")
    out = run_cli("--offline", "compile", str(model), "--kernels", "cmsis-nn", "-o", str(tmp_path / "m.tar"))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert "arm/cmsis-nn" in out.stderr and "microtvm fetch" in out.stderr
    assert not (tmp_path / "m.tar").exists()


def test_int8_extremes_through_every_library_layer(cmsis_nn, tmp_path):
    """Saturated inputs (all -128, all 127) reach every clamp the calls make."""
    from microtvm_registry.device.session import Session

    model = tm.library_net(tmp_path / "x.tflite")
    compiled, project = compile_and_build(model, tmp_path, kernels="cmsis-nn")
    with Session.open(project) as sess:
        for value in (-128, 127):
            inputs = [np.full(a.shape, value, np.int8) for a in tm.zero_inputs(model)]
            want = tm.tflm_reference(model, inputs, tmp_path / f"ref{value}")
            got = sess.run(sess.model["function"], inputs)
            for n, (t, w) in enumerate(zip(compiled.plan.outputs, want)):
                tm.assert_matches(got[t.name], w, f"output {n}, all {value}")
