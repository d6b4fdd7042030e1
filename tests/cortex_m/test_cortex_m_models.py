"""Whole compiled models on emulated boards: checked against onnxruntime through the session,
run standalone by a firmware of the test's own that calls model.h (no session), too big for a
board (one line naming the region), and timed per call through the CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from microtvm_registry import get_packaged_resource
from registry_support import run_cli
from support.onnx_models import random_inputs, reference, save, zoo

TEMPLATE = get_packaged_resource("templates/cortex-m")

pytestmark = pytest.mark.needs_tvm

BOARD_CORES = {"mps2-an386": "cortex-m4", "mps3-an547": "cortex-m55"}

STANDALONE_MAIN = r"""
/* A firmware of the test's own: the model through model.h alone. It reads the input from the
 * UART, runs the model, writes the output back; no session protocol, no function table. */
#include "mtvm_port.h"
#include "zoo_model.h"
void mtvm_board_init(void);
static float x[ZOO_INPUT_X_BYTES / 4], y[ZOO_OUTPUT_Y_BYTES / 4];
int main(void) {
  mtvm_board_init();
  for (;;) {
    mtvm_port_read((uint8_t*)x, sizeof x);
    const void* in[] = {x};
    void* out[] = {y};
    int status = zoo_run(in, out);
    uint8_t tag = status == 0 ? 'K' : 'E';
    mtvm_port_write(&tag, 1);
    mtvm_port_write((const uint8_t*)y, sizeof y);
  }
}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from microtvm_registry.compile.sample_models import demo_kws

    from support.onnx_models import quantize_qdq

    work = tmp_path_factory.mktemp("models")
    kws = save(demo_kws(), work / "kws.onnx")
    return {"zoo": save(zoo(), work / "zoo.onnx"), "kws": kws,
            "kws_q": quantize_qdq(kws, work / "kws_q.onnx", "input", (1, 1, 10, 6))}


@pytest.fixture(scope="module")
def model_projects(models, tmp_path_factory):
    """(board, model) -> a generated, built and flashed cortex-m project of the compiled model."""
    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.project import generate_project

    work = tmp_path_factory.mktemp("model-projects")
    made = {}

    def get(board: str, name: str) -> Path:
        if (board, name) not in made:
            compiled = compile_model(models[name], work / f"{name}-{board}.tar", target=BOARD_CORES[board])
            project = generate_project(TEMPLATE, compiled.path, work / f"{name}-{board}", {"board": board})
            with project:
                project.build()
                project.flash()
            made[(board, name)] = work / f"{name}-{board}"
        return made[(board, name)]

    return get


@pytest.mark.parametrize("board", sorted(BOARD_CORES))
@pytest.mark.parametrize("name", ["zoo", "kws"])
def test_a_compiled_model_matches_onnxruntime_on_the_board(models, model_projects, board, name):
    from microtvm_registry.device.session import Session

    project = model_projects(board, name)
    input_name = "x" if name == "zoo" else "input"
    shape = (1, 2, 8, 6) if name == "zoo" else (1, 1, 10, 6)
    inputs = random_inputs({input_name: shape}, seed=3)
    (want,) = reference(models[name], inputs)
    with Session.open(project) as sess:
        (got,) = sess.run(name, inputs).values()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        timing = sess.time_evaluator(name, number=1, repeat=2)()
        assert timing.unit == "instructions" and timing.counts[0] == timing.counts[1] > 1000  # exact under icount
        calls = sess.call_times()
        assert len(calls) == sess.model["calls"] and all(c > 0 for _, c, _ in calls)


@pytest.mark.parametrize("board", sorted(BOARD_CORES))
def test_an_int8_model_runs_in_integers_on_the_board(models, model_projects, board):
    from microtvm_registry.device.session import Session

    project = model_projects(board, "kws_q")
    with Session.open(project) as sess:
        assert sess.model["integer_operators"] == ["conv2d", "dense", "mean", "reshape"]
        for seed in range(3):
            inputs = random_inputs({"input": (1, 1, 10, 6)}, seed=seed)
            (want,) = reference(models["kws_q"], inputs)
            got = sess.run("kws_q", inputs)["probabilities"]
            assert float(np.max(np.abs(got - want))) <= 1 / 255 + 1e-6  # one step of the int8 output
        counts = sess.time_evaluator("kws_q", number=1, repeat=2)().counts
    assert counts[0] == counts[1] > 1000


def test_the_standalone_entry_point_runs_in_a_firmware_of_its_own(models, model_projects, tmp_path):
    import serial

    from microtvm_registry.device.qemu import QemuBoard
    from microtvm_registry.project import GeneratedProject

    firmware = tmp_path / "standalone"
    shutil.copytree(model_projects("mps2-an386", "zoo"), firmware)
    (firmware / "src" / "main.c").write_text(STANDALONE_MAIN)
    makefile = firmware / "Makefile"  # standalone: the model brings its own workspace
    makefile.write_text(makefile.read_text().replace(" -DMTVM_MODEL_SHARED_WORKSPACE", ""))
    shutil.rmtree(firmware / "build")
    with GeneratedProject.from_directory(firmware) as project:
        project.build()
    inputs = random_inputs({"x": (1, 2, 8, 6)}, seed=11)
    (want,) = reference(models["zoo"], inputs)
    with QemuBoard("mps2-an386", firmware / "build" / "firmware.elf", 0) as board:
        port = serial.Serial(board.pty, 115200, timeout=30)
        try:
            port.write(inputs["x"].tobytes())
            reply = port.read(1 + want.nbytes)
        finally:
            port.close()
    assert reply[:1] == b"K"
    np.testing.assert_allclose(np.frombuffer(reply[1:], np.float32).reshape(want.shape), want, rtol=1e-5, atol=1e-6)


def test_a_model_too_big_for_the_board_names_the_region_and_the_bytes(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from microtvm_registry.compile.model import compile_model
    from microtvm_registry.errors import BuildError
    from microtvm_registry.project import generate_project

    weights = numpy_helper.from_array(np.ones((256, 600), np.float32), "w")  # 614,400 bytes of weights
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 600])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    compiled = compile_model(save(model, tmp_path / "big.onnx"), tmp_path / "big.tar", target="cortex-m55")
    assert compiled.summary["weights_bytes"] == 614_400
    project = generate_project(TEMPLATE, compiled.path, tmp_path / "proj", {"board": "mps3-an547"})
    with project, pytest.raises(BuildError) as info:
        project.build()
    line = str(info.value).splitlines()[0]
    assert "does not fit mps3-an547: region FLASH needs" in line and "the board has 524288" in line
    assert int(line.split("needs ")[1].split()[0]) > 614_400


def test_run_time_reports_the_inference_and_every_call(models, model_projects, tmp_path):
    project = model_projects("mps3-an547", "kws")
    np.save(tmp_path / "input.npy", random_inputs({"input": (1, 1, 10, 6)})["input"])
    out = run_cli("run", str(project), "-i", f"input={tmp_path / 'input.npy'}", "--output-dir", str(tmp_path), "--time", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["function"] == "kws" and [o["name"] for o in result["outputs"]] == ["probabilities"]
    calls = result["time"]["calls"]
    assert len(calls) >= 5 and {c["unit"] for c in calls} == {"instructions"}
    assert sum(c["count"] for c in calls) <= result["time"]["mean_count"]  # the calls are inside the inference
    text = run_cli("run", str(project), "-i", f"input={tmp_path / 'input.npy'}", "--output-dir", str(tmp_path), "--time")
    assert "time of kws on the device:" in text.stdout and "call 0: fused_conv2d" in text.stdout
