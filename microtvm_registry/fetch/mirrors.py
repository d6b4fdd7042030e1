"""Git mirrors without editing git's config: ``--git-mirror URL_PREFIX=LOCAL_URL``.

Like ``uv --index-url`` for indexes: a user (or CI) points the curated index's upstream URLs at a
local mirror for one command, from the environment, or in our config file, and our git calls
apply each pair as ``url.<LOCAL_URL>.insteadOf = <URL_PREFIX>`` through git's
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` environment (git 2.31+). Sources
keep their real URLs everywhere else (the lockfile, the cache's source map, trust), so a mirror
changes where bytes come from, never what is pinned: the content id still has to match.

Where pairs come from, all applied, first match by git's longest-prefix rule:
- ``--git-mirror PREFIX=LOCAL`` (repeatable), which the CLI passes on in the variable below;
- ``MICROTVM_REGISTRY_GIT_MIRROR="PREFIX=LOCAL PREFIX2=LOCAL2"`` (whitespace separated);
- ``config.toml`` in the config folder: ``[git_mirror]`` with ``"PREFIX" = "LOCAL"`` lines.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, List, Tuple

from ..errors import MicrotvmError

MIRROR_ENV = "MICROTVM_REGISTRY_GIT_MIRROR"
CONFIG_FILE = "config.toml"


def parse_mirrors(pairs: Iterable[str], where: str) -> List[Tuple[str, str]]:
    """``["https://github.com/=file:///srv/git/"]`` -> ``[(prefix, local)]``; a malformed pair is
    a one-line error naming ``where`` it came from."""
    result = []
    for pair in pairs:
        prefix, sep, local = pair.partition("=")
        if not sep or not prefix.strip() or not local.strip():
            raise MicrotvmError(
                f"{where}: {pair!r} is not URL_PREFIX=LOCAL_URL (e.g. https://github.com/apache/tvm=file:///srv/mirrors/tvm.git)"
            )
        result.append((prefix.strip(), local.strip()))
    return result


def _config_pairs() -> List[Tuple[str, str]]:
    from ..dirs import config_dir
    from ..files import read_toml_config

    path = config_dir() / CONFIG_FILE
    doc = read_toml_config(path, MicrotvmError, "the configuration")
    table = (doc or {}).get("git_mirror", {})
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise MicrotvmError(f"{path}: git_mirror must be a table of \"URL_PREFIX\" = \"LOCAL_URL\" strings")
    return parse_mirrors((f"{k}={v}" for k, v in table.items()), str(path))


def mirror_pairs() -> List[Tuple[str, str]]:
    """Every mirror pair in force: the command line's and the environment's, then the config's."""
    pairs = parse_mirrors(os.environ.get(MIRROR_ENV, "").split(), MIRROR_ENV)
    return pairs + _config_pairs()


def mirror_git_env() -> Dict[str, str]:
    """The environment that makes git apply the mirrors, on top of the user's own git config."""
    pairs = mirror_pairs()
    if not pairs:
        return {}
    base = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)
    env = {k: v for k, v in os.environ.items() if k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))}
    for n, (prefix, local) in enumerate(pairs, start=base):
        env[f"GIT_CONFIG_KEY_{n}"] = f"url.{local}.insteadOf"
        env[f"GIT_CONFIG_VALUE_{n}"] = prefix
    env["GIT_CONFIG_COUNT"] = str(base + len(pairs))
    return env
