"""Every test runs against its own cache, config and git identity, never the user's."""
from __future__ import annotations

import pytest


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
