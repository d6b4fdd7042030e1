"""files.py: read-modify-writes of our config files hold a lock, so concurrent commands lose nothing."""
from __future__ import annotations

import os
import stat
import subprocess
import tempfile

import pytest

from microtvm_registry import dirs, files
from microtvm_registry.cache.trust import load_trusted
from microtvm_registry.errors import MicrotvmError
from microtvm_registry.registry import extra_indexes
from registry_support import cli_command, git_version_table, make_template_repo, template_table, write_index

MIRRORED = "https://github.com/acme-test/concurrent.git"


def _all_succeed(commands, cwd):
    procs = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def test_concurrent_index_add_loses_no_index(tmp_path):
    rv = make_template_repo(tmp_path / "repo", ["1.0.0"])["1.0.0"]
    files = [write_index(tmp_path / f"i{n}.toml", [template_table(f"v{n}/t", [git_version_table(MIRRORED, rv)])]) for n in range(4)]
    for _round in range(3):
        for e in extra_indexes.list_extra_indexes():
            extra_indexes.remove_extra_index(e.name)
        _all_succeed([cli_command("index", "add", f"i{n}", str(f)) for n, f in enumerate(files)], tmp_path)
        assert sorted(e.name for e in extra_indexes.list_extra_indexes()) == [f"i{n}" for n in range(4)]


def test_concurrent_trust_loses_no_record(tmp_path):
    from registry_support import add_insteadof

    repo = tmp_path / "repo"
    versions = make_template_repo(repo, ["1.0.0", "1.1.0", "1.2.0", "1.3.0"])
    add_insteadof(MIRRORED, repo)
    index = write_index(tmp_path / "acme.toml", [template_table("acme/t", [git_version_table(MIRRORED, v) for v in versions.values()])])
    extra_indexes.add_extra_index("acme", str(index))
    _all_succeed([cli_command("fetch", f"acme/t@{v}") for v in versions], tmp_path)  # the race is on the trust file
    _all_succeed([cli_command("trust", f"acme/t@{v}") for v in versions], tmp_path)
    assert sorted(r.content_id for r in load_trusted()) == sorted(v.tree for v in versions.values())


# ---- the lock folder's fallback in the shared temp folder ---------------------------------------

@pytest.fixture
def temp_fallback(tmp_path, monkeypatch):
    """No usable runtime folder, and the system temp folder moved into the test's own."""
    def unusable():
        raise OSError("no runtime folder here")

    monkeypatch.setattr(dirs, "runtime_dir", unusable)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"microtvm-registry-{os.getuid()}"


def test_the_temp_fallback_is_made_private_and_used(temp_fallback, tmp_path):
    with files.update_lock(tmp_path / "x.toml"):
        pass
    assert stat.S_IMODE(os.lstat(temp_fallback).st_mode) == 0o700
    assert list((temp_fallback / "locks").iterdir())


@pytest.mark.parametrize("planted, words", [
    ("open", "may be written by others (mode 777)"),
    ("symlink", "is a symlink"),
    ("file", "is not a folder"),
    ("other-user", "belongs to another user (uid 4242)"),
])
def test_a_temp_fallback_someone_else_made_first_is_refused(temp_fallback, tmp_path, planted, words):
    """Before: used as found, so another user who made it first could hold or read our locks."""
    if planted == "open":
        temp_fallback.mkdir()
        os.chmod(temp_fallback, 0o777)
    elif planted == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        temp_fallback.symlink_to(tmp_path / "elsewhere")
    elif planted == "file":
        temp_fallback.write_text("")
    else:
        if os.getuid() != 0:
            pytest.skip("making a folder another user owns needs root (chown)")
        temp_fallback.mkdir(mode=0o700)
        os.chown(temp_fallback, 4242, 4242)
    with pytest.raises(MicrotvmError) as err:
        with files.update_lock(tmp_path / "x.toml"):
            pass
    message = str(err.value)
    assert f"{temp_fallback} {words}" in message and "set XDG_RUNTIME_DIR" in message and "\n" not in message
    assert not (tmp_path / "elsewhere" / "locks").exists()
