"""Every test runs against its own cache, config and git identity, never the user's."""
from __future__ import annotations

import pytest

#: Test modules that need apache-tvm at import time (they cannot even be collected without it).
TVM_MODULES = {"test_host_project.py"}


def pytest_addoption(parser):
    parser.addoption(
        "--without-tvm",
        action="store_true",
        default=False,
        help="leave out the tests that need apache-tvm, for a Python it has no wheels for (3.9)",
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
    # git: a private global config, a fixed identity, no prompts.
    gitconfig = home / "gitconfig"
    gitconfig.write_text("[user]\n\tname = microtvm tests\n\temail = tests@localhost\n[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    yield home
