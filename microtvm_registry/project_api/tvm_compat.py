"""Compatibility with TVM's own template servers, which import ``tvm.micro.project_api.server``.

Every CRT host template and the v0.8-v0.11 Zephyr/Arduino templates do
``from tvm.micro.project_api import server``. That cannot work with no TVM installed, nor with
today's apache-tvm (microTVM was removed in v0.19). The client therefore starts each server with
the folder ``_tvm_shim/`` first on its PYTHONPATH; its ``sitecustomize.py`` adds a last-resort
import finder that supplies our own stdlib-only ``server.py`` under that name. Because the finder is
*appended* to ``sys.meta_path``, a real TVM that still has microTVM (v0.8-v0.18) is found first and
wins; a real ``tvm`` without ``tvm.micro`` is used as is and only the missing sub-packages are
supplied. See ``_tvm_shim/sitecustomize.py`` for the details and its limits (a server started with
``python -I`` or ``-S`` ignores PYTHONPATH/site and so gets no shim).

``TVM_VERSION`` is what the client sends as ``tvm_version`` in ``server_info_query``: "0.18.0", the
last TVM release that shipped microTVM, because that is the Project API this package speaks (the
protocol never changed from v0.8.0 to v0.18.0, and no in-tree server checks the value). We do not
import tvm to read its version: that is slow, and today's tvm has no Project API at all.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional

#: The ``tvm_version`` sent in ``server_info_query`` (see the module docstring for why).
TVM_VERSION = "0.18.0"

_SHIM_DIR = Path(__file__).resolve().parent / "_tvm_shim"


def shim_dir() -> Optional[Path]:
    """The folder to put on a server's PYTHONPATH, or None if this install lacks it."""
    return _SHIM_DIR if (_SHIM_DIR / "sitecustomize.py").is_file() else None


def server_environment(base: Optional[Mapping[str, str]] = None, shim: bool = True) -> Dict[str, str]:
    """The environment for a server process: ``base`` (default os.environ) with the shim first on
    PYTHONPATH, and PYTHONDONTWRITEBYTECODE set: a template's server often runs from a read-only,
    content-verified cache entry, where a ``__pycache__`` written beside it would make
    ``microtvm cache verify`` report tampering. Everything else is inherited unchanged, as TVM's
    client does."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    folder = shim_dir() if shim else None
    if folder is not None:
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(folder) + (os.pathsep + old if old else "")
    return env
