"""Small helpers shared by the command groups: option parsing, JSON and table output."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from ..errors import MicrotvmError, OptionError
from ..formats.names import printable


SPEC_HELP = "a template: NAME, VENDOR/NAME, NAME@VERSION or NAME@SPECIFIER (e.g. host, zephyr@>=0.12,<0.19)"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json`` on a command that prints data (also accepted before the command: the
    subcommand's copy has no default, so it never overwrites one given earlier)."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    parser.set_defaults(json_output=True)


def note(message: str) -> None:
    """A note for the person at the terminal (what is being done, where a file went), on stderr;
    ``-q`` drops it. Errors and warnings do not go through here."""
    from ..progress import is_quiet

    if not is_quiet():
        print(printable(message), file=sys.stderr, flush=True)


def timeout_seconds(text: str) -> Optional[float]:
    """A --timeout value: seconds; 0 or "none" means wait forever."""
    if text.strip().lower() in ("none", "inf", "0", "0.0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"timeout must be positive (0 = no limit): {text!r}")
    return value


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


def usable_folder(path: Any, flag: str, *, create: bool = True) -> Any:
    """The folder ``flag`` names (created if missing, unless ``create`` is False: then only its
    nearest existing parent is checked, so a command that fails later leaves nothing behind); a
    file, or a folder that cannot be made or written, is one line naming the flag, before any
    work is done."""
    import os
    from pathlib import Path

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OptionError(f"{flag} {folder} is a file, not a folder; give a folder")
    if not create:
        existing = folder.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise OptionError(f"{flag} {folder}: {existing} is a file, not a folder; give a folder")
        if not os.access(existing, os.W_OK):
            raise OptionError(f"{flag} {folder}: {existing} is not writable; give a folder you can write")
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OptionError(f"{flag} {folder}: cannot create it ({err.strerror or err}); give a folder you can write") from None
    if not os.access(folder, os.W_OK):
        raise OptionError(f"{flag} {folder} is not writable; give a folder you can write")
    return folder


def session_project(path: str) -> Path:
    """The project folder a session command (run, verify) talks to, with numpy checked first:
    both are one line before anything starts."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise MicrotvmError("numpy is not installed; pip install 'microtvm-registry[tvm]'") from None
    project = Path(path)
    if not project.is_dir():
        raise MicrotvmError(f"project folder {project} does not exist; create it with microtvm create-project")
    return project


def human_size(size: int) -> str:
    """Bytes as people read them: 812 B, 4.2 KiB, 31.0 MiB."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; no colour, no box drawing, so it pipes cleanly (and no cell,
    whatever an index or a server put in it, can move the cursor or start a line)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else printable(str(c)) for c in r] for r in rows]
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
