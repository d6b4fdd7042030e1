"""Where the per-user cache and config live, and whether we may touch the network.

Kept tiny and import-light: every CLI command reads these, including the warm paths.
"""
from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "microtvm-registry"
CACHE_ENV = "MICROTVM_REGISTRY_CACHE"
OFFLINE_ENV = "MICROTVM_REGISTRY_OFFLINE"

_TRUE = {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """The cache root: $MICROTVM_REGISTRY_CACHE, else platformdirs' user cache dir (XDG aware)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """The config folder (extra indexes, trusted content ids): platformdirs, XDG aware."""
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def is_offline(flag: bool = False) -> bool:
    """True when --offline was given or MICROTVM_REGISTRY_OFFLINE is set to a true value."""
    return flag or os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def runtime_dir() -> Path:
    """Where running things leave notes for other commands (which emulated boards run, on which
    pty): $XDG_RUNTIME_DIR/microtvm-registry where the session has one (cleared at logout, as
    such notes should be), else a folder in the cache."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        return Path(base) / APP_NAME
    return cache_dir() / "run"
