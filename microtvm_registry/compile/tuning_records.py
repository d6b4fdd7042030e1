"""Tuning records: one JSON line per measured candidate, human-readable and appendable.

A line holds the workload (operator, arguments, IR hash), the board and target, the schedule
recipe and its description, the device's count and unit, whether its output matched the default
kernel's, and the tool versions. Lines are appended and flushed one at a time under a file lock,
so several runs can share a file, Ctrl-C keeps everything measured so far, and a re-run skips
what is already there. A damaged line (a run killed mid-write) is skipped with a warning count.
"""
from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .schedules import Recipe
from ..errors import MicrotvmError


#: The longest records line read (a real one is under a kilobyte); longer ones are skipped.
MAX_LINE = 64 * 1024


class RecordsError(MicrotvmError):
    """A records file cannot be read or written."""


@dataclass(frozen=True)
class Record:
    workload: Dict[str, Any]
    kernel: str
    board: str
    target: str
    recipe: Recipe
    count: Optional[float]
    unit: str
    correct: bool
    error: Optional[float] = None

    @property
    def hash(self) -> str:
        return str(self.workload.get("hash", ""))

    def key(self) -> Tuple[str, str, str]:
        return (self.hash, self.board, self.recipe.key())

    def to_json(self) -> Dict[str, Any]:
        from .._version import __version__

        tools: Dict[str, str] = {"microtvm-registry": __version__}
        try:
            from importlib.metadata import version

            tools["apache-tvm"] = version("apache-tvm")
        except Exception:  # noqa: BLE001 - informational
            pass
        return {
            "workload": self.workload,
            "kernel": self.kernel,
            "board": self.board,
            "target": self.target,
            "schedule": self.recipe.to_json(),
            "description": self.recipe.describe(),
            "count": self.count,
            "unit": self.unit,
            "correct": self.correct,
            "max_abs_error": self.error,
            "tools": tools,
            "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Record":
        """A record from its line; ValueError (or KeyError, TypeError) for anything that is not
        one we would have written: a string where a boolean belongs, a count that is not a
        finite number, a recipe outside the space (schedules.Recipe.from_json)."""
        count = data.get("count")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, (int, float)) or not math.isfinite(count) or count < 0:
                raise ValueError(f"count {count!r} is not a finite, non-negative number")
        if not isinstance(data["correct"], bool):
            raise ValueError(f"correct {data['correct']!r} is not true or false")
        if not isinstance(data["workload"], dict) or not isinstance(data["workload"].get("hash"), str):
            raise ValueError("workload has no hash")
        return cls(
            workload=dict(data["workload"]),
            kernel=str(data["kernel"]),
            board=str(data["board"]),
            target=str(data["target"]),
            recipe=Recipe.from_json(data["schedule"]),
            count=None if count is None else float(count),
            unit=str(data.get("unit", "")),
            correct=data["correct"],
            error=data.get("max_abs_error"),
        )


class RecordsFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise RecordsError(f"--records {self.path} is a folder; name a .jsonl file")

    def read(self) -> Tuple[List[Record], int]:
        """(records, damaged lines skipped)."""
        if not self.path.exists():
            return [], 0
        records, damaged = [], 0
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                while True:
                    line = fh.readline(MAX_LINE)
                    if not line:
                        break
                    if len(line) >= MAX_LINE and not line.endswith("\n"):
                        damaged += 1  # a line no record makes: skip the rest of it without holding it
                        while True:
                            rest = fh.readline(MAX_LINE)
                            if not rest or rest.endswith("\n"):
                                break
                        continue
                    if not line.strip():
                        continue
                    try:
                        records.append(Record.from_json(json.loads(line)))
                    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
                        damaged += 1
        except OSError as err:
            raise RecordsError(f"cannot read tuning records {self.path}: {err.strerror or err}") from None
        return records, damaged

    def measured(self) -> Set[Tuple[str, str, str]]:
        return {r.key() for r in self.read()[0]}

    def append(self, record: Record) -> None:
        from ..files import update_lock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_json(), sort_keys=False) + "\n"
        try:
            with update_lock(self.path):  # in the runtime folder: no .lock file left beside the records
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as err:
            raise RecordsError(f"cannot write tuning records {self.path}: {err.strerror or err}") from None


def best(records: Iterable[Record], target: str, board: Optional[str] = None) -> Dict[str, Record]:
    """The fastest correct record per workload hash for ``target`` (and ``board`` when given)."""
    chosen: Dict[str, Record] = {}
    for r in records:
        if not r.correct or r.count is None or r.target != target or (board is not None and r.board != board):
            continue
        current = chosen.get(r.hash)
        if current is None or current.count is None or r.count < current.count or (r.count == current.count and r.recipe.is_default):
            chosen[r.hash] = r
    return chosen
