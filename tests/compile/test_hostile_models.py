"""Files a user may have been handed cost seconds and megabytes, never gigabytes, and every bad
one is one line: an MLF that expands past the limits (a sparse tar, a huge metadata.json), a
malformed metadata.json or plan.json, an ONNX file whose few bytes ask for a constant of many
megabytes, an input with a zero-sized dimension. Each test failed on the code before the fix."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from registry_support import run_cli
from support.onnx_models import constant_bomb, save

pytestmark = pytest.mark.needs_tvm


def _rss_and_result(code: str, *args: str):
    """Runs ``code`` in a fresh interpreter; returns (peak RSS in MB, its stdout)."""
    wrapper = ("import atexit, resource\n"
               "atexit.register(lambda: print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, flush=True))\n" + code)
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, timeout=300)
    rss = int(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("RSS")))
    return rss, out


def _sparse_member_tar(path, name, size):
    """A tar (GNU tar --sparse) whose one member is ``size`` bytes of zeros stored sparse: a
    small file that expands to ``size``."""
    folder = path.parent / f"{path.stem}-src"
    member = folder / name
    member.parent.mkdir(parents=True, exist_ok=True)
    with open(member, "wb") as fh:
        fh.truncate(size)  # a hole, not data
    subprocess.run(["tar", "--sparse", "-cf", str(path), "-C", str(folder), name], check=True)
    member.unlink()
    return path


def test_an_mlf_expanding_past_the_limit_is_refused_before_it_fills_the_disk(tmp_path):
    from microtvm_registry.formats import mlf

    bomb = _sparse_member_tar(tmp_path / "bomb.tar", "codegen/host/src/big.c", 2 * 1024 ** 3)
    assert bomb.stat().st_size < 1024 * 1024
    env = dict(os.environ, MICROTVM_REGISTRY_MAX_EXTRACTED_BYTES=str(64 * 1024 * 1024))
    out = subprocess.run([sys.executable, "-c", "import sys; from microtvm_registry.formats import mlf; mlf.safe_extract(sys.argv[1], sys.argv[2])",
                          str(bomb), str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and "expands to more than 67,108,864 bytes" in out.stderr
    assert not (tmp_path / "out" / "codegen" / "host" / "src" / "big.c").exists()
    with pytest.raises(mlf.ModelLibraryError, match="expands to more than"):
        mlf.safe_extract(bomb, tmp_path / "out2")  # the default limit (1 GiB) refuses 2 GiB too


def test_a_huge_sparse_metadata_json_is_refused_by_its_size(tmp_path):
    huge = _sparse_member_tar(tmp_path / "meta.tar", "metadata.json", 1024 ** 3)
    rss, out = _rss_and_result(
        "import sys\nfrom microtvm_registry.formats import mlf\ntry:\n    mlf.load_model_library_format(sys.argv[1])\n"
        "except mlf.ModelLibraryError as e:\n    print('ERR', e)\n", str(huge))
    assert "metadata.json is 1,073,741,824 bytes, more than 67,108,864; refused" in out.stdout, out.stdout + out.stderr
    assert rss < 400, f"{rss} MB of RSS to refuse it"


def _mlf_with(tmp_path, name, metadata=None, plan=None, extra=()):
    path = tmp_path / f"{name}.tar"
    with tarfile.open(path, "w:") as tar:
        def add(member, data):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        if metadata is not None:
            add("./metadata.json", metadata)
        if plan is not None:
            add("./plan.json", plan)
        for member, data in extra:
            add(member, data)
    return path


@pytest.mark.parametrize("case, metadata, plan, words", [
    ("not-utf8", b"\xff\xfe{}", None, "is not UTF-8 text"),
    ("deep", b"[" * 200_000 + b"]" * 200_000, None, "nested too deeply"),
    ("a-list", b"[1, 2]", None, "holds a list, not an object"),
    ("empty", b"{}", None, "has no metadata.json"),
    ("bad-function", json.dumps({"modules": {"m": {"functions": [{"name": "f", "args": [{"name": "x"}]}]}}}).encode(), None, "function 0 is malformed"),
    ("huge-workspace", json.dumps({"modules": {"m": {"functions": [{"name": "f", "args": [], "workspace_size_bytes": 1e400}]}}}).encode().replace(b"Infinity", b"1e400"), None, "function 0 is malformed"),
])
def test_malformed_metadata_is_one_line(tmp_path, case, metadata, plan, words):
    from microtvm_registry.formats import mlf

    path = _mlf_with(tmp_path, case, metadata if case != "empty" else None, plan)
    with pytest.raises(mlf.ModelLibraryError, match=words.replace("(", r"\(")):
        mlf.load_model_library_format(path)


GOOD_META = json.dumps({"modules": {"m": {"model_name": "m", "functions": []}}}).encode()


@pytest.mark.parametrize("plan, words", [
    (b'{"inputs": [], "outputs": [], "constants": [], "tensors": [], "calls": [{"kernel": "k", "args": [], "workspace_bytes": "lots"}], "arena_bytes": 0}', "is not a plan microtvm-registry wrote"),
    (b'{"inputs": [], "outputs": [], "constants": [], "tensors": [], "calls": [], "arena_bytes": 1e400}', "is not a plan microtvm-registry wrote"),
    (b'{"inputs": [], "outputs": [], "constants": [], "tensors": [], "calls": [], "arena_bytes": -100}', "gives a negative size"),
    (b"{}", "is not a plan microtvm-registry wrote"),
    (b"[]", "is not a plan microtvm-registry wrote"),
    (b"\xff", "is not UTF-8 text"),
])
def test_a_malformed_plan_is_one_line_at_create_project(tmp_path, plan, words):
    path = _mlf_with(tmp_path, "p", GOOD_META, plan, extra=[("./codegen/host/include/tvm/ffi/c_api.h", b"")])
    out = run_cli("create-project", "host", str(tmp_path / "proj"), "--mlf", str(path))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert words in out.stderr and not (tmp_path / "proj").exists()


@pytest.mark.parametrize("case, extra, words", [
    ("file-named-like-a-folder", [("./codegen/host/src/", b"int x;")], "is a file named like a folder"),
    ("metadata-as-a-folder-name", [("./metadata.json/", b"{}")], "is a file named like a folder"),
    ("twice", [("./codegen/host/src/a.c", b"int a;"), ("./codegen/host/src/a.c", b"int b;")], "is given twice"),
    ("file-then-folder", [("./codegen/host/src/a.c", b"int a;"), ("./codegen/host/src/a.c/", None)], "is given twice"),
    ("file-after-what-lies-under-it", [("./codegen/host/src/x.c", b"int x;"), ("./codegen", b"a file")], "lies under the file"),
])
def test_a_member_a_reader_and_an_extractor_could_see_differently_is_refused(tmp_path, case, extra, words):
    """Before: the reader took one metadata.json and the extractor wrote another, or a file
    named ``src/`` was written as ``src``."""
    from microtvm_registry.formats import mlf

    path = tmp_path / f"{case}.tar"
    with tarfile.open(path, "w:") as tar:
        for member, data in [("./metadata.json", GOOD_META), *extra]:
            info = tarfile.TarInfo(member)
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data or b""))
    for read in (lambda: mlf.safe_extract(path, tmp_path / "out"), lambda: mlf.load_model_library_format(path)):
        with pytest.raises(mlf.UnsafeArchiveError, match=words):
            read()
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_an_mlf_member_under_a_file_is_refused(tmp_path):
    from microtvm_registry.formats import mlf

    path = _mlf_with(tmp_path, "f", GOOD_META, extra=[("./codegen", b"a file"), ("./codegen/host/src/x.c", b"int x;")])
    with pytest.raises(mlf.UnsafeArchiveError, match="lies under the file"):
        mlf.safe_extract(path, tmp_path / "out")


def test_a_tiny_onnx_asking_for_a_huge_constant_is_refused_before_folding(tmp_path):
    """165 bytes of ONNX (ConstantOfShape 4096x4096, added to the input) cost 1.5 GB of RSS and
    wrote a 391 MB tar before; now one line, in little memory, naming the tensor and the flash."""
    model = constant_bomb()
    path = save(model, tmp_path / "bomb.onnx")
    assert path.stat().st_size < 300
    rss, out = _rss_and_result(
        "import sys\nfrom microtvm_registry.cli import main\nsys.exit(main(['compile', sys.argv[1], '-o', sys.argv[2], '--target', 'cortex-m4']))",
        str(path), str(tmp_path / "bomb.tar"))
    assert out.returncode == 1 and not (tmp_path / "bomb.tar").exists()
    assert "tensor 'c' of bomb.onnx would be 67,108,864 bytes (4096x4096 float32)" in out.stderr
    assert "more than the flash of" in out.stderr and "largest cortex-m4 board we know" in out.stderr
    assert rss < 600, f"{rss} MB of RSS to refuse it"
    # the default target, host, rehearses a board's build: bounded by the largest flash we know
    rss, out = _rss_and_result(
        "import sys\nfrom microtvm_registry.cli import main\nsys.exit(main(['compile', sys.argv[1], '-o', sys.argv[2]]))",
        str(path), str(tmp_path / "bomb.tar"))
    assert out.returncode == 1 and not (tmp_path / "bomb.tar").exists()
    assert "more than the flash of" in out.stderr and "the largest board we know" in out.stderr
    assert rss < 600, f"{rss} MB of RSS to refuse it for host"


def _relu_onnx(path, shape):
    """A one-Relu ONNX model of ``shape``, saved at ``path``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], path.stem,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return save(model, path)


