"""A model file and an MLF are data a user may have downloaded: nothing in them may become code
(C, a shell command in a Makefile) or choose where a file is written. Each test here failed on
the code before the fix: the C ran, the command ran, the file landed outside the folder."""
from __future__ import annotations

import io
import os
import subprocess
import tarfile

import numpy as np
import pytest

from registry_support import run_cli
from support.onnx_models import reference, save

pytestmark = pytest.mark.needs_tvm

#: An output name that closes the comment it was written into and defines a constructor that
#: runs a command when the host program starts.
EVIL_OUTPUT = 'y */ __attribute__((constructor)) static void pwn(void) { system("touch PWNED"); } /*'


def _named_model(input_name: str, output_name: str):
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 8 * 4, dtype=np.float32).reshape(8, 4), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["h"]), helper.make_node("Relu", ["h"], [output_name])],
        "named",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [1, 4])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _built_host_project(tmp_path, model_path):
    out = run_cli("compile", str(model_path), "-o", str(tmp_path / "m.tar"), "--target", "host", "--json")
    assert out.returncode == 0, out.stderr
    facts = __import__("json").loads(out.stdout)
    for step in (("create-project", "host", str(tmp_path / "proj"), "--mlf", str(tmp_path / "m.tar")),
                 ("build", str(tmp_path / "proj"))):
        done = run_cli(*step)
        assert done.returncode == 0, done.stderr
    return tmp_path / "proj", facts


def test_tensor_names_never_reach_c_and_the_model_still_runs(tmp_path):
    model_path = save(_named_model("a b", EVIL_OUTPUT), tmp_path / "named.onnx")
    proj, facts = _built_host_project(tmp_path, model_path)
    # the mapping is in the facts: the model's names for people, the derived ones for C
    assert facts["inputs"][0]["name"] == "a b" and facts["inputs"][0]["c_name"] == "a_b"
    assert facts["outputs"][0]["name"] == EVIL_OUTPUT
    c_name = facts["outputs"][0]["c_name"]
    assert c_name.isidentifier() and "PWNED" not in "".join(p.read_text() for p in (proj / "model").rglob("*.[ch]"))

    x = np.arange(8, dtype=np.float32).reshape(1, 8) / 8
    np.save(tmp_path / "x.npy", x)
    run = run_cli("run", str(proj), "-i", f"a b={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "PWNED").exists() and not (proj / "PWNED").exists()
    (want,) = reference(model_path, {"a b": x})
    np.testing.assert_allclose(np.load(tmp_path / "out" / f"{c_name}.npy"), want, rtol=1e-6)

    # the Session takes the model's own names too
    from microtvm_registry.device.session import Session

    with Session.open(proj) as sess:
        got = sess.run(sess.model["function"], {"a b": x})
    np.testing.assert_allclose(got[c_name], want, rtol=1e-6)


@pytest.mark.parametrize("output_name", ["../../escaped", "ABSOLUTE", "sub/dir/x"])
def test_run_writes_outputs_only_inside_the_output_dir(tmp_path, output_name):
    absolute = tmp_path / "abs-escape"
    output_name = str(absolute) if output_name == "ABSOLUTE" else output_name
    model_path = save(_named_model("x", output_name), tmp_path / "m.onnx")
    proj, facts = _built_host_project(tmp_path, model_path)
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))
    out_dir = tmp_path / "a" / "b" / "out"
    out_dir.mkdir(parents=True)
    before = set(tmp_path.rglob("*.npy")) | {p for p in (tmp_path.parent.parent.glob("*.npy"))}
    run = run_cli("run", str(proj), "-i", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out_dir))
    assert run.returncode == 0, run.stderr
    written = sorted(out_dir.iterdir())
    assert [p.name for p in written] == [f"{facts['outputs'][0]['c_name']}.npy"]
    after = set(tmp_path.rglob("*.npy")) | {p for p in (tmp_path.parent.parent.glob("*.npy"))}
    assert after - before == set(written)
    assert not os.path.exists(f"{absolute}.npy")


def test_run_replaces_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    model_path = save(_named_model("x", "output"), tmp_path / "m.onnx")
    proj, _ = _built_host_project(tmp_path, model_path)
    np.save(tmp_path / "x.npy", np.ones((1, 8), np.float32))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "output.npy").symlink_to(victim)
    run = run_cli("run", str(proj), "-i", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out_dir))
    assert run.returncode == 0, run.stderr
    assert victim.read_text() == "precious"
    assert not (out_dir / "output.npy").is_symlink() and np.load(out_dir / "output.npy").shape == (1, 4)


SHELL_NAME = "codegen/host/src/a`touch${IFS}PWNED`b.c"


def _with_member(source_tar, dest_tar, name, data):
    with tarfile.open(source_tar) as src, tarfile.open(dest_tar, "w:") as out:
        for member in src.getmembers():
            out.addfile(member, src.extractfile(member) if member.isfile() else None)
        info = tarfile.TarInfo("./" + name)
        info.size = len(data)
        out.addfile(info, io.BytesIO(data))
    return dest_tar


@pytest.mark.parametrize("template", ["host", "cortex-m"])
def test_an_mlf_member_named_like_shell_syntax_is_refused_at_extraction(tmp_path, template):
    model_path = save(_named_model("x", "output"), tmp_path / "m.onnx")
    assert run_cli("compile", str(model_path), "-o", str(tmp_path / "m.tar")).returncode == 0
    bad = _with_member(tmp_path / "m.tar", tmp_path / "bad.tar", SHELL_NAME, b"int unused_symbol;\n")
    extra = ["-o", "board=mps2-an386"] if template == "cortex-m" else []
    out = run_cli("create-project", template, str(tmp_path / "proj"), "--mlf", str(bad), *extra, cwd=tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "touch${IFS}PWNED" in lines[0] and "refusing to extract it" in lines[0], out.stderr
    assert not (tmp_path / "proj").exists() and not (tmp_path / "PWNED").exists()


def test_the_makefiles_quote_file_names_even_if_one_got_through(tmp_path):
    """Belt and braces: a source file whose name is shell syntax, put into a generated project by
    hand, is compiled as a file and never run as a command."""
    model_path = save(_named_model("x", "output"), tmp_path / "m.onnx")
    proj, _ = _built_host_project(tmp_path, model_path)
    (proj / SHELL_NAME.replace("codegen", "model/codegen", 1)).write_text("int unused_symbol;\n")
    build = subprocess.run(["make", "-C", str(proj)], capture_output=True, text=True, cwd=tmp_path)
    assert build.returncode == 0, build.stdout + build.stderr
    assert not (tmp_path / "PWNED").exists() and not (proj / "PWNED").exists()
