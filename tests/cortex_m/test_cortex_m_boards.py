"""Every emulated board runs the exported kernels under QEMU, over a real serial line, through the
Project API and the session, and answers what numpy answers; timings are exact under -icount."""
from __future__ import annotations

import numpy as np
import pytest

from support.cortex_m import BOARDS, EMULATED
from microtvm_registry.device.session import Session

pytestmark = pytest.mark.needs_tvm


@pytest.mark.parametrize("board", EMULATED)
def test_float32_and_int8_kernels_match_numpy(built_boards, board):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    w = rng.standard_normal((8, 16), dtype=np.float32)
    a8 = rng.integers(-128, 128, (6, 10), dtype=np.int8)
    b8 = rng.integers(-128, 128, (6, 10), dtype=np.int8)
    src = rng.standard_normal(512, dtype=np.float32)
    with Session.open(built_boards.get(board)) as sess:
        y = sess.run("dense", {"x": x, "w": w})["y"]
        s8 = sess.run("add_i8", {"a8": a8, "b8": b8})["s8"]
        r32 = sess.run("rowsum_i8", {"a8": a8})["r32"]
        dst = sess.run("reverse_scale", {"src": src})["dst"]  # needs workspace
        clock = sess.hello.clock
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(s8, (a8.astype(np.int16) + b8).astype(np.int8))  # wraps as C int8
    np.testing.assert_array_equal(r32, a8.astype(np.int32).sum(axis=1))
    np.testing.assert_allclose(dst, src[::-1] * 2 + 1, rtol=1e-6)
    assert clock.counter_hz == BOARDS[board]["qemu"]["timer_hz"]
    assert clock.cpu_hz == BOARDS[board]["clock_hz"]
    assert clock.icount_shift == 0


def test_timings_count_instructions_and_repeat_to_one_tick(built_boards):
    project = built_boards.get("mps2-an386")
    number = 8
    tick = 1e9 / 25e6 / number  # one SysTick tick (40 instructions under -icount shift=0), per call
    counts = []
    for _ in range(2):  # two QEMU runs
        with Session.open(project) as sess:
            result = sess.time_evaluator("dense", number=number, repeat=2)()
            noop = sess.time_evaluator("noop", number=1, repeat=3)()
        counts += result.counts
        assert result.unit == "instructions"
        # seconds are the counts at the board's 25 MHz clock
        assert result.results[0] == pytest.approx(result.counts[0] / 25e6)
        assert len(set(noop.counts)) == 1  # a call shorter than the jitter's cause repeats exactly
    assert max(counts) - min(counts) <= tick
    # a 4x8x16 float32 dense is hundreds of multiply-adds: thousands of instructions, not noise
    assert 1000 < counts[0] < 100_000


def test_a_larger_kernel_costs_more_instructions(built_boards):
    with Session.open(built_boards.get("mps2-an386")) as sess:
        small = sess.time_evaluator("noop", number=4, repeat=1)().counts[0]
        large = sess.time_evaluator("reverse_scale", number=4, repeat=1)().counts[0]
    assert large > 5 * small


def test_echo_and_upload_cross_the_serial_line_intact(built_boards):
    payload = bytes(range(256)) * 8  # every byte value, XON/XOFF and Ctrl-C included
    with Session.open(built_boards.get("mps2-an505")) as sess:
        assert sess.echo(payload) == payload
        stats = sess.device_stats()
    assert stats["bad_frames"] == 0
    assert stats["workspace_size_bytes"] == 64 * 1024
