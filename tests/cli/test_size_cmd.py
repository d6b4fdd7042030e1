"""`microtvm size MODEL_TAR --board B`: the fit check for a part you do not have yet: the firmware
built for the board with the real Arm toolchain (no hardware), flash and RAM against the part's
own memory; exit 1 with the linker's overflow in the board's terms when it does not fit."""
from __future__ import annotations

import json

import pytest

from registry_support import run_cli
from support import tflite_models as tm

pytestmark = pytest.mark.needs_tvm


def test_a_model_that_fits_a_real_part(tmp_path):
    model = tm.conv_net(tmp_path / "conv.tflite", True)
    assert run_cli("compile", str(model), "--target", "cortex-m4", "-o", str(tmp_path / "m.tar")).returncode == 0
    out = run_cli("size", str(tmp_path / "m.tar"), "--board", "nucleo_l4r5zi")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "m.tar fits nucleo_l4r5zi (cortex-m4):"
    assert "of  2,097,152 bytes" in lines[1] and "of    655,360 bytes" in lines[2]
    data = json.loads(run_cli("size", str(tmp_path / "m.tar"), "--board", "nucleo_l4r5zi", "--json").stdout)
    assert data["fits"] is True and data["parts"]["runtime_bytes"] <= 8 * 1024
    assert not list(tmp_path.glob("fit*"))  # built in a temporary folder, gone


def test_a_model_too_big_for_the_part_says_where_and_by_how_much(tmp_path):
    """1.1 MB of int8 weights against the NUCLEO-F746ZG's 1 MiB of flash."""
    net = tm.Net(True, seed=3)
    x = net.act([1, 1100], 0.05, 0, "x")
    y = net.dense(x, 1100, 1024)
    model = net.save(tmp_path / "big.tflite", [x], [y])
    assert run_cli("compile", str(model), "--target", "cortex-m7", "-o", str(tmp_path / "big.tar")).returncode == 0
    out = run_cli("size", str(tmp_path / "big.tar"), "--board", "nucleo_f746zg")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("big.tar does not fit nucleo_f746zg: the firmware does not fit nucleo_f746zg: region FLASH needs")
    assert "the board has 1048576" in out.stdout and "a board with more flash" in out.stdout


def test_size_errors_are_one_line(tmp_path):
    out = run_cli("size", str(tmp_path / "none.tar"), "--board", "nucleo_l4r5zi")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr
