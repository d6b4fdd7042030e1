"""Model Library Format: safe extraction (no TVM needed) and export from apache-tvm."""
from __future__ import annotations

import io
import json
import tarfile

import pytest

from microtvm_registry.errors import UnsafeSourceError
from microtvm_registry.compile import mlf as mlf_export
from microtvm_registry.formats import mlf


def _tar(path, members):
    with tarfile.open(path, "w:") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


UNSAFE = {
    "parent": [_file("./metadata.json"), _file("../escaped.txt")],
    "nested-parent": [_file("./codegen/../../escaped.txt")],
    "absolute": [_file("/tmp/absolute-escape.txt")],
    "symlink": [_special("./codegen", tarfile.SYMTYPE, "/etc")],
    "hardlink": [_special("./passwd", tarfile.LNKTYPE, "/etc/passwd")],
    "device": [_special("./dev-null", tarfile.CHRTYPE)],
    "fifo": [_special("./pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_safe_extract_refuses_unsafe_members_before_writing(tmp_path, case):
    archive = _tar(tmp_path / "bad.tar", [_file("./ok.txt")] + UNSAFE[case])
    dest = tmp_path / "out"
    with pytest.raises(UnsafeSourceError, match="refusing"):
        mlf.safe_extract(archive, dest)
    assert not (dest / "ok.txt").exists()  # nothing extracted, not even the safe member
    assert not (tmp_path / "escaped.txt").exists()


def test_safe_extract_extracts_plain_files(tmp_path):
    archive = _tar(tmp_path / "good.tar", [_file("./a/b.txt", b"hello"), _file("c.txt", b"c")])
    mlf.safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"hello"
    assert (tmp_path / "out" / "c.txt").read_bytes() == b"c"


def test_gzip_archive_is_refused(tmp_path):
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info, data = _file("./metadata.json", b"{}")
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(mlf.ModelLibraryError, match="uncompressed tar"):
        mlf.load_model_library_format(path)


def test_loader_recovers_functions_from_foreign_c_source(tmp_path):
    source = (
        "TVM_DLL int32_t __tvm_ffi_add(void* self_handle, void* args, int32_t num_args, void* result) {\n"
        '  const char* p[2] = {"x", "add(A: Tensor([2, 3], float32), B: Tensor([2, 3], float32))"};\n'
        "  float* T = (float*)TVMBackendAllocWorkspace(1, dev_id, (uint64_t)100ULL, 2, 32);\n"
        "  return 0;\n}\n"
    )
    meta = {"version": 7, "modules": {"m": {"model_name": "m", "style": "operator"}}}
    archive = _tar(
        tmp_path / "m.tar",
        [_file("./metadata.json", json.dumps(meta).encode()), _file("./codegen/host/src/m_lib0.c", source.encode())],
    )
    library = mlf.load_model_library_format(archive)
    fn = library.function("add")
    assert [(a.name, a.shape, a.dtype, a.role) for a in fn.args] == [
        ("A", (2, 3), "float32", "input"),
        ("B", (2, 3), "float32", "output"),
    ]
    assert fn.workspace_size_bytes == 128  # 100 rounded up to the 64-byte alignment
    with pytest.raises(mlf.ModelLibraryError, match="has no function 'nope'; it has: add"):
        library.function("nope")


# ------------------------------------------------------------------------------- with TVM


@pytest.fixture(scope="module")
def tvm():
    return pytest.importorskip("tvm")


def _kernels(tvm):
    from tvm import te

    a = te.placeholder((256,), name="A", dtype="float32")
    b = te.compute((256,), lambda i: a[i] * 2, name="B")
    c = te.compute((256,), lambda i: b[255 - i] + 1, name="C")
    x = te.placeholder((8, 4), name="X", dtype="int8")
    k = te.reduce_axis((0, 4), name="k")
    y = te.compute((8,), lambda i: te.sum(x[i, k].astype("int32"), axis=k), name="Y")
    return tvm.IRModule({"reverse2": te.create_prim_func([a, c]), "rowsum": te.create_prim_func([x, y])})


@pytest.mark.needs_tvm
def test_export_writes_mlf_v7_with_headers_and_call_info(tvm, tmp_path):
    path = mlf_export.export_model_library_format(_kernels(tvm), tmp_path / "model.tar", model_name="k")
    with tarfile.open(path, "r:") as tar:
        members = {m.name: m for m in tar.getmembers()}
        meta = json.loads(tar.extractfile("./metadata.json").read())
        source = tar.extractfile("./codegen/host/src/k_lib0.c").read().decode()
    assert all(name == "." or name.startswith("./") for name in members)
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" and m.gname == "root" for m in members.values())
    for header in ("tvm/ffi/c_api.h", "tvm/runtime/c_backend_api.h", "dlpack/dlpack.h", "tvm/runtime/base.h"):
        assert f"./codegen/host/include/{header}" in members
    assert meta["version"] == 7
    module = meta["modules"]["k"]
    assert module["style"] == "operator" and isinstance(module["target"], list)
    names = [f["function_name"] for f in module["memory"]["functions"]["operator_functions"]]
    assert sorted(names) == ["reverse2", "rowsum"]
    assert "__tvm_ffi_reverse2" in source and "__tvm_ffi_rowsum" in source
    library = mlf.load_model_library_format(path)
    rowsum = library.function("rowsum")
    assert [(a.name, a.shape, a.dtype, a.role) for a in rowsum.args] == [
        ("X", (8, 4), "int8", "input"),
        ("Y", (8,), "int32", "output"),
    ]
    reverse2 = library.function("reverse2")
    # The intermediate B is a workspace allocation in the generated C, and the export knows it.
    assert "TVMBackendAllocWorkspace" in source
    assert reverse2.workspace_size_bytes == 1024
    assert rowsum.workspace_size_bytes == 0


@pytest.mark.needs_tvm
def test_export_of_a_built_module_reads_arguments_from_the_c(tvm, tmp_path):
    built = tvm.tirx.build(
        tvm.IRModule({"rowsum": _kernels(tvm)["rowsum"].with_attr("global_symbol", "rowsum")}), target="c"
    )
    path = mlf_export.export_model_library_format(built, tmp_path / "built.tar")
    fn = mlf.load_model_library_format(path).function("rowsum")
    assert [a.role for a in fn.args] == ["input", "output"]
    assert fn.args[0].shape == (8, 4)


@pytest.mark.needs_tvm
def test_export_refuses_symbolic_shapes(tvm, tmp_path):
    from tvm import te

    n = te.var("n")
    a = te.placeholder((n,), name="A")
    b = te.compute((n,), lambda i: a[i] + 1, name="B")
    with pytest.raises(mlf.ModelLibraryError, match="symbolic shape"):
        mlf_export.export_model_library_format(tvm.IRModule({"f": te.create_prim_func([a, b])}), tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()
