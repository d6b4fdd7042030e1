"""get_packaged_resource: real folders in a checkout/wheel, extraction when imported from a zip."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import microtvm_registry
from microtvm_registry import get_packaged_resource
from microtvm_registry.contentid import tree_id
from microtvm_registry.errors import TemplateNotFoundError

PACKAGE_DIR = Path(microtvm_registry.__file__).resolve().parent


def test_packaged_host_template_and_index_are_real_folders():
    host = get_packaged_resource("templates/host")
    assert host.is_dir() and (host / "microtvm_api_server.py").is_file()
    index = get_packaged_resource("index/apache-tvm.toml")
    assert index.is_file() and "schema = 1" in index.read_text()
    assert get_packaged_resource("index").is_dir()


@pytest.mark.parametrize("bad", ["/etc/passwd", "templates/../microtvm_registry", "../templates/host", "templates/host/../../x", "", "secrets/x", "templates\\host"])
def test_refuses_absolute_dotdot_and_other_roots(bad):
    with pytest.raises(TemplateNotFoundError) as info:
        get_packaged_resource(bad)
    assert "relative path under templates/, index/ or boards/" in str(info.value)


def test_unknown_name_lists_what_exists():
    with pytest.raises(TemplateNotFoundError) as info:
        get_packaged_resource("templates/hots")
    assert "'templates/hots'" in str(info.value) and "host" in str(info.value)
    with pytest.raises(TemplateNotFoundError, match="apache-tvm.toml"):
        get_packaged_resource("index/nope.toml")


def _build_zip(target: Path) -> Path:
    """The package as a zip, laid out as the wheel lays it out (templates/ and index/ inside)."""
    root = PACKAGE_DIR.parent
    with zipfile.ZipFile(target, "w") as zf:
        for base, arc in [(PACKAGE_DIR, "microtvm_registry"), (root / "templates", "microtvm_registry/data/templates"), (root / "index", "microtvm_registry/data/index")]:
            for path in sorted(base.rglob("*")):
                if "__pycache__" in path.parts or path.is_dir():
                    continue
                if base == PACKAGE_DIR and path.relative_to(base).parts[0] == "data":
                    continue
                info = zipfile.ZipInfo(f"{arc}/{path.relative_to(base).as_posix()}", (2024, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0xFFFF) << 16
                zf.writestr(info, path.read_bytes())
    return target


def _run_zipped(zip_path: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(zip_path)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=str(zip_path.parent))


def test_zipped_package_extracts_once_into_the_cache(tmp_path):
    zip_path = _build_zip(tmp_path / "microtvm_registry.zip")
    code = (
        "import microtvm_registry, sys\n"
        "assert '.zip' in microtvm_registry.__file__, microtvm_registry.__file__\n"
        "print(microtvm_registry.get_packaged_resource('templates/host'))\n"
        "print(microtvm_registry.get_packaged_resource('templates/host'))\n"
    )
    proc = _run_zipped(zip_path, code)
    assert proc.returncode == 0, proc.stderr
    first, second = [Path(line) for line in proc.stdout.split()]
    assert first == second
    cache = Path(os.environ["MICROTVM_REGISTRY_CACHE"])
    assert cache in first.parents and first.parent.parent.name.startswith(microtvm_registry.__version__ + "-")
    source = PACKAGE_DIR.parent / "templates" / "host"
    assert sorted(p.relative_to(first).as_posix() for p in first.rglob("*")) == sorted(
        p.relative_to(source).as_posix() for p in source.rglob("*") if "__pycache__" not in p.parts
    )
    # Same content id as the folder it was packed from (file modes survive).
    if not any(p.name == "__pycache__" for p in source.rglob("*")):
        assert tree_id(first) == tree_id(source)
    # A second process reuses the extraction (no new folder), and nothing half-written remains.
    proc = _run_zipped(zip_path, code)
    assert Path(proc.stdout.split()[0]) == first
    assert sorted(p.name for p in (cache / "packaged").iterdir()) == [first.parent.parent.name]


def test_zipped_package_unknown_and_unsafe_names(tmp_path):
    zip_path = _build_zip(tmp_path / "pkg.zip")
    code = (
        "import microtvm_registry\n"
        "for name in ['templates/nope', 'templates/../x']:\n"
        "    try:\n"
        "        microtvm_registry.get_packaged_resource(name)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, e)\n"
    )
    proc = _run_zipped(zip_path, code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TemplateNotFoundError") and "host" in lines[0]
    assert lines[1].startswith("TemplateNotFoundError") and "'..'" in lines[1]


def test_zipped_package_lists_and_paths_through_the_cli(tmp_path):
    zip_path = _build_zip(tmp_path / "pkg.zip")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(zip_path)
    proc = subprocess.run(
        [sys.executable, "-m", "microtvm_registry", "path", "host"],
        capture_output=True, text=True, env=env, timeout=60, cwd=str(tmp_path),  # not the checkout
    )
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert (path / "microtvm_api_server.py").is_file() and "packaged" in path.parts
