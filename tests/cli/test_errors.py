"""Bad input anywhere is one line naming what is wrong, never "unexpected X" or a traceback."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from registry_support import git_version_table, make_template_repo, run_cli, template_table, write_index

HUGE = "1" * 5000  # a 5000-digit version: int() refuses it with a ValueError packaging does not catch


def one_line(proc, *needles):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microtvm: error: "), proc.stderr
    assert "unexpected" not in lines[0] and "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def repo(tmp_path):
    versions = make_template_repo(tmp_path / "repo", ["1.0.0"])
    return tmp_path / "repo", versions["1.0.0"]


def test_deeply_nested_toml(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    one_line(run_cli("index", "add", "deep", str(deep)), "nested too deeply")
    project = tmp_path / "project"
    project.mkdir()
    (project / "microtvm.lock").write_text(deep.read_text())
    one_line(run_cli("sync", cwd=project), "microtvm.lock", "nested too deeply")


def test_huge_versions_in_a_spec_an_index_and_a_lockfile(tmp_path, repo):
    one_line(run_cli("show", f"host@{HUGE}"), "the version part is 5000 characters")
    url, v = repo
    table = git_version_table(str(url), v)
    table["version"] = HUGE
    index = write_index(tmp_path / "huge.toml", [template_table("acme/t", [table])])
    one_line(run_cli("index", "add", "huge", str(index)), "is not a PEP 440 version")
    project = tmp_path / "project"
    project.mkdir()
    (project / "microtvm.lock").write_text(f'schema = 1\n[[template]]\nname = "host"\nversion = "{HUGE}"\n')
    one_line(run_cli("sync", cwd=project), "template[0].version", "is not a PEP 440 version")
    (project / "microtvm.lock").write_text(f'schema = 1\n[[template]]\nname = "host"\nversion = "0.1.0"\nspecifier = ">={HUGE}"\n')
    one_line(run_cli("sync", cwd=project), "template[0].specifier", "is not a PEP 440 specifier")


def test_a_long_index_name():
    one_line(run_cli("index", "add", "n" * 300, "/nowhere.toml"), "up to 64 letters")


def test_a_broken_extra_index_is_one_warning_and_never_stops_other_commands(tmp_path, repo):
    url, v = repo
    index = write_index(tmp_path / "acme.toml", [template_table("acme/t", [git_version_table(str(url), v)])])
    assert run_cli("index", "add", "acme", str(index)).returncode == 0
    text = index.read_text()
    for broken in (text.replace('version = "1.0.0"', f'version = "{HUGE}"'), "a = " + "[" * 5000 + "]" * 5000):
        index.write_text(broken)
        proc = run_cli("show", "host")
        assert proc.returncode == 0, proc.stderr
        warnings = proc.stderr.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith("microtvm: warning: ") and "acme" in warnings[0], proc.stderr


def test_output_dir_naming_a_file(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "a-file").write_text("")
    one_line(run_cli("run", str(project), "-f", "x", "--output-dir", str(tmp_path / "a-file")), "--output-dir", "is a file")


@pytest.mark.needs_tvm
def test_workdir_naming_a_file(tmp_path):
    (tmp_path / "a-file").write_text("")
    one_line(run_cli("demo", "--workdir", str(tmp_path / "a-file")), "--workdir", "is a file")


def _immutable(*paths: Path) -> None:
    """Read-only even for root, for whom modes do not matter (CI runs as root): the immutable
    attribute; for anyone else, no write bits."""
    import os

    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "+i", str(path)], check=True, capture_output=True)
        else:
            subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)


def _mutable(*paths: Path) -> None:
    import os

    for path in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True)
        else:
            subprocess.run(["chmod", "-R", "u+w", str(path)])


def test_a_read_only_project_folder_and_a_read_only_shared_cache(tmp_path, repo):
    """The README promises a fleet can share a read-only cache: path, fetch, show, info and list
    work from one; a lockfile that cannot be written is one line."""
    import os

    url, v = repo
    index = write_index(tmp_path / "acme.toml", [template_table("acme/t", [git_version_table(str(url), v)])])
    assert run_cli("index", "add", "acme", str(index)).returncode == 0
    fetched = run_cli("fetch", "acme/t")
    assert fetched.returncode == 0, fetched.stderr
    cache = Path(os.environ["MICROTVM_REGISTRY_CACHE"])
    project = tmp_path / "ro-project"
    project.mkdir()
    _immutable(cache, project)
    try:
        for argv in (["path", "acme/t"], ["--offline", "path", "acme/t"], ["fetch", "acme/t"], ["show", "acme/t"],
                     ["info", "host"], ["list"], ["cache", "verify"]):
            proc = run_cli(*argv)
            assert proc.returncode == 0, (argv, proc.stderr)
            assert "warning" not in proc.stderr and "unexpected" not in proc.stderr
        one_line(run_cli("-q", "lock", "host", cwd=project), "cannot write", "microtvm.lock")
    finally:
        _mutable(cache, project)
    assert not (project / "microtvm.lock").exists()
