"""What the cortex-m tests share (the template, its boards, the QEMU processes running): a module of
its own, so that test files never import a conftest by name (pytest loads several under that name)."""
from __future__ import annotations

import json
import os
from typing import List

from microtvm_registry import get_packaged_resource

TEMPLATE = get_packaged_resource("templates/cortex-m")
BOARDS = {b["name"]: b for b in json.loads((TEMPLATE / "boards.json").read_text())["boards"]}
EMULATED = sorted(n for n, b in BOARDS.items() if b.get("qemu"))
REAL = sorted(n for n, b in BOARDS.items() if not b.get("qemu"))


def qemu_pids() -> List[int]:
    """Every qemu-system-arm process on this machine (tests run one at a time)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "qemu-system-arm":
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