def test_a_zero_sized_input_dimension_says_so(tmp_path):
    path = _relu_onnx(tmp_path / "z.onnx", [0, 8])
    out = run_cli("compile", str(path), "-o", str(tmp_path / "z.tar"))
    assert out.returncode == 1 and "has a dimension of size 0 [0, 8]" in out.stderr and "dynamic" not in out.stderr


def test_compile_writes_the_mlf_with_the_umask_s_mode(tmp_path):
    path = _relu_onnx(tmp_path / "r.onnx", [1, 8])
    out = subprocess.run(["bash", "-c", f"umask 022 && {sys.executable} -m microtvm_registry compile {path} -o {tmp_path / 'r.tar'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert oct((tmp_path / "r.tar").stat().st_mode & 0o777) == oct(0o644)


def _external_data_model(folder, location):
    """x + w, with w's 16 floats kept in the file at ``location`` (relative to ``folder``)."""
    from onnx import TensorProto, helper

    weights = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[16], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        weights.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    return save(model, folder / "model.onnx")


SECRET = np.arange(16, dtype=np.float32) * 7


@pytest.mark.parametrize("variant, words", [
    ("symlinked-file", "reached through the symlink"),
    ("symlinked-folder", "reached through the symlink"),
    ("parent", "outside the model's folder"),
    ("absolute", "outside the model's folder"),
])
def test_external_data_outside_the_model_s_folder_is_never_read(tmp_path, variant, words):
    """A downloaded model must not pull the user's other files into its weights (onnx 1.20.1
    followed the two symlinked variants and loaded the secret's bytes)."""
    from microtvm_registry.compile.frontends.onnx import load_onnx
    from microtvm_registry.errors import ModelError

    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.bin"
    secret.write_bytes(SECRET.tobytes())
    folder = tmp_path / "models" / variant
    location = {"symlinked-file": "secret.bin", "symlinked-folder": "sub/secret.bin",
                "parent": "../../outside/secret.bin", "absolute": str(secret)}[variant]
    path = _external_data_model(folder, location)
    if variant == "symlinked-file":
        os.symlink(secret, folder / "secret.bin")
    if variant == "symlinked-folder":
        os.symlink(tmp_path / "outside", folder / "sub")
    with pytest.raises(ModelError, match=words) as err:
        load_onnx(path)
    assert "\n" not in str(err.value) and "tensor 'w'" in str(err.value) and "re-export" in str(err.value)
    out = run_cli("compile", str(path), "-o", str(tmp_path / "m.tar"))
    assert out.returncode == 1 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.tar").exists()


def test_external_data_next_to_the_model_still_loads(tmp_path):
    from onnx import numpy_helper

    from microtvm_registry.compile.frontends.onnx import load_onnx

    path = _external_data_model(tmp_path / "m", "weights.bin")
    (tmp_path / "m" / "weights.bin").write_bytes(SECRET.tobytes())
    model = load_onnx(path)
    assert np.array_equal(numpy_helper.to_array(model.graph.initializer[0]), SECRET)


def _meta_with_libraries(libraries):
    return json.dumps({"modules": {"m": {"model_name": "m", "functions": [], "model": {"libraries": libraries}}}}).encode()


_LIB = {"name": "arm/cmsis-nn", "version": "7.0.0", "content_id": "322045d8c1b8df2721743ed2745a745d6efe4cf1", "license": "Apache-2.0",
        "sources": ["Source/SoftmaxFunctions/arm_softmax_s8.c"]}


@pytest.mark.parametrize("libraries, words", [
    (["arm/cmsis-nn"], "lists a library that is not a table"),
    ([dict(_LIB, content_id=None)], "library entry arm/cmsis-nn is malformed"),
    ([dict(_LIB, sources="Source/a.c")], "library entry arm/cmsis-nn is malformed"),
    ([dict(_LIB, sources=["Source/../../../etc/x.c"])], "is not a library source path"),
    ([dict(_LIB, sources=["/etc/x.c"])], "is not a library source path"),
    ([dict(_LIB, sources=["Include/arm_nnfunctions.h"])], "is not a library source path"),
    ([dict(_LIB, sources=["Source/a.c; rm -rf ~.c"])], "is not a library source path"),
    ([dict(_LIB, name="acme/nowhere")], "the model was compiled with acme/nowhere 7.0.0: no template named 'acme/nowhere'"),
])
def test_a_malformed_library_entry_is_one_line_at_create_project(tmp_path, libraries, words):
    """The libraries a model records reach cache lookups, paths and a Makefile: each is checked,
    and a project is never left half made."""
    path = _mlf_with(tmp_path, "lib", _meta_with_libraries(libraries), None, extra=[("./codegen/host/include/tvm/ffi/c_api.h", b"")])
    out = run_cli("--offline", "create-project", "host", str(tmp_path / "proj"), "--mlf", str(path))
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert words in out.stderr and not (tmp_path / "proj").exists()
