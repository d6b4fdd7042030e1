"""Names from outside (a model's tensors, an index's descriptions) reach the terminal escaped:
no escape sequence, carriage return or newline of theirs is written raw, so none can recolour,
clear or overwrite the screen, or start a line that looks like ours."""
from __future__ import annotations

import pytest

from registry_support import git_version_table, make_template_repo, run_cli, template_table, write_index
from support.onnx_models import save

HOSTILE = "in\x1b[31mRED\nmicrotvm: error: fake\r"


def _raw_controls(text: str) -> list:
    return [c for c in text if not c.isprintable() and c != "\n"]


def test_an_index_description_cannot_drive_the_terminal(tmp_path):
    versions = make_template_repo(tmp_path / "repo", ["1.0.0"])
    index = write_index(tmp_path / "x.toml", [template_table(
        "acme/blinky", [git_version_table(str(tmp_path / "repo"), versions["1.0.0"])], platform="acme\x1b[2J",
        description="Blinks\x1b[2J\nmicrotvm: error: fake\r")])
    assert run_cli("index", "add", "x", str(index)).returncode == 0
    for args in (["list"], ["show", "acme/blinky"]):
        out = run_cli(*args)
        assert out.returncode == 0, out.stderr
        assert not _raw_controls(out.stdout), out.stdout
        assert "Blinks\\x1b[2J\\nmicrotvm: error: fake\\r" in out.stdout
        assert not any(line.startswith("microtvm: error") for line in out.stdout.splitlines())


@pytest.mark.needs_tvm
def test_a_model_s_names_are_shown_escaped(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", [HOSTILE], ["y"])], "g",
                              [helper.make_tensor_value_info(HOSTILE, TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = save(model, tmp_path / "m.onnx")
    compiled = run_cli("compile", str(path), "-o", str(tmp_path / "m.tar"))
    assert compiled.returncode == 0, compiled.stderr
    assert not _raw_controls(compiled.stdout) and "input in\\x1b[31mRED\\nmicrotvm: error: fake\\r (C: " in compiled.stdout
    refused = run_cli("compile", str(path), "-o", str(tmp_path / "n.tar"), "--input", "wrong=1,4")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1 and not _raw_controls(refused.stderr), refused.stderr
    assert lines[0].endswith("its inputs: in\\x1b[31mRED\\nmicrotvm: error: fake\\r")  # whole, not cut at the newline
