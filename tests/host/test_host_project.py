"""End to end: kernels compiled by apache-tvm, run through the packaged host template via our
Project API client, compared with numpy; and every way it is meant to fail."""
from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from microtvm_registry.errors import BuildError

pytest.importorskip("tvm")
pytestmark = pytest.mark.needs_tvm

from microtvm_registry.errors import SessionError  # noqa: E402
from microtvm_registry.compile import mlf as mlf_export
from microtvm_registry.formats import mlf
from microtvm_registry.device import protocol
from microtvm_registry.device.protocol import DeviceError, FrameError  # noqa: E402
from microtvm_registry.device.session import Session  # noqa: E402
from microtvm_registry.project import GeneratedProject, TemplateProject  # noqa: E402
from microtvm_registry.project_api import server  # noqa: E402

REPLY_TIMEOUT = 60.0  # only stops a hang; never asserted on


@pytest.fixture(scope="module")
def template(host_template):
    with TemplateProject.from_directory(host_template) as tp:
        yield tp


@pytest.fixture(scope="module")
def project(template, kernels_mlf, tmp_path_factory):
    proj = template.generate_project(kernels_mlf, tmp_path_factory.mktemp("p") / "kernels")
    proj.build()
    yield proj
    proj.close()


@pytest.fixture(scope="module")
def sess(project):
    with Session.open(project, timeout_sec=REPLY_TIMEOUT) as s:
        yield s


def test_generated_project_layout_and_info(project):
    root = project.path
    for rel in ("microtvm_api_server.py", "model.tar", "model/metadata.json", "Makefile", "src/main.c",
                "src/function_table.c", "runtime/mtvm_runtime.c", "build/main"):
        assert (root / rel).is_file(), rel
    info = project.info()
    assert info["platform_name"] == "host"
    assert info["is_template"] is False
    assert info["model_library_format_path"] == str(root / "model.tar")
    assert "-DTVM_WORKSPACE_SIZE_BYTES" in (root / "Makefile").read_text()
    assert "2097152" in (root / "Makefile").read_text()


def test_template_info_mirrors_tvm_host_template(template):
    info = template.info()
    assert info["is_template"] is True and info["model_library_format_path"] == ""
    opts = {o["name"]: o for o in info["project_options"]}
    assert opts["verbose"]["type"] == "bool" and opts["verbose"]["default"] is False
    assert opts["verbose"]["optional"] == ["build"]
    assert opts["workspace_size_bytes"]["default"] == 2097152
    assert opts["workspace_size_bytes"]["optional"] == ["generate_project"]


def test_device_lists_the_model_functions(sess):
    assert {f.name for f in sess.hello.functions} == {"dense", "add_i8", "rowsum_i8", "reverse_scale", "noop"}
    assert sess.hello.workspace_size_bytes == 2097152


def test_float32_dense_matches_numpy(sess):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    w = rng.standard_normal((8, 16), dtype=np.float32)
    out = sess.run("dense", {"x": x, "w": w})
    assert list(out) == ["y"]
    np.testing.assert_allclose(out["y"], x @ w.T, rtol=1e-5, atol=1e-5)


def test_int8_kernels_match_numpy(sess):
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, (6, 10), dtype=np.int8)
    b = rng.integers(-128, 128, (6, 10), dtype=np.int8)
    s = np.zeros((6, 10), dtype=np.int8)
    returned = sess.call("add_i8", a, b, s)
    expected = (a.astype(np.int16) + b.astype(np.int16)).astype(np.int8)  # two's complement wrap
    np.testing.assert_array_equal(returned, expected)
    np.testing.assert_array_equal(s, expected)  # output updated in place, as in TVM
    rows = sess.run("rowsum_i8", [a])["r32"]
    assert rows.dtype == np.int32
    np.testing.assert_array_equal(rows, a.astype(np.int32).sum(axis=1))


