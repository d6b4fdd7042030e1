"""Every test runs against its own cache, config and git identity, never the user's; the kernels
model (exported once with apache-tvm) is shared by the host and cortex-m template tests."""
from __future__ import annotations

from pathlib import Path

import pytest

#: Test modules that need apache-tvm at import time (they cannot even be collected without it).
TVM_MODULES = {"test_host_project.py"}


def pytest_addoption(parser):
    parser.addoption(
        "--without-tvm",
        action="store_true",
        default=False,
        help="leave out the tests that need apache-tvm (the short oldest-Python run, without the tvm extra)",
    )


def pytest_ignore_collect(collection_path, config):
    if config.getoption("--without-tvm") and collection_path.name in TVM_MODULES:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    """Under --without-tvm, deselect (not skip) what needs apache-tvm: nothing is reported as
    skipped for a missing dependency, and `make test` runs all of it with apache-tvm present."""
    if not config.getoption("--without-tvm"):
        return
    keep = [item for item in items if item.get_closest_marker("needs_tvm") is None]
    dropped = [item for item in items if item.get_closest_marker("needs_tvm") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MICROTVM_REGISTRY_CACHE", str(home / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg-config"))
    monkeypatch.delenv("MICROTVM_REGISTRY_OFFLINE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)  # notes of running boards go into the cache above
    # git: a private global config, a fixed identity, no prompts.
    gitconfig = home / "gitconfig"
    gitconfig.write_text("[user]\n\tname = microtvm tests\n\temail = tests@localhost\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    yield home


def kernels_module(tvm):
    """float32 dense, an int8 kernel, a kernel that needs workspace, and a no-op-sized kernel."""
    from tvm import te

    x = te.placeholder((4, 16), name="x", dtype="float32")
    w = te.placeholder((8, 16), name="w", dtype="float32")
    k = te.reduce_axis((0, 16), name="k")
    y = te.compute((4, 8), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), name="y")

    a8 = te.placeholder((6, 10), name="a8", dtype="int8")
    b8 = te.placeholder((6, 10), name="b8", dtype="int8")
    s8 = te.compute((6, 10), lambda i, j: a8[i, j] + b8[i, j], name="s8")  # wraps like C int8
    kk = te.reduce_axis((0, 10), name="kk")
    r32 = te.compute((6,), lambda i: te.sum(a8[i, kk].astype("int32"), axis=kk), name="r32")

    n = 512
    src = te.placeholder((n,), name="src", dtype="float32")
    tmp = te.compute((n,), lambda i: src[i] * 2, name="tmp")  # an intermediate: workspace
    dst = te.compute((n,), lambda i: tmp[n - 1 - i] + 1, name="dst")

    one = te.placeholder((1,), name="one", dtype="float32")
    one_out = te.compute((1,), lambda i: one[i], name="one_out")
    return {
        "dense": te.create_prim_func([x, w, y]),
        "add_i8": te.create_prim_func([a8, b8, s8]),
        "rowsum_i8": te.create_prim_func([a8, r32]),
        "reverse_scale": te.create_prim_func([src, dst]),
        "noop": te.create_prim_func([one, one_out]),
    }


@pytest.fixture(scope="session")
def kernels_mlf(tmp_path_factory) -> Path:
    tvm = pytest.importorskip("tvm")
    from microtvm_registry.compile.mlf import export_model_library_format

    path = tmp_path_factory.mktemp("mlf") / "kernels.tar"
    return export_model_library_format(tvm.IRModule(kernels_module(tvm)), path, model_name="kernels")


@pytest.fixture(scope="session")
def cmsis_nn_cache(tmp_path_factory) -> Path:
    """One cache for every test that compiles with CMSIS-NN: fetched from the mirror once, the
    host program that sizes its buffers built once."""
    from support.cmsis_nn import MIRROR

    if not MIRROR.is_dir():
        pytest.skip(f"{MIRROR} is absent (the local CMSIS-NN mirror lives in ../shared/mirrors)")
    return tmp_path_factory.mktemp("cmsis-nn-cache")


@pytest.fixture
def cmsis_nn(isolated_environment, cmsis_nn_cache, monkeypatch) -> Path:
    """A cache that has (or fetches) arm/cmsis-nn from the local mirror, as --git-mirror would."""
    from support.cmsis_nn import MIRROR_SETTING

    monkeypatch.setenv("MICROTVM_REGISTRY_CACHE", str(cmsis_nn_cache))
    monkeypatch.setenv("MICROTVM_REGISTRY_GIT_MIRROR", MIRROR_SETTING)
    return cmsis_nn_cache
