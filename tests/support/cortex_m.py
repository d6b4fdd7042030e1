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