def test_workspace_kernel_really_uses_tvm_backend_alloc_workspace(sess, project):
    source = next((project.path / "model" / "codegen" / "host" / "src").glob("*.c")).read_text()
    body = source[source.index("__tvm_ffi_reverse_scale(void* self_handle") :]
    assert "TVMBackendAllocWorkspace" in body and "TVMBackendFreeWorkspace" in body
    src = np.arange(512, dtype=np.float32)
    out = sess.run("reverse_scale", {"src": src})["dst"]
    np.testing.assert_array_equal(out, src[::-1] * 2 + 1)
    assert sess.device_stats()["workspace_peak_bytes"] >= 512 * 4


@pytest.mark.parametrize(
    "bad, why",
    [
        (np.zeros((4, 15), np.float32), "shape"),
        (np.zeros((4, 16), np.float64), "dtype"),
        (np.zeros((16, 4), np.float32), "shape"),
    ],
)
def test_wrong_shape_or_dtype_is_refused_before_anything_is_sent(sess, bad, why):
    before = sess.device_stats()
    with pytest.raises(SessionError) as info:
        sess.run("dense", {"x": bad, "w": np.zeros((8, 16), np.float32)})
    message = str(info.value)
    assert "argument x expects shape (4, 16) float32" in message
    assert f"got shape {bad.shape} {bad.dtype}" in message
    after = sess.device_stats()
    # Only the stats request itself reached the device in between.
    assert after["frames_received"] == before["frames_received"] + 1
    assert after["calls"] == before["calls"]
    # And the session still works normally.
    out = sess.run("dense", {"x": np.ones((4, 16), np.float32), "w": np.ones((8, 16), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((4, 8), 16, np.float32))


def test_wrong_argument_count_and_names_are_refused(sess):
    with pytest.raises(SessionError, match="dense takes 3 arguments"):
        sess.call("dense", np.zeros((4, 16), np.float32))
    with pytest.raises(SessionError, match="no input named 'q'"):
        sess.run("dense", {"q": 1})
    with pytest.raises(SessionError, match="has no function 'nope'"):
        sess.run("nope", [])


def test_kernel_error_text_comes_back_from_the_device(sess):
    with pytest.raises(DeviceError) as info:
        sess.call("dense", np.zeros((4, 15), np.float32), np.zeros((8, 16), np.float32),
                  np.zeros((4, 8), np.float32), validate=False)
    assert info.value.kind == "ValueError"
    assert "x.shape[1]" in str(info.value) and "expected 16" in str(info.value)
    # The generated code's own TypeError for a dtype mismatch.
    with pytest.raises(DeviceError) as info:
        sess.call("dense", np.zeros((4, 16), np.int32), np.zeros((8, 16), np.float32),
                  np.zeros((4, 8), np.float32), validate=False)
    assert info.value.kind == "TypeError" and "x.dtype" in str(info.value)


def test_time_evaluator_measures_on_the_device(sess):
    timer = sess.time_evaluator("dense", number=20, repeat=4)
    result = timer()
    assert len(result.results) == 4 and result.number == 20
    assert all(t > 0 for t in result.results)
    assert result.min <= result.mean <= result.max
    assert "mean (ms)" in str(result)


def test_echo_round_trips_large_payloads(sess):
    payload = np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    assert sess.echo(payload) == payload


class _CorruptingTransport:
    """Flips one bit in the bytes that come back through the real pipe, after ``skip`` bytes."""

    def __init__(self, inner, skip):
        self.inner, self.skip, self.done = inner, skip, False

    def read(self, n, timeout_sec):
        data = bytearray(self.inner.read(n, timeout_sec))
        if not self.done and len(data) > self.skip:
            data[self.skip] ^= 0x04
            self.done = True
        elif not self.done:
            self.skip -= len(data)
        return bytes(data)

    def write(self, data, timeout_sec):
        self.inner.write(data, timeout_sec)


def test_corrupted_reply_byte_is_caught_by_the_checksum(project):
    with project.transport() as transport:
        sess = Session(transport, timeout_sec=REPLY_TIMEOUT)  # hello passes untouched
        corrupt = _CorruptingTransport(transport, skip=12 + 20)  # inside the next reply's payload
        sess._transport = corrupt
        with pytest.raises(FrameError, match="frame checksum mismatch"):
            sess.echo(bytes(range(64)))
        with pytest.raises(SessionError, match="unusable"):
            sess.echo(b"again")


def test_corrupted_request_is_refused_by_the_device(project):
    with project.transport() as transport:
        sess = Session(transport, timeout_sec=REPLY_TIMEOUT)
        frame = bytearray(protocol.encode_frame(protocol.MSG_ECHO, b"payload"))
        frame[10] ^= 0x01
        with pytest.raises(FrameError, match="device reports frame checksum mismatch"):
            sess.send_raw(bytes(frame), replies=1)
    with project.transport() as transport:  # a fresh device answers normally
        assert Session(transport, timeout_sec=REPLY_TIMEOUT).echo(b"ok") == b"ok"


# ------------------------------------------------------------------------- failure projects


def _handmade_mlf(tmp_path, name, source, functions):
    return mlf_export.write_model_library_format(
        tmp_path / f"{name}.tar", c_sources={f"{name}_lib0.c": source}, functions=functions, model_name=name
    )


CRASH_SOURCE = """
#include <stdlib.h>
#include <stdint.h>
int32_t __tvm_ffi_boom(void* self_handle, void* args, int32_t num_args, void* result) {
  abort();
  return 0;
}
"""

BROKEN_SOURCE = """
#include <stdint.h>
int32_t __tvm_ffi_broken(void* self_handle, void* args, int32_t num_args, void* result) {
  return undeclared_identifier_xyz + 1;
}
"""


def test_crashing_device_program_gives_transport_closed(template, tmp_path):
    arg = mlf.ArgInfo("t", (2,), "float32", "output")
    path = _handmade_mlf(tmp_path, "crash", CRASH_SOURCE, [mlf.FunctionInfo("boom", (arg,))])
    proj = template.generate_project(path, tmp_path / "crash-project")
    try:
        proj.build()
        with Session.open(proj, timeout_sec=REPLY_TIMEOUT) as sess:
            with pytest.raises(server.TransportClosedError):
                sess.run("boom", {})
            with pytest.raises(SessionError, match="unusable"):
                sess.echo(b"x")
    finally:
        proj.close()


def test_compile_error_surfaces_with_the_compilers_last_lines(template, tmp_path):
    arg = mlf.ArgInfo("t", (2,), "float32", "output")
    path = _handmade_mlf(tmp_path, "broken", BROKEN_SOURCE, [mlf.FunctionInfo("broken", (arg,))])
    proj = template.generate_project(path, tmp_path / "broken-project")
    try:
        with pytest.raises(BuildError) as info:
            proj.build()
    finally:
        proj.close()
    assert isinstance(info.value.__cause__, server.ServerError)
    message = str(info.value)
    first, _, tail = message.partition("\n")
    assert "failed (make exited" in first and "compiler's last lines" in first
    assert "undeclared_identifier_xyz" in first  # the telling line is in what a CLI shows
    assert "undeclared_identifier_xyz" in tail and "error" in tail
    assert not (tmp_path / "broken-project" / "build" / "main").exists()


def test_workspace_larger_than_configured_fails_clearly(template, kernels_mlf, tmp_path):
    proj = template.generate_project(kernels_mlf, tmp_path / "small-ws", {"workspace_size_bytes": 1000})
    try:
        proj.build()
        with Session.open(proj, timeout_sec=REPLY_TIMEOUT) as sess:
            assert sess.hello.workspace_size_bytes == 1000
            with pytest.raises(DeviceError) as info:
                sess.run("reverse_scale", {"src": np.zeros(512, np.float32)})
            assert info.value.kind == "MemoryError"
            assert "workspace exhausted: asked 2048 bytes, 1000 free of 1000" in str(info.value)
            assert "workspace_size_bytes" in str(info.value)
            # Kernels without workspace still run on the same device.
            out = sess.run("noop", [np.array([7.0], np.float32)])
            assert out["one_out"][0] == 7.0
    finally:
        proj.close()


def _unsafe_tar(path, kind):
    good = io.BytesIO()
    with tarfile.open(path, "w:") as tar:
        info = tarfile.TarInfo("./metadata.json")
        data = b'{"version": 7, "modules": {}}'
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo({"escape": "./../escaped.c", "absolute": "/tmp/abs-escape.c",
                               "symlink": "./codegen", "device": "./null"}[kind])
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc"
            tar.addfile(bad)
        elif kind == "device":
            bad.type = tarfile.CHRTYPE
            tar.addfile(bad)
        else:
            bad.size = 1
            tar.addfile(bad, io.BytesIO(b"x"))
    del good
    return path


@pytest.mark.parametrize("kind", ["escape", "absolute", "symlink", "device"])
def test_unsafe_mlf_is_refused_and_leaves_no_project(template, tmp_path, kind):
    archive = _unsafe_tar(tmp_path / f"{kind}.tar", kind)
    target = tmp_path / "projects" / kind
    with pytest.raises(server.ServerError) as info:
        template.generate_project(archive, target)
    assert "unsafe model archive" in info.value.message and "refusing" in info.value.message
    assert not target.exists()
    assert not (tmp_path / "projects" / "escaped.c").exists()
    leftovers = list((tmp_path / "projects").iterdir()) if (tmp_path / "projects").exists() else []
    assert leftovers == []


def test_existing_project_folder_is_refused(template, kernels_mlf, tmp_path):
    (tmp_path / "exists").mkdir()
    with pytest.raises(Exception, match="already exists"):
        template.generate_project(kernels_mlf, tmp_path / "exists")


def test_generated_project_reopens_from_its_folder(project):
    with GeneratedProject.from_directory(project.path) as again:
        assert again.info()["is_template"] is False
        with Session.open(again, timeout_sec=REPLY_TIMEOUT) as sess:
            out = sess.run("noop", [np.array([3.5], np.float32)])
    assert out["one_out"][0] == 3.5


def test_transport_semantics_of_the_template_server(project):
    with project.transport() as transport:
        assert tuple(transport.timeouts) == (0, 0, 0)
        with pytest.raises(server.IoTimeoutError):
            transport.read(16, 0.05)  # the device has nothing to say until asked
        transport.write(protocol.encode_frame(protocol.MSG_ECHO, b"abc"), 10.0)
        decoder = protocol.FrameDecoder()
        frames = []
        while not frames:
            chunk = transport.read(64, 10.0)
            assert 1 <= len(chunk) <= 64
            frames = decoder.feed(chunk)
        assert frames[0].type == protocol.REPLY_ECHO and frames[0].payload == b"abc"
        # A frame with a bad magic makes the device stop: the next read sees EOF.
        transport.write(b"XX" + bytes(10), 10.0)
        with pytest.raises(server.TransportClosedError):
            while True:
                transport.read(4096, 10.0)


@pytest.mark.parametrize("given, words", [
    (str(1 << 60), "a workspace of 1,152,921,504,606,846,976 bytes (-o workspace_size_bytes) does not fit this machine's memory"),
    ("-100", "option workspace_size_bytes=-100 is negative"),
])
def test_a_workspace_that_cannot_be_is_refused_at_create_project(template, kernels_mlf, tmp_path, given, words):
    """Before: 1 << 60 was left to the C compiler (\"size of array is too large\")."""
    from microtvm_registry.project_api import server

    with pytest.raises(server.ServerError) as info:
        template.generate_project(kernels_mlf, tmp_path / "p", {"workspace_size_bytes": given})
    assert words in info.value.message and "\n" not in info.value.message.strip()
    assert not (tmp_path / "p").exists()
