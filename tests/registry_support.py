"""Helpers for the registry tests: small template repositories, index files, running the CLI.

Real parts only: templates live in real git repositories (served from the folder, over
``git daemon`` or through ``insteadOf``), indexes are real TOML files, and the CLI runs as a
real subprocess that inherits the per-test cache/config isolation from conftest.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import tomli_w

from support.servers import Executable, make_repo, rev_parse

SERVER_TEXT = (
    "# a tiny stand-in for a Project API server: these tests never start it\n"
    "import sys\n"
    "VERSION = {version!r}\n"
)


@dataclasses.dataclass
class RepoVersion:
    version: str
    commit: str
    tree: str
    blob: str  # blob id of lib/server.py at that commit


def make_template_repo(path: Path, versions: List[str], subdir: str = "tmpl") -> Dict[str, RepoVersion]:
    """A repo with one commit per version; ``subdir`` holds a template, lib/server.py an extra."""
    result = {}
    for version in versions:
        commit = make_repo(
            path,
            {
                f"{subdir}/microtvm_api_server.py": SERVER_TEXT.format(version=version),
                f"{subdir}/launch.sh": Executable("#!/bin/sh\necho " + version + "\n"),
                f"{subdir}/src/main.c": f"int main(void) {{ return 0; }} /* {version} */\n",
                "lib/server.py": f"# server library {version}\n",
                "README.md": "not part of the template\n",
            },
            message=f"release {version}",
        )
        result[version] = RepoVersion(
            version,
            commit,
            rev_parse(path, f"{commit}:{subdir}"),
            rev_parse(path, f"{commit}:lib/server.py"),
        )
    return result


def git_version_table(url: str, rv: RepoVersion, *, subdir: str = "tmpl", extra: bool = False, **more: Any) -> Dict[str, Any]:
    table: Dict[str, Any] = {
        "version": rv.version,
        "git": url,
        "ref": f"v{rv.version}",
        "commit": rv.commit,
        "subdir": subdir,
        "tree": rv.tree,
    }
    if extra:
        table["extra"] = [{"path": "lib/server.py", "dest": "server.py", "blob": rv.blob}]
    table.update(more)
    return table


def index_doc(templates: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"schema": 1, "template": templates}


def template_table(name: str, versions: List[Dict[str, Any]], platform: str = "demo", description: str = "a test template") -> Dict[str, Any]:
    return {"name": name, "description": description, "platform": platform, "version": versions}


def write_index(path: Path, templates: List[Dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(index_text(templates), "utf-8")
    return path


def index_text(templates: List[Dict[str, Any]]) -> str:
    return tomli_w.dumps(index_doc(templates))


def cli_command(*args: str) -> List[str]:
    """The command line of the CLI in a subprocess (for tests that start several at once)."""
    return [sys.executable, "-m", "microtvm_registry", *args]


def run_cli(*args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m microtvm_registry ARGS`` in a subprocess (inherits the test's isolated env)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "microtvm_registry", *args],
        capture_output=True,
        text=True,
        cwd=None if cwd is None else str(cwd),
        env=full_env,
        timeout=timeout,
    )


def add_insteadof(real_url: str, local: Path) -> None:
    """Point ``real_url`` at a local repository through the test's private global git config."""
    config = Path(os.environ["GIT_CONFIG_GLOBAL"])
    with open(config, "a", encoding="utf-8") as fh:
        fh.write(f'[url "{local}"]\n\tinsteadOf = {real_url}\n')
