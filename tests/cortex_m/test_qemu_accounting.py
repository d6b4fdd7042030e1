"""The check after every cortex-m test counts only the QEMUs this test run started: a user with
an emulated board open on the same machine sees no false "QEMU processes left running"."""
from __future__ import annotations

import os
import subprocess
import time

from support.cortex_m import RUN_MARKER, qemu_pids

# Halted at reset (-S), no display, no serial: a QEMU that just stays, as a user's open board does.
IDLE_QEMU = ["qemu-system-arm", "-M", "mps2-an386", "-S", "-display", "none", "-serial", "none", "-monitor", "none"]


def _started(env):
    proc = subprocess.Popen(IDLE_QEMU, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until /proc shows it as QEMU (not the forked Python)
        try:
            with open(f"/proc/{proc.pid}/comm") as fh:
                if fh.read().strip() == "qemu-system-arm":
                    break
        except OSError:
            pass
        time.sleep(0.02)
    return proc


def test_a_qemu_the_user_started_is_not_counted_and_ours_is():
    theirs_env = {k: v for k, v in os.environ.items() if k != RUN_MARKER}
    theirs, ours = _started(theirs_env), _started(dict(os.environ))
    try:
        assert theirs.poll() is None and ours.poll() is None
        pids = qemu_pids()
        assert theirs.pid not in pids and ours.pid in pids
    finally:
        for proc in (theirs, ours):
            proc.kill()
            proc.wait()
