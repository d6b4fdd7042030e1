"""TVM-style templates (``from tvm.micro.project_api import server``) under our client.

Three worlds: no tvm at all; today's apache-tvm (no tvm.micro); a "real" TVM that has microTVM,
which must win over the shim.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_servers import HERE, make_server_dir
from microtvm_registry.project_api import client as C
from microtvm_registry.project_api import server as our_server
from microtvm_registry.project_api import tvm_compat

TVM_STYLE = HERE / "tvm_style_server.py"
OUR_SERVER = Path(our_server.__file__).resolve()
SHIM = tvm_compat.shim_dir()


def python_without_tvm():
    """An interpreter (3.9+) that cannot import tvm: the venv's base Python or the system's."""
    candidates = [Path(sys.base_prefix) / "bin" / "python3", Path("/usr/bin/python3")]
    for exe in candidates:
        if not exe.is_file():
            continue
        probe = subprocess.run(
            [str(exe), "-c", "import sys; assert sys.version_info >= (3, 9)\ntry:\n import tvm\nexcept ImportError:\n sys.exit(7)"],
            capture_output=True,
        )
        if probe.returncode == 7:
            return exe
    return None


def query(folder: Path, **env_overrides) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(env_overrides)
    with C.instantiate_from_dir(folder, env=env, timeout=60) as client:
        info = client.server_info_query()
    return json.loads(info["model_library_format_path"])


def test_shim_folder_holds_only_sitecustomize():
    assert SHIM is not None
    assert sorted(p.name for p in SHIM.iterdir() if p.name != "__pycache__") == ["sitecustomize.py"]
    env = tvm_compat.server_environment({"PYTHONPATH": "/x"})
    assert env["PYTHONPATH"] == f"{SHIM}{os.pathsep}/x"
    assert "PYTHONPATH" not in tvm_compat.server_environment({}, shim=False)


def test_no_tvm_installed(tmp_path):
    exe = python_without_tvm()
    if exe is None:
        pytest.skip("no Python without tvm on this machine")
    folder = make_server_dir(tmp_path / "tpl", TVM_STYLE)
    launcher = folder / C.SERVER_LAUNCHER
    launcher.write_text(f'#!/bin/sh\nexec "{exe}" "$@"\n')
    launcher.chmod(0o755)
    chain = tmp_path / "chain"
    chain.mkdir()
    (chain / "sitecustomize.py").write_text("import os\nos.environ['CHAINED_SITECUSTOMIZE'] = 'yes'\n")

    report = query(folder, PYTHONPATH=str(chain))
    assert Path(report["server_file"]).resolve() == OUR_SERVER
    assert report["tvm_file"] is None  # the shim's empty package
    assert report["executable"] == str(exe)
    assert report["tvm_version_sent"] == tvm_compat.TVM_VERSION
    # The user's own sitecustomize still ran, and the shim is gone from what children inherit.
    assert report["chained"] == "yes"
    assert report["pythonpath"] == str(chain)
    assert str(SHIM) not in report["sys_path"]

    # Without the shim the same template cannot start: the shim is what makes it work.
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    with C.instantiate_from_dir(folder, env=env, tvm_shim=False, timeout=60) as client:
        with pytest.raises(C.ServerDiedError, match="exited with status 1"):
            client.server_info_query()


@pytest.mark.needs_tvm
def test_apache_tvm_without_micro(tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import tvm, sys; sys.exit(0 if not hasattr(tvm, 'micro') else 3)"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("needs an installed tvm without tvm.micro (apache-tvm >= 0.19)")
    folder = make_server_dir(tmp_path / "tpl", TVM_STYLE)
    report = query(folder)
    assert Path(report["server_file"]).resolve() == OUR_SERVER
    # The installed tvm has no micro/project_api/server.py, so it is not imported at all (that
    # takes seconds, for its native library): the shim's empty package stands in, in the server.
    assert report["tvm_file"] is None
    assert report["pythonpath"] is None


def test_real_tvm_with_micro_wins(tmp_path):
    fake = tmp_path / "site"
    pkg = fake / "tvm" / "micro" / "project_api"
    pkg.mkdir(parents=True)
    for init in (fake / "tvm", fake / "tvm" / "micro", pkg):
        (init / "__init__.py").write_text("")
    (pkg / "server.py").write_text(
        "from microtvm_registry.project_api.server import *\nFAKE_REAL = True\n"
    )
    folder = make_server_dir(tmp_path / "tpl", TVM_STYLE)
    report = query(folder, PYTHONPATH=str(fake))
    assert report["fake_real"] is True
    assert Path(report["server_file"]) == pkg / "server.py"
    assert Path(report["tvm_file"]) == fake / "tvm" / "__init__.py"
    assert report["pythonpath"] == str(fake)
