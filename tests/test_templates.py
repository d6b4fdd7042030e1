"""get_template / get_template_for_run / get_microtvm_template_projects, offline, and `path`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from microtvm_registry import get_microtvm_template_projects, get_packaged_resource, get_template
from microtvm_registry.registry import extra_indexes
from microtvm_registry.cache.store import Cache
from microtvm_registry.errors import OfflineError, VerificationError
from microtvm_registry.registry.lockfile import LockEntry, Lockfile
from registry_support import (
    add_insteadof,
    git_version_table,
    make_template_repo,
    run_cli,
    template_table,
    write_index,
)


@pytest.fixture
def local(tmp_path):
    repo = tmp_path / "repo"
    versions = make_template_repo(repo, ["1.0.0", "2.0.0"])
    index_file = write_index(tmp_path / "l.toml", [template_table("local/tmpl", [git_version_table(str(repo), v, extra=True) for v in versions.values()])])
    extra_indexes.add_extra_index("local", str(index_file))
    return {"repo": repo, "versions": versions, "index": index_file}


def test_get_template_host_is_the_packaged_folder():
    assert get_template("host") == get_packaged_resource("templates/host")
    assert get_template("host@" + __import__("microtvm_registry").__version__) == get_packaged_resource("templates/host")


def test_get_template_fetches_newest_with_extra_file(local):
    path = get_template("tmpl")
    assert (path / "server.py").read_text() == "# server library 2.0.0\n"
    assert "2.0.0" in (path / "microtvm_api_server.py").read_text()
    assert os.access(path / "launch.sh", os.X_OK)
    assert not (path / "README.md").exists()  # only the folder, not the repository
    assert Cache().entry_path(path.name) == path
    assert get_template("local/tmpl@1") != path


def test_offline_misses_say_what_is_missing_and_hits_work(local, monkeypatch):
    with pytest.raises(OfflineError) as info:
        get_template("tmpl@1.0.0", offline=True)
    assert "local/tmpl@1.0.0" in str(info.value) and "microtvm fetch local/tmpl@1.0.0" in str(info.value)
    proc = run_cli("--offline", "path", "tmpl@1.0.0")
    assert proc.returncode == 1 and "not in the cache" in proc.stderr and "offline" in proc.stderr
    proc = run_cli("path", "tmpl@1.0.0", env={"MICROTVM_REGISTRY_OFFLINE": "1"})
    assert proc.returncode == 1 and "microtvm fetch local/tmpl@1.0.0" in proc.stderr
    path = get_template("tmpl@1.0.0")
    assert get_template("tmpl@1.0.0", offline=True) == path
    # The env var alone makes the API offline too; the repository vanishing does not matter now.
    import shutil

    shutil.rmtree(local["repo"])
    monkeypatch.setenv("MICROTVM_REGISTRY_OFFLINE", "1")
    assert get_template("tmpl@1.0.0") == path
    with pytest.raises(OfflineError):
        get_template("tmpl@2.0.0")


def test_wrong_tree_in_index_is_refused_and_cache_stays_clean(tmp_path, local):
    v = local["versions"]["1.0.0"]
    bad = git_version_table(str(local["repo"]), v, extra=False)
    bad["tree"] = local["versions"]["2.0.0"].tree
    write_index(tmp_path / "bad.toml", [template_table("bad/tmpl", [bad])])
    extra_indexes.add_extra_index("bad", str(tmp_path / "bad.toml"))
    with pytest.raises(VerificationError, match="as pinned"):
        get_template("bad/tmpl")
    assert Cache().list_entries() == []
    cache = Path(os.environ["MICROTVM_REGISTRY_CACHE"])
    assert not any((cache / "tmp").iterdir()) if (cache / "tmp").exists() else True


def test_get_microtvm_template_projects_platforms(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="one of crt, zephyr, arduino"):
        get_microtvm_template_projects("host")
    with pytest.raises(ValueError):
        get_microtvm_template_projects("Zephyr")
    monkeypatch.setenv("MICROTVM_REGISTRY_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OfflineError) as info:
        get_microtvm_template_projects("zephyr")
    assert "apache-tvm/zephyr@0.18.0" in str(info.value)  # the newest curated version


def test_get_microtvm_template_projects_honours_the_lockfile(tmp_path, monkeypatch):
    """A project pins apache-tvm/crt to a build of it on a mirror (insteadOf)."""
    repo = tmp_path / "tvm-mirror"
    versions = make_template_repo(repo, ["0.10.0"], subdir="src/runtime/crt/host")
    add_insteadof("https://github.com/apache/tvm.git", repo)
    from microtvm_registry.registry.sources import GitSource

    v = versions["0.10.0"]
    pinned = GitSource("https://github.com/apache/tvm.git", v.commit, "src/runtime/crt/host", v.tree, ref="v0.10.0")
    lock = Lockfile(tmp_path / "microtvm.lock")
    lock.entries["apache-tvm/crt"] = LockEntry("apache-tvm/crt", "0.10.0", pinned, v.tree, "apache-tvm")
    lock.save()
    monkeypatch.chdir(tmp_path)
    path = get_microtvm_template_projects("crt")
    assert path == Cache().entry_path(v.tree)
    assert "0.10.0" in (path / "microtvm_api_server.py").read_text()


def test_cd_into_path_output(tmp_path):
    """`cd "$(microtvm path X)"` works, also when the cache folder has a space in its name."""
    repo = tmp_path / "repo"
    versions = make_template_repo(repo, ["1.0.0"])
    index_file = write_index(tmp_path / "l.toml", [template_table("local/tmpl", [git_version_table(str(repo), versions["1.0.0"])])])
    env = dict(os.environ)
    env["MICROTVM_REGISTRY_CACHE"] = str(tmp_path / "my cache")
    import sys

    env["MICROTVM"] = f"{sys.executable} -m microtvm_registry"
    subprocess.run([sys.executable, "-m", "microtvm_registry", "index", "add", "local", str(index_file)], env=env, check=True, capture_output=True)
    for spec, expected in [("host", get_packaged_resource("templates/host")), ("tmpl", tmp_path / "my cache" / "templates" / versions["1.0.0"].tree)]:
        proc = subprocess.run(
            ["bash", "-c", f'cd "$($MICROTVM path {spec})" && pwd && ls'],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert Path(lines[0]) == expected
        assert "microtvm_api_server.py" in lines[1:]
