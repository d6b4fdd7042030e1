"""`microtvm info | create-project | build | flash` as a user runs them (real subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "project_api"))
from fault_servers import make_server_dir, make_template  # noqa: E402


def run_cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "microtvm_registry", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def one_line_error(proc, *needles):
    assert proc.returncode == 1, proc.stderr
    # A server started from a plain folder is announced once (a note), then the one error line.
    lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith("microtvm: note: running the server in ")]
    assert len(lines) == 1 and lines[0].startswith("microtvm: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def template(tmp_path):
    return make_template(tmp_path / "tpl")


@pytest.fixture
def mlf(tmp_path):
    path = tmp_path / "model.tar"
    tarfile.open(path, "w").close()
    return path


def test_info_table_and_json(template):
    proc = run_cli("info", template)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert "platform: testplat" in out and "is_template: true" in out
    header = next(line for line in out if line.startswith("name"))
    assert header.split() == ["name", "type", "default", "required-for", "optional-for", "choices", "help"]
    row = next(line for line in out if line.startswith("project_type")).split()
    assert row[:4] == ["project_type", "str", "generate_project", "host_driven,aot"]
    ws = next(line for line in out if line.startswith("workspace_size_bytes")).split()
    assert ws[:4] == ["workspace_size_bytes", "int", "2097152", "generate_project"]

    proc = run_cli("info", template, "--json")
    assert proc.returncode == 0
    info = json.loads(proc.stdout)
    assert info["protocol_version"] == 1 and info["is_template"] is True
    assert [o["name"] for o in info["project_options"]][:2] == ["project_type", "verbose"]


def test_create_build_flash(tmp_path, template, mlf):
    proj = tmp_path / "proj"
    proc = run_cli("create-project", template, proj, "--mlf", mlf, "-o", "project_type=aot", "-o", "verbose=false")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(proj)
    gen = json.loads((proj / "calls.jsonl").read_text().splitlines()[0])
    assert gen["options"]["verbose"] is False and gen["options"]["workspace_size_bytes"] == 2097152

    proc = run_cli("info", proj)
    assert proc.returncode == 0 and "is_template: false" in proc.stdout
    assert f"model_library_format_path: {proj / 'model.tar'}" in proc.stdout

    proc = run_cli("build", proj, "-o", "ratio=0.25", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    assert (proj / "build" / "firmware.txt").exists()
    proc = run_cli("flash", proj, "--timeout", "0")
    assert proc.returncode == 0, proc.stderr
    assert (proj / "flashed.txt").exists()
    last = json.loads((proj / "calls.jsonl").read_text().splitlines()[-1])
    assert last["method"] == "flash" and last["options"]["ratio"] is None

    one_line_error(run_cli("create-project", template, proj, "--mlf", mlf, "-o", "project_type=aot"),
                   "already exists")
    one_line_error(run_cli("build", template), "is a template")
    one_line_error(run_cli("create-project", proj, tmp_path / "p2", "--mlf", mlf), "is a generated project")


def test_option_errors_are_one_line(tmp_path, template, mlf):
    err = one_line_error(run_cli("create-project", template, tmp_path / "p", "--mlf", mlf,
                                 "-o", "project_type=aot", "-o", "verbose=maybe"), "verbose='maybe'", "bool")
    assert not (tmp_path / "p").exists()
    one_line_error(run_cli("create-project", template, tmp_path / "p", "--mlf", mlf, "-o", "projecttype=aot"),
                   "did you mean 'project_type'")
    one_line_error(run_cli("create-project", template, tmp_path / "p", "--mlf", mlf), "project_type is required")
    one_line_error(run_cli("create-project", template, tmp_path / "p", "--mlf", mlf, "-o", "noequals"),
                   "KEY=VALUE")
    assert err


def test_usage_errors_exit_two(template):
    assert run_cli("info").returncode == 2
    assert run_cli("create-project", template, "x").returncode == 2  # --mlf missing
    assert run_cli("build", template, "--timeout", "soon").returncode == 2


def test_not_a_folder(tmp_path, mlf):
    one_line_error(run_cli("build", tmp_path / "missing"), "not a folder")
    one_line_error(run_cli("info", mlf), "is a file")
    one_line_error(run_cli("info", tmp_path), "neither microtvm_api_server.py")
    proc = run_cli("--offline", "info", "no-such-vendor/no-such-template@9.9")
    one_line_error(proc)


def test_server_failures_are_one_line(tmp_path):
    srv = make_server_dir(tmp_path / "srv")
    env = dict(os.environ, FAULT_MODE="crash")
    one_line_error(run_cli("info", srv, env=env), "died while handling server_info_query", "status 3")
    env["FAULT_MODE"] = "hang"
    one_line_error(run_cli("info", srv, "--timeout", "0.5", env=env), "did not answer server_info_query within 0.5 s")
    env["FAULT_MODE"] = "error"
    one_line_error(run_cli("info", srv, env=env), "the template's server failed in server_info_query: boom")
    proc = run_cli("-v", "info", srv, env=env)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
