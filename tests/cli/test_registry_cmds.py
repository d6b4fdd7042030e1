"""The registry commands as a user runs them: real subprocesses, real git repos, real files."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from registry_support import git_version_table, make_template_repo, run_cli, template_table, write_index


@pytest.fixture
def acme(tmp_path):
    repo = tmp_path / "repo"
    versions = make_template_repo(repo, ["1.0.0", "1.1.0"])
    index_file = write_index(tmp_path / "acme.toml", [
        template_table("acme/blinky", [git_version_table(str(repo), v, extra=True, requires={"tools": ["sh", "no-such-tool-xyz"], "pip": ["packaging>=20", "no-such-dist-xyz"]}) for v in versions.values()], platform="acme", description="Blinks"),
    ])
    proc = run_cli("index", "add", "acme", str(index_file))
    assert proc.returncode == 0, proc.stderr
    assert "added index acme (1 template(s))" in proc.stdout
    return {"repo": repo, "versions": versions, "index": index_file, "tmp": tmp_path}


def test_list_text_and_json(acme):
    proc = run_cli("list")
    assert proc.returncode == 0, proc.stderr
    header, rule, *rows = proc.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "LATEST", "PLATFORM", "SOURCE", "FROM"]
    names = [r.split()[0] for r in rows]
    assert names == sorted(names) and {"host", "apache-tvm/zephyr", "acme/blinky"} <= set(names)
    blinky = next(r for r in rows if r.startswith("acme/blinky"))
    assert blinky.split()[1:5] == ["1.1.0", "acme", "git", "acme"] and "Blinks" in blinky
    data = json.loads(run_cli("list", "--json").stdout)
    host = next(r for r in data if r["name"] == "host")
    assert host["source"] == "packaged" and host["platform"] == "host"
    zephyr = next(r for r in data if r["name"] == "apache-tvm/zephyr")
    assert zephyr["latest"] == "0.18.0" and len(zephyr["versions"]) == 11


def test_show_reports_runs_requirements_and_trust(acme):
    proc = run_cli("show", "acme/blinky")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("acme/blinky 1.1.0  (acme)")
    assert "content id: unknown until fetched" in out and "not cached" in out
    assert "sh" in out and "found /" in out and "no-such-tool-xyz" in out and "MISSING" in out
    assert "packaging>=20" in out and "installed" in out and "no-such-dist-xyz" in out
    assert "no: run `microtvm trust acme/blinky@1.1.0` or pass --trust" in out
    assert run_cli("fetch", "acme/blinky").returncode == 0
    data = json.loads(run_cli("show", "blinky", "--json").stdout)
    assert data["cached"] and data["runs"] == "microtvm_api_server.py" and data["trust"] == "untrusted"
    assert data["content_id"] and Path(data["folder"]).name == data["content_id"]
    tools = {t["tool"]: t["found"] for t in data["requires"]["tools"]}
    assert tools == {"sh": True, "no-such-tool-xyz": False}
    pip = {p["package"]: p["ok"] for p in data["requires"]["pip"]}
    assert pip == {"packaging>=20": True, "no-such-dist-xyz": False}
    assert [v["version"] for v in data["versions"]] == ["1.1.0", "1.0.0"]
    assert data["source"]["extra"][0]["dest"] == "server.py"


def test_show_curated_template_without_network():
    data = json.loads(run_cli("show", "apache-tvm/zephyr@0.12", "--json").stdout)
    assert data["selected"] == "0.12.0" and data["runs"] == "launch_microtvm_api_server.sh"
    assert data["trust"] == "packaged" and data["source"]["kind"] == "git"
    old = json.loads(run_cli("show", "crt@0.8.0", "--json").stdout)
    assert old["runs"] == "microtvm_api_server.py" and old["content_id"] == old["source"]["tree"]
    assert "tvm.micro.project_api.server" in old["note"]
    proc = run_cli("show", "host")
    assert "yes (pinned by a packaged index)" in proc.stdout and "runs:       microtvm_api_server.py" in proc.stdout


def test_fetch_path_and_cache_commands(acme):
    proc = run_cli("fetch", "blinky@1.0.0", "acme/blinky@1.1.0", "--json")
    assert proc.returncode == 0, proc.stderr
    fetched = json.loads(proc.stdout)
    assert [f["version"] for f in fetched] == ["1.0.0", "1.1.0"]
    assert "fetching acme/blinky 1.0.0" in proc.stderr  # progress on stderr, data on stdout
    path = run_cli("path", "blinky@1.0.0")
    assert path.returncode == 0 and path.stdout == fetched[0]["path"] + "\n"
    listing = json.loads(run_cli("cache", "list", "--json").stdout)
    assert sorted(e["content_id"] for e in listing) == sorted(f["content_id"] for f in fetched)
    assert run_cli("cache", "list").stdout.splitlines()[0].split() == ["CONTENT", "ID", "SIZE", "SOURCE"]
    proc = run_cli("cache", "verify")
    assert proc.returncode == 0 and proc.stdout.count(" ok") == 2
    # Damage one entry: verify reports it (exit 1), --repair removes it.
    entry = Path(fetched[0]["path"])
    os.chmod(entry, 0o755)
    target = entry / "microtvm_api_server.py"
    os.chmod(target, stat.S_IWUSR | stat.S_IRUSR)
    target.write_text("tampered\n")
    proc = run_cli("cache", "verify")
    assert proc.returncode == 1 and "DAMAGED" in proc.stdout and "--repair" in proc.stderr
    proc = run_cli("cache", "verify", "--repair")
    assert proc.returncode == 0 and "REMOVED" in proc.stdout
    assert not entry.exists()
    proc = run_cli("cache", "clean")
    assert proc.returncode == 0 and "removed 1 cached template(s)" in proc.stderr
    assert json.loads(run_cli("cache", "list", "--json").stdout) == []


def test_cache_clean_keep_locked(acme):
    project = acme["tmp"] / "project"
    project.mkdir()
    assert run_cli("lock", "blinky@1.0.0", cwd=project).returncode == 0
    assert run_cli("fetch", "blinky@1.1.0").returncode == 0
    assert run_cli("cache", "clean", "--keep-locked", cwd=project).returncode == 0
    listing = json.loads(run_cli("cache", "list", "--json").stdout)
    assert len(listing) == 1
    proc = run_cli("sync", "--frozen", "--offline", cwd=project)
    assert proc.returncode == 0, proc.stderr


def test_lock_and_sync_commands(acme):
    project = acme["tmp"] / "project"
    project.mkdir()
    proc = run_cli("lock", "blinky@1.0.0", "host", cwd=project)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("pinned acme/blinky 1.0.0 ") and lines[1].startswith("pinned host ")
    assert "wrote " in proc.stderr
    proc = run_cli("sync", cwd=project)
    assert proc.returncode == 0
    assert sorted(l.split()[1] for l in proc.stdout.splitlines()) == ["acme/blinky", "host"]
    assert run_cli("sync", "--frozen", cwd=project).returncode == 0
    data = json.loads(run_cli("sync", "--json", cwd=project).stdout)
    assert {(d["name"], d["status"]) for d in data} == {("acme/blinky", "ok"), ("host", "ok")}
    assert all(len(d["content_id"]) == 40 for d in data)
    data = json.loads(run_cli("lock", "blinky", "--json", cwd=project).stdout)
    assert data == [{"name": "acme/blinky", "version": "1.1.0", "content_id": data[0]["content_id"]}]


def test_index_commands(acme, tmp_path):
    proc = run_cli("index", "list", "--json")
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["kind"]) for r in rows] == [("apache-tvm", "packaged"), ("packaged", "packaged"), ("acme", "extra")]
    assert run_cli("index", "update").stdout.strip() == "acme: ok (1 template(s))"
    proc = run_cli("index", "add", "acme", str(acme["index"]))
    assert proc.returncode == 1 and "already exists" in proc.stderr
    proc = run_cli("index", "add", "bad name", str(acme["index"]))
    assert proc.returncode == 1 and "index name" in proc.stderr
    proc = run_cli("index", "add", "missing", str(tmp_path / "nope.toml"))
    assert proc.returncode == 1 and "cannot read" in proc.stderr
    proc = run_cli("--offline", "index", "update")
    assert proc.returncode == 1 and "needs the network" in proc.stderr
    assert run_cli("index", "remove", "acme").stdout.strip() == "removed index acme"
    assert "acme/blinky" not in run_cli("list").stdout


def test_trust_command(acme):
    proc = run_cli("trust", "acme/blinky@1.0.0")
    assert proc.returncode == 0
    assert proc.stdout.startswith("trusted acme/blinky 1.0.0 ")
    assert "yes (you trusted this content id)" in run_cli("show", "blinky@1.0.0").stdout
    proc = run_cli("trust", "host")
    assert "already trusted" in proc.stdout and "packaged index" in proc.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["path", "zephr"], "no template named 'zephr'; did you mean"),
        (["show", "nothing-like-it-at-all"], "run `microtvm list`"),
        (["path", "zephyr@>>1"], "is not a version or a PEP 440 specifier"),
        (["fetch", "host", "bad spec"], "malformed"),
        (["path", "apache-tvm/zephyr@0.7"], "has no version matching ==0.7"),
        (["index", "remove", "nope"], "no extra index named 'nope'"),
    ],
)
def test_errors_are_one_line_and_exit_1(args, fragment):
    proc = run_cli(*args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("microtvm: error: ") and fragment in lines[0], proc.stderr


@pytest.mark.parametrize("args", [["path"], ["cache"], ["cache", "frob"], ["index", "add", "x"], ["sync", "--bogus"]])
def test_usage_errors_exit_2(args):
    assert run_cli(*args).returncode == 2
