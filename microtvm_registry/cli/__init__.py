"""The ``microtvm`` command line.

This module only builds the parser and turns errors into one line and an exit status; each
command group lives in its own module and registers its subcommands. The CLI calls the library,
never the other way round. Heavy imports (GitPython, requests, numpy, tvm) happen inside command
handlers, so ``microtvm path NAME`` on a warm cache stays fast.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, List, Optional

from ..errors import MicrotvmError
from . import host_cmds, project_cmds, registry_cmds

PROG = "microtvm"


def build_parser() -> argparse.ArgumentParser:
    """The full parser; each command group adds its own subcommands."""
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
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in (registry_cmds, project_cmds, host_cmds):
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


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status (0 ok, 1 error, 2 usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on usage errors, as argparse does
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
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
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1
