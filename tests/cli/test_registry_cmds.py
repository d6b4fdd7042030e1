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
    table = run_cli("cache", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "VERSION", "SIZE", "CONTENT", "ID", "SOURCE"]
    rows = sorted(line.split()[:4] for line in table[2:])
    assert [r[:2] for r in rows] == [["acme/blinky", "1.0.0"], ["acme/blinky", "1.1.0"]]
    assert all(r[3] in ("B", "KiB") for r in rows)  # a human size: "227 B", "1.2 KiB"
    # A second fetch is a cache hit, and says so.
    proc = run_cli("fetch", "blinky@1.0.0")
    assert proc.returncode == 0 and "cached acme/blinky 1.0.0" in proc.stderr and "fetching" not in proc.stderr
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
    # an empty cache says so, and why `lock host` put nothing there
    empty = run_cli("cache", "list").stdout
    assert empty.startswith("the cache (") and "packaged ones (host, cortex-m) live in the installed package" in empty


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
    assert data == [{"name": "acme/blinky", "action": "kept", "old": "1.0.0", "version": "1.0.0", "content_id": data[0]["content_id"]}]
    data = json.loads(run_cli("lock", "--upgrade", "blinky", "--json", cwd=project).stdout)
    assert [(d["name"], d["action"], d["old"], d["version"]) for d in data] == [("acme/blinky", "upgraded", "1.0.0", "1.1.0")]


def test_index_commands(acme, tmp_path):
    proc = run_cli("index", "list", "--json")
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["kind"]) for r in rows] == [("apache-tvm", "packaged"), ("kernel-libraries", "packaged"), ("packaged", "packaged"), ("acme", "extra")]
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


# ---- behaving like uv and PlatformIO ----------------------------------------------------------


def test_a_name_is_never_a_folder_of_that_name_in_the_current_directory(tmp_path):
    """`./host` holding someone else's server: `info host` runs the packaged template, and only
    `info ./host` runs the folder (announced once)."""
    work = tmp_path / "work"
    (work / "host").mkdir(parents=True)
    marker = tmp_path / "ran"
    (work / "host" / "microtvm_api_server.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n")
    proc = run_cli("info", "host", "--json", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["platform_name"] == "host" and not marker.exists()
    proc = run_cli("info", "./host", cwd=work)
    assert proc.returncode == 1 and marker.exists()
    assert proc.stderr.count("microtvm: note: running the server in host, a folder (not a trusted template)") == 1
    proc = run_cli("info", "./nothing-here", cwd=work)
    assert proc.returncode == 1 and "./nothing-here: no such folder" in proc.stderr


def test_json_before_or_after_the_command_and_on_path():
    for argv in (["--json", "path", "host"], ["path", "host", "--json"], ["path", "--json", "host"]):
        proc = run_cli(*argv)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert data["name"] == "host" and Path(data["path"]).is_dir()
    assert json.loads(run_cli("--json", "list").stdout) == json.loads(run_cli("list", "--json").stdout)
    proc = run_cli("--json", "cache", "list")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    proc = run_cli("--json", "build", "somewhere")
    assert proc.returncode == 2 and "`build` prints no data, so it has no --json output" in proc.stderr


def test_quiet_leaves_only_results(acme):
    proc = run_cli("-q", "fetch", "blinky@1.0.0")
    assert proc.returncode == 0 and proc.stderr == "" and "acme/blinky 1.0.0" in proc.stdout
    proc = run_cli("fetch", "--quiet", "blinky@1.1.0")
    assert proc.returncode == 0 and proc.stderr == ""
    proc = run_cli("-q", "fetch", "no-such-template")
    assert proc.returncode == 1 and proc.stderr.startswith("microtvm: error: ")  # errors are never quiet


def _run_on_a_terminal(args, cwd=None):
    """The CLI with stderr on a real pseudo-terminal (as a person runs it); returns (status,
    what the terminal showed)."""
    import pty
    import subprocess
    import sys

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0x0: tqdm would draw nothing
    try:
        proc = subprocess.Popen([sys.executable, "-m", "microtvm_registry", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave, cwd=cwd)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            shown += chunk
        proc.communicate(timeout=120)
        return proc.returncode, shown.decode("utf-8", "replace")
    finally:
        os.close(master)


def test_progress_bar_on_a_terminal_and_none_in_a_pipe(acme):
    status, shown = _run_on_a_terminal(["fetch", "acme/blinky@1.0.0"])
    assert status == 0
    assert "fetching acme/blinky@1.0.0:" in shown and "\r" in shown  # tqdm's bar, redrawn in place
    status, shown = _run_on_a_terminal(["fetch", "acme/blinky@1.0.0"])
    assert status == 0 and "cached acme/blinky 1.0.0" in shown and "fetching" not in shown
    status, shown = _run_on_a_terminal(["-q", "fetch", "acme/blinky@1.1.0"])
    assert status == 0 and shown == ""
    proc = run_cli("fetch", "acme/blinky@1.1.0", env={"MICROTVM_REGISTRY_CACHE": str(acme["tmp"] / "other-cache")})
    assert proc.returncode == 0 and "\r" not in proc.stderr and "fetching acme/blinky 1.1.0 ..." in proc.stderr


MIRRORED = "https://git.mirror-test.invalid/acme/templates.git"


@pytest.mark.parametrize("how", ["flag", "env", "config"])
def test_git_mirror_without_editing_git_config(acme, how):
    """An index naming an upstream URL is fetched from a local mirror given on the command line,
    in the environment or in config.toml; the pin keeps the upstream URL."""
    v = acme["versions"]["1.0.0"]
    index = write_index(acme["tmp"] / "up.toml", [template_table("up/t", [git_version_table(MIRRORED, v)])])
    assert run_cli("index", "add", "up", str(index)).returncode == 0
    pair = f"{MIRRORED}={acme['repo']}"
    args, env = ["fetch", "up/t", "--json"], None
    if how == "flag":
        args = ["--git-mirror", pair] + args
    elif how == "env":
        env = {"MICROTVM_REGISTRY_GIT_MIRROR": pair}
    else:
        config = Path(os.environ["XDG_CONFIG_HOME"]) / "microtvm-registry" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[git_mirror]\n"{MIRRORED}" = "{acme["repo"]}"\n')
    proc = run_cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["content_id"] == v.tree
    project = acme["tmp"] / "proj"
    project.mkdir()
    assert run_cli("lock", "up/t", cwd=project).returncode == 0
    assert f'git = "{MIRRORED}"' in (project / "microtvm.lock").read_text()


def test_malformed_git_mirror_is_one_line():
    proc = run_cli("--git-mirror", "no-equals-sign", "path", "host")
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0
    assert "is not URL_PREFIX=LOCAL_URL" in proc.stderr


def test_every_command_and_argument_has_a_description():
    import argparse

    from microtvm_registry.cli import _leaf_parsers, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for p in _leaf_parsers(sub):
        if not (p.description or "").strip():
            missing.append(f"{p.prog}: no description")
        for action in p._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                missing.append(f"{p.prog} {action.dest}: no help")
    assert missing == []
    assert "NAME@SPECIFIER" in run_cli("fetch", "--help").stdout
