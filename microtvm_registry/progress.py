"""Progress on stderr for long work (fetches, builds, flashes, tuning): tqdm, and only for a person.

A bar is shown when stderr is a terminal, and never with ``-q`` (which sets
``MICROTVM_REGISTRY_QUIET``) or when stderr is a pipe or file, so logs and scripts see no
carriage-return noise. Work that reports no counts of its own (a compiler running, git
connecting) still shows its name and the time spent, refreshed by a small thread, so a cold
fetch never sits silent.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator, Optional

QUIET_ENV = "MICROTVM_REGISTRY_QUIET"

_TRUE = {"1", "true", "yes", "on"}


def is_quiet() -> bool:
    """``-q`` was given (to this command or the one that started us)."""
    return os.environ.get(QUIET_ENV, "").strip().lower() in _TRUE


def wanted(flag: Optional[bool] = None) -> bool:
    """Whether to draw a bar: an explicit ``flag`` wins; else a terminal on stderr and not quiet."""
    if flag is not None:
        return bool(flag)
    if is_quiet():
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def activity(desc: str, *, show: Optional[bool] = None, unit: str = "it", total: Optional[float] = None) -> Iterator[Any]:
    """A bar named ``desc`` for the duration of the block; yields the tqdm bar, or None when no
    bar is wanted (callers then skip their updates). The bar is left off the screen when done."""
    if not wanted(show):
        yield None
        return
    from tqdm import tqdm

    fmt = "{desc}: {elapsed}{postfix}" if total is None and unit == "it" else None
    bar = tqdm(desc=desc, total=total, unit=unit, unit_scale=unit == "B", leave=False, file=sys.stderr, bar_format=fmt)
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.25):
            bar.refresh()

    ticker = threading.Thread(target=tick, name="microtvm-progress", daemon=True)
    ticker.start()
    try:
        yield bar
    finally:
        done.set()
        ticker.join()
        bar.close()
