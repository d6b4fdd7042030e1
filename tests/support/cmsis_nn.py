"""CMSIS-NN for tests: the curated index's facts about arm/cmsis-nn, read from index/ itself, and
the local mirror (../shared/mirrors/CMSIS-NN.git) that stands in for GitHub as a user's
--git-mirror would."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
MIRROR = REPO.parent / "shared" / "mirrors" / "CMSIS-NN.git"
UPSTREAM = "https://github.com/ARM-software/CMSIS-NN.git"
MIRROR_SETTING = f"{UPSTREAM}=file://{MIRROR}"

_INDEX = tomllib.loads((REPO / "index" / "kernel-libraries.toml").read_text())
(_LIBRARY,) = [lib for lib in _INDEX["library"] if lib["name"] == "arm/cmsis-nn"]
_TREES: Dict[str, str] = {v["version"]: v["tree"] for v in _LIBRARY["version"]}

#: Every version the index names, newest first.
VERSIONS: List[str] = list(_TREES)
#: The version compile uses without a lock pin: the commit TFLite Micro pins (4ab83cc3).
DEFAULT_VERSION = next(v["version"] for v in _LIBRARY["version"] if v["commit"].startswith("4ab83cc3"))


def content_id(version: str) -> str:
    return _TREES[version]
