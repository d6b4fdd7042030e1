"""The cortex-m template through the real CLI in subprocesses: info, create-project, build (with its
report), flash, run, demo; and the one-line errors for a missing toolchain or QEMU."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from support.cortex_m import EMULATED
from registry_support import run_cli

pytestmark = pytest.mark.needs_tvm


def test_info_lists_the_boards_as_the_board_options_choices():
    out = run_cli("info", "cortex-m", "--json")
    assert out.returncode == 0, out.stderr
    options = {o["name"]: o for o in json.loads(out.stdout)["project_options"]}
    assert set(EMULATED) <= set(options["board"]["choices"])
    assert {"serial_port", "opt_level", "workspace_size_bytes", "icount", "verbose"} <= set(options)


def test_create_build_flash_run_on_an_emulated_board(tmp_path, kernels_mlf):
    project = tmp_path / "proj"
    out = run_cli("create-project", "cortex-m", str(project), "--mlf", str(kernels_mlf), "-o", "board=mps3-an547")
    assert out.returncode == 0, out.stderr
    out = run_cli("build", str(project))
    assert out.returncode == 0, out.stderr
    assert "build report: mps3-an547 (cortex-m55)" in out.stderr
    assert "FLASH" in out.stderr and "524,288 bytes" in out.stderr
    assert json.loads((project / "build" / "build-report.json").read_text())["board"] == "mps3-an547"
    out = run_cli("flash", str(project))
    assert out.returncode == 0, out.stderr
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 16), dtype=np.float32), rng.standard_normal((8, 16), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    inputs = ["-f", "dense", "-i", f"x={tmp_path / 'x.npy'}", "-i", f"w={tmp_path / 'w.npy'}", "--output-dir", str(tmp_path)]
    out = run_cli("run", str(project), *inputs, "--json", "--time")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["outputs"][0]["name"] == "y"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), x @ w.T, rtol=1e-5, atol=1e-5)
    # --time: the device's own count, in what it counts; exact under -icount, so every repeat agrees
    timing = result["time"]
    assert timing["unit"] == "instructions" and len(timing["counts"]) == 3
    assert len(set(timing["counts"])) == 1 and timing["counts"][0] > 100
    assert timing["mean_seconds"] == pytest.approx(timing["mean_count"] / 32e6)  # mps3-an547 runs at 32 MHz
    out = run_cli("run", str(project), *inputs, "--time")
    assert out.returncode == 0, out.stderr
    assert "time of dense on the device: " in out.stdout and "instructions per call (QEMU -icount: exact)" in out.stdout
    # -o goes to open_transport, checked against what the template declares
    out = run_cli("run", str(project), *inputs, "-o", "serial_port=/dev/ttyNOPE", "-o", "nosuch=1")
    assert out.returncode == 1
    assert out.stderr.startswith("microtvm: error: unknown option 'nosuch' for the cortex-m project")


def test_demo_on_the_emulated_cortex_m4():
    out = run_cli("demo", "--board", "mps2-an386", timeout=300)
    assert out.returncode == 0, out.stderr
    assert "demo: dense+bias+relu on mps2-an386 vs numpy" in out.stdout and out.stdout.rstrip().endswith("OK")
    assert "demo: int8 .tflite model on mps2-an386 vs TensorFlow Lite Micro: identical: OK" in out.stdout
    assert "demo: keyword-spotting network on mps2-an386 vs onnxruntime" in out.stdout
    assert "instructions per call (QEMU -icount: exact)" in out.stderr


def _path_without(tmp_path: Path, *tools: str) -> str:
    """A PATH holding every tool of this one but ``tools`` (links in a folder of the test's own)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = bin_dir / name
            if name in tools or target.exists():
                continue
            try:
                target.symlink_to(Path(folder) / name)
            except OSError:
                continue
    return str(bin_dir)


def test_a_missing_toolchain_is_one_line_naming_the_packages(tmp_path, built_boards, fresh_copy):
    project = fresh_copy(built_boards.get("mps2-an385", flash=False))
    shutil.rmtree(project / "build")
    out = run_cli("build", str(project), env={"PATH": _path_without(tmp_path, "arm-none-eabi-gcc")})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert "arm-none-eabi-gcc is not on PATH" in out.stderr and "gcc-arm-none-eabi libnewlib-arm-none-eabi" in out.stderr


def test_a_missing_qemu_is_one_line_naming_the_package(tmp_path, built_boards, fresh_copy):
    project = fresh_copy(built_boards.get("mps2-an385", flash=False))
    out = run_cli("flash", str(project), env={"PATH": _path_without(tmp_path, "qemu-system-arm")})
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert "qemu-system-arm is not on PATH" in out.stderr and "apt-get install qemu-system-arm" in out.stderr
    out = run_cli("demo", "--board", "mps2-an386", env={"PATH": _path_without(tmp_path / "d", "qemu-system-arm")}) \
        if (tmp_path / "d").mkdir() is None else None
    assert out.returncode == 1 and "needs qemu-system-arm" in out.stderr and "[1/8]" not in out.stderr
