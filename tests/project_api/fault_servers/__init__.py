"""Helpers to put a test server into a folder as its ``microtvm_api_server.py``.

Import as ``from fault_servers import ...`` (pytest puts tests/project_api on sys.path).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

HERE = Path(__file__).resolve().parent
FAULT_SERVER = HERE / "fault_server.py"
TEMPLATE_SERVER = HERE / "template_server.py"

_STUB = 'p = {path!r}\nexec(compile(open(p).read(), p, "exec"))\n'


def make_server_dir(folder: Path, script: Path = FAULT_SERVER) -> Path:
    """``folder/microtvm_api_server.py`` runs ``script`` (kept tiny so 500 starts stay cheap)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "microtvm_api_server.py").write_text(_STUB.format(path=str(script)))
    return folder


def fault_env(mode: str, after: int = 0, record: Optional[Path] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["FAULT_MODE"] = mode
    env["FAULT_AFTER"] = str(after)
    if record is not None:
        env["FAULT_RECORD"] = str(record)
    return env


def make_template(folder: Path, style: str = "v12") -> Path:
    """A template folder holding a full copy of template_server.py (it copies itself on generate).

    ``style`` "v08" makes it declare v0.8-style options (name/choices/help only).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "microtvm_api_server.py").write_text(TEMPLATE_SERVER.read_text())
    if style == "v08":
        (folder / "v08").write_text("")
    return folder


def children_of(pid: int):
    """PIDs whose parent is ``pid`` (zombies included), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def open_fds():
    return sorted(int(x) for x in os.listdir("/proc/self/fd"))
