"""Every code block of README.md does what it says: the shell and Python blocks run, in order, in
one empty folder, as a user following the README would run them; the index example parses.

Only blocks preceded by a ``<!-- not run: REASON -->`` line are left out, and each must say why
(CI's own job, the wheel test). The blocks use nothing from the network: the templates they use
are packaged, and the board is emulated.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
HANG_STOP = 600  # seconds; only stops a hang, never asserted on

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def readme_blocks() -> List[Tuple[str, str, str]]:
    """(language, code, the reason it is not run or "") of every fenced block, in order."""
    text = README.read_text("utf-8")
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = re.match(r"<!-- not run: (.+?) -->", before)
        blocks.append((m.group(1), m.group(2), skip.group(1).strip() if skip else ""))
    return blocks


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks()
    assert len(blocks) >= 6
    assert {lang for lang, _, _ in blocks} <= {"sh", "python", "toml"}
    skipped = [(lang, reason) for lang, _, reason in blocks if reason]
    assert len(skipped) == 2 and all(len(reason) > 20 for _, reason in skipped)


def test_the_index_example_parses():
    from microtvm_registry.registry.index_format import parse_index
    from microtvm_registry.registry.models import Origin

    (toml,) = [code for lang, code, _ in readme_blocks() if lang == "toml"]
    index = parse_index(toml, "README.md", Origin("index", "readme", "README.md", trusted=False, remote=True))
    (template,) = index.templates
    assert template.name == "acme/board" and template.versions[0].requires.tools == ("west", "cmake")


@pytest.mark.slow
@pytest.mark.needs_tvm
def test_the_shell_and_python_blocks_run_in_order(tmp_path):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    ran = []
    for n, (lang, code, reason) in enumerate(readme_blocks()):
        if reason or lang == "toml":
            continue
        if lang == "sh":
            argv = ["bash", "-e", "-o", "pipefail", "-c", code]
        else:
            argv = [sys.executable, "-c", code]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_STOP,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"README block {n} ({lang}) failed:\n{code}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        assert "Traceback" not in proc.stderr
        ran.append((lang, proc.stdout))
    assert [lang for lang, _ in ran] == ["sh", "python", "sh", "python", "sh", "python", "sh", "python", "python"]
    out = "\n".join(stdout for _, stdout in ran)
    assert "microtvm 0.1.0" in out.splitlines()[0]
    assert (tmp_path / "microtvm.lock").is_file() and (tmp_path / "out" / "output.npy").is_file()
    assert (tmp_path / "kws-out" / "probabilities.npy").is_file()  # the .tflite walk-through, checked by its own block
    assert "OK: 1 output(s) equal TFLite Micro's within the model's tolerance on 4 sample(s)" in out  # microtvm verify
    assert (tmp_path / "kws-lib" / "CMakeLists.txt").is_file() and (tmp_path / "kws-lib" / "src" / "kws_model.h").is_file()  # export
    assert "on the board:" in out and (tmp_path / "proj-from-python").is_dir()
