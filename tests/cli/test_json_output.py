"""``--json`` is one JSON document on stdout on every command that has it, even when the template
involved has a launcher and a server that both print to stdout (their words go to stderr)."""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from registry_support import add_insteadof, run_cli, template_table, write_index
from support.minimal_server import HEADER
from support.servers import Executable, make_repo, rev_parse

NOISY_SERVER = 'print("server chatter on stdout", flush=True)\n' + HEADER + "server.main(handler())\n"


UPSTREAM = "https://git.example.invalid/noisy/templates.git"

#: Every command with --json, and how this test runs it (a new one must be added here).
COMMANDS = {
    "list": ["list"],
    "show": ["show", "noisy/t"],
    "fetch": ["fetch", "noisy/t"],
    "path": ["path", "noisy/t"],
    "trust": ["trust", "noisy/t"],
    "info": ["info", "noisy/t"],
    "lock": ["lock", "noisy/t"],
    "sync": ["sync"],
    "unlock": ["unlock", "noisy/t"],
    "cache list": ["cache", "list"],
    "cache verify": ["cache", "verify"],
    "index list": ["index", "list"],
    "boards": ["boards"],
    "devices": ["devices"],
}
#: Covered where their projects are built (they need apache-tvm and a compiled model).
ELSEWHERE = {
    "run": "tests/host/test_host_cli.py::test_run_json_stays_pure_when_the_server_and_its_launcher_print",
    "compile": "tests/compile/test_model.py (compile --json)",
    "tune": "tests/tuning (tune --json)",
    "verify": "tests/verify/test_verify.py (verify --json)",
    "export": "tests/export/test_export.py (export --json)",
    "size": "tests/cli/test_size_cmd.py (size --json)",
}


def test_every_json_command_is_covered():
    from microtvm_registry.cli import _leaf_parsers, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    with_json = {p.prog.split(" ", 1)[1] for p in _leaf_parsers(sub) if p.get_default("json_output")}
    assert with_json == set(COMMANDS) | set(ELSEWHERE)


def test_json_is_pure_on_every_command(tmp_path):
    repo = tmp_path / "repo"
    commit = make_repo(repo, {
        "t/microtvm_api_server.py": NOISY_SERVER,
        "t/launch_microtvm_api_server.sh": Executable(f'#!/bin/sh\necho "launcher chatter on stdout"\nexec {sys.executable} "$@"\n'),
    }, message="noisy")
    add_insteadof(UPSTREAM, repo)
    version = {"version": "1.0.0", "git": UPSTREAM, "commit": commit, "subdir": "t", "tree": rev_parse(repo, f"{commit}:t")}
    index = write_index(tmp_path / "noisy.toml", [template_table("noisy/t", [version])])
    assert run_cli("index", "add", "noisy", str(index)).returncode == 0
    project = tmp_path / "project"
    project.mkdir()
    for name, argv in COMMANDS.items():
        for placed in (argv + ["--json"], ["--json"] + argv):
            proc = run_cli(*placed, cwd=project)
            assert proc.returncode == 0, (placed, proc.stderr)
            try:
                json.loads(proc.stdout)
            except ValueError:
                pytest.fail(f"`microtvm {' '.join(placed)}` printed more than one JSON document: {proc.stdout[:300]!r}")
            if name == "info":
                assert "server] launcher chatter on stdout" in proc.stderr
                assert "server chatter on stdout" in proc.stderr
            if name == "unlock":
                assert run_cli("lock", "noisy/t", cwd=project).returncode == 0  # for the second placement
