"""What the cortex-m tests share (the template, its boards, the QEMU processes running): a module of
its own, so that test files never import a conftest by name (pytest loads several under that name)."""
from __future__ import annotations

import json
import os
import time
from typing import List

from microtvm_registry import get_packaged_resource

TEMPLATE = get_packaged_resource("templates/cortex-m")
BOARDS = {b["name"]: b for b in json.loads((TEMPLATE / "boards.json").read_text())["boards"]}
EMULATED = sorted(n for n, b in BOARDS.items() if b.get("qemu"))
REAL = sorted(n for n, b in BOARDS.items() if not b.get("qemu"))


#: Set for this test run and inherited by every process it starts (servers, their QEMUs), so the
#: QEMUs a test started can be told from those a user has open on the same machine, even once
#: a killed server's QEMU has been reparented away from this process.
RUN_MARKER = "MICROTVM_REGISTRY_TEST_RUN"
os.environ.setdefault(RUN_MARKER, f"{os.getpid()}-{time.time_ns()}")


def _started_by_this_run(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{RUN_MARKER}={os.environ[RUN_MARKER]}".encode() in fh.read().split(b"\0")
    except OSError:  # gone, or another user's: not ours
        return False


def qemu_pids() -> List[int]:
    """The qemu-system-arm processes this test run started (a user's own emulated boards on the
    same machine are not counted)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "qemu-system-arm" and _started_by_this_run(int(entry)):
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def process_state(pid: int) -> str:
    """A process's state letter from /proc ("R", "S", "Z" for a zombie ...), or "gone"."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def still_running(pids) -> list:
    """Those of ``pids`` that still run (a zombie waiting for init to reap it does not)."""
    return sorted(p for p in pids if process_state(p) not in ("Z", "X", "gone"))
