"""The type checker passes on the package, at default strictness with the settings in
pyproject.toml ([tool.mypy]): no blanket ignores, and each per-line ignore says why."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HANG_STOP = 600


def test_mypy_passes(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=REPO,
                         capture_output=True, text=True, timeout=HANG_STOP)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert out.stdout.startswith("Success: no issues found")


def test_every_type_ignore_is_narrow_and_says_why():
    """A ``# type: ignore`` names its error code and a reason after it; no file opts out whole."""
    bad = []
    for path in sorted((REPO / "microtvm_registry").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "# mypy: ignore-errors" in line or re.search(r"#\s*type:\s*ignore(?!\[)", line):
                bad.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
            elif re.search(r"#\s*type:\s*ignore\[[^\]]+\]\s*$", line):
                bad.append(f"{path.relative_to(REPO)}:{n}: no reason after the ignore: {line.strip()}")
    assert bad == []
