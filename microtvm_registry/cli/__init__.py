"""The ``microtvm`` command line.

This module only builds the parser and turns errors into one line and an exit status; each
command group lives in its own module and registers its subcommands. The CLI calls the library,
never the other way round. Heavy imports (GitPython, requests, numpy, tvm) happen inside command
handlers, so ``microtvm path NAME`` on a warm cache stays fast.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from ..errors import MicrotvmError

PROG = "microtvm"


#: Command group modules and the subcommands each adds. Knowing the names without importing the
#: modules lets a command load and build only its own group.
GROUPS = {
    "registry_cmds": ("list", "show", "fetch", "path", "lock", "sync", "trust", "cache", "index"),
    "project_cmds": ("info", "create-project", "build", "flash"),
    "host_cmds": ("run", "demo"),
    "board_cmds": ("boards", "devices"),
    "compile_cmds": ("compile", "tune"),
}


def _group(name: str):
    import importlib

    return importlib.import_module(f"{__name__}.{name}")


def _command_in(argv: List[str]) -> Optional[str]:
    """The subcommand a command line names: the first word that is not a (global) flag."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser; each command group adds its own subcommands.

    Given ``argv`` that names a known command, only that command's group is registered:
    building every subparser costs more than some warm commands (``microtvm path``) take to
    run. Help, usage errors and unknown commands get the full parser.
    """
    command = _command_in(argv) if argv is not None else None
    groups = [_group(g) for g, commands in GROUPS.items() if command in commands] or [_group(g) for g in GROUPS]
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="microTVM template projects: find, fetch, pin, and drive them via the Project API.",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="never touch the network; use only what is cached (also MICROTVM_REGISTRY_OFFLINE=1)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log details, and show tracebacks on errors"
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in groups:
        group.register(subparsers)
    # Users type global flags after the command too (``microtvm fetch --offline x``); accept both
    # places without letting a subcommand's default overwrite what was given before it.
    for sub in subparsers.choices.values():
        sub.add_argument("--offline", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _wire_error_types() -> tuple:
    """Project API errors come from the stdlib-only server module; import it only when needed."""
    try:
        from ..project_api import server

        return (server.JSONRPCError,)
    except Exception:  # pragma: no cover - the server module is part of the package
        return ()


def _parse_path_fast(argv: List[str]) -> Optional[argparse.Namespace]:
    """``microtvm [--offline] path SPEC``, the form shells run inside ``$(...)``, parsed by hand.

    Building argparse's parsers costs about as much as the rest of a warm ``path`` does, so
    the one plain form skips it. Anything else (other flags, --help, a missing or extra word)
    returns None and goes through argparse as usual, so behaviour and errors are unchanged.
    """
    words = [w for w in argv if w != "--offline"]
    if len(words) != 2 or words[0] != "path" or words[1].startswith("-"):
        return None
    return argparse.Namespace(
        command="path", spec=words[1], offline="--offline" in argv, verbose=False, handler=_group("registry_cmds").cmd_path
    )


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status (0 ok, 1 error, 2 usage)."""
    if argv is None:
        argv = sys.argv[1:]
    args = _parse_path_fast(argv)
    if args is None:
        parser = build_parser(argv)
        args = parser.parse_args(argv)  # exits 2 on usage errors, as argparse does
    if args.verbose:
        # Only -v pays for configuring logging; without it Python's last-resort handler still
        # prints warnings, one line each, which is all the quiet mode wants.
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], Optional[int]] = args.handler
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # ``microtvm list --json | head``: the reader left; that is not an error worth a line.
        # Point stdout at devnull so the interpreter's final flush does not complain again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into a line
        if not isinstance(err, (MicrotvmError,) + _wire_error_types()):
            if args.verbose:
                raise
            message = f"unexpected {type(err).__name__}: {err} (run with -v for a traceback)"
        else:
            if args.verbose:
                import traceback

                traceback.print_exc()
            from ..project_api.client import describe_wire_error

            message = describe_wire_error(err)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
