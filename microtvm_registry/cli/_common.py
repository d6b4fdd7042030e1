"""Small helpers shared by the command groups: option parsing, JSON and table output."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, Iterable, List, Sequence

from ..errors import OptionError


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_option_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="K=V",
        help="a project option, repeatable (converted to the type the server declares)",
    )


def parse_key_values(pairs: Iterable[str]) -> Dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; a pair without '=' is an error."""
    result: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"option {pair!r} is not of the form KEY=VALUE")
        result[key] = value
    return result


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: List[Sequence[Any]]) -> None:
    """A plain aligned table; no colour, no box drawing, so it pipes cleanly."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


#: Where TVM's templates name a board (v0.9+: "board"; v0.8: per platform).
BOARD_OPTIONS = ("board", "arduino_board", "zephyr_board")


def resolve_auto_port(options: Dict[str, str]) -> Dict[str, str]:
    """``-o port=auto`` for templates that take a serial ``port`` and know no "auto" (TVM's
    arduino template): the one connected device that can be the board named by ``-o board=``.
    Our cortex-m template resolves its own ``serial_port=auto``."""
    value = options.get("port")
    if value is None or value.strip().lower() != "auto":
        return options
    board = next((options[k] for k in BOARD_OPTIONS if options.get(k)), None)
    if board is None:
        raise OptionError("-o port=auto needs the board to look for: add -o board=NAME (as `microtvm boards` names it)")
    from ..boards.discovery import pick_port

    return dict(options, port=pick_port(board, option="port"))
