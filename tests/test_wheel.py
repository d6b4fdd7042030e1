"""The wheel works for a pip user with no checkout: templates and indexes come from site-packages.

Builds the wheel from a copy of the checkout (the repository is never written to), installs it
into a fresh venv, and runs the CLI and the Python API from a folder outside the checkout.
The venv reuses this interpreter's already-installed dependencies through a .pth line (so no
download is needed), but microtvm_registry itself can only come from the wheel: this
environment's editable-install hook lives in a .pth file that is not processed from there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", ".venv", "__pycache__", ".pytest_cache", "*.pyc")


def _run(args, **kw):
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the checkout and installed in a fresh venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    host = src / "templates" / "host"
    if not (host / "microtvm_api_server.py").is_file():  # placeholder only in the temp copy
        host.mkdir(parents=True, exist_ok=True)
        (host / "microtvm_api_server.py").write_text("# placeholder\n")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src])
    (wheel,) = dist.glob("microtvm_registry-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    vpython = venv / "bin" / "python"
    purelib = Path(_run([vpython, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", vpython, "install", "--no-deps", "--no-index", "-q", wheel])

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {"venv": venv, "vpython": vpython, "purelib": purelib, "outside": outside, "env": env, "host": host}


@pytest.mark.slow
def test_wheel_install_outside_checkout(installed):
    vpython, purelib, outside, env, host, venv = (installed[k] for k in ("vpython", "purelib", "outside", "env", "host", "venv"))
    proc = _run([vpython, "-c", "import microtvm_registry; print(microtvm_registry.get_packaged_resource('templates/host'))"], cwd=outside, env=env)
    path = Path(proc.stdout.strip())
    assert purelib.resolve() in path.resolve().parents, path
    assert (path / "microtvm_api_server.py").is_file()
    expected = sorted(p.relative_to(host).as_posix() for p in host.rglob("*") if p.is_file())
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) == expected

    microtvm = venv / "bin" / "microtvm"
    listing = _run([microtvm, "list"], cwd=outside, env=env).stdout
    for name in ("host", "apache-tvm/zephyr", "apache-tvm/arduino", "apache-tvm/crt"):
        assert name in listing
    proc = _run([microtvm, "path", "host"], cwd=outside, env=env)
    assert Path(proc.stdout.strip()) == path
    proc = _run([vpython, "-c", "import microtvm_registry, sys; print(microtvm_registry.__file__); print(microtvm_registry.get_packaged_resource('index/apache-tvm.toml'))"], cwd=outside, env=env)
    module_file, index_file = (Path(line) for line in proc.stdout.split())
    assert purelib.resolve() in module_file.resolve().parents
    assert purelib.resolve() in index_file.resolve().parents and index_file.read_text().startswith("# Curated index")
    # the board database and the cortex-m template (with the runtime it shares) are wheel data too
    boards = _run([microtvm, "boards", "--template", "cortex-m", "--emulated"], cwd=outside, env=env).stdout
    assert "mps2-an386" in boards and "mps3-an547" in boards
    proc = _run([vpython, "-c", "import microtvm_registry as m; print(m.get_packaged_resource('boards/boards.json')); "
                 "print(m.get_packaged_resource('templates/common/runtime/mtvm_device.c'))"], cwd=outside, env=env)
    for line in proc.stdout.split():
        assert purelib.resolve() in Path(line).resolve().parents


@pytest.mark.slow
def test_an_edited_packaged_template_is_no_longer_trusted(installed):
    """The wheel records each packaged template's content id when it is built; a copy edited in
    site-packages is then reported as modified and its server is not started."""
    import json

    microtvm, outside, env = installed["venv"] / "bin" / "microtvm", installed["outside"], installed["env"]
    assert json.loads(_run([microtvm, "show", "host", "--json"], cwd=outside, env=env).stdout)["trust"] == "packaged"
    assert (installed["purelib"] / "microtvm_registry" / "data" / "packaged-ids.json").is_file()
    folder = Path(_run([microtvm, "path", "host"], cwd=outside, env=env).stdout.strip())
    readme = folder / "README.md"
    original = readme.read_bytes()
    mode = readme.stat().st_mode
    try:
        os.chmod(readme, mode | 0o200)
        readme.write_bytes(original + b"edited\n")
        data = json.loads(_run([microtvm, "show", "host", "--json"], cwd=outside, env=env).stdout)
        assert data["trust"] == "modified"
        proc = subprocess.run([str(microtvm), "info", "host"], capture_output=True, text=True, cwd=outside, env=env, timeout=120)
        assert proc.returncode == 1 and "changed since microtvm-registry was installed" in proc.stderr
    finally:
        readme.write_bytes(original)
        os.chmod(readme, mode)
    assert _run([microtvm, "info", "host", "--json"], cwd=outside, env=env).returncode == 0


@pytest.mark.slow
@pytest.mark.needs_tvm
def test_demo_runs_from_the_installed_wheel(installed):
    proc = _run([installed["venv"] / "bin" / "microtvm", "demo"], cwd=installed["outside"], env=installed["env"])
    assert proc.stdout.count(": OK") == 3 and "vs onnxruntime" in proc.stdout, proc.stdout
    assert "int8 .tflite model on the host device vs TensorFlow Lite Micro: identical: OK" in proc.stdout
