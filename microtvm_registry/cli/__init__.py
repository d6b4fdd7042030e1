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
    "registry_cmds": ("list", "show", "fetch", "path", "lock", "unlock", "sync", "trust", "cache", "index"),
    "project_cmds": ("info", "create-project", "build", "flash"),
    "host_cmds": ("run", "demo"),
    "board_cmds": ("boards", "devices", "size"),
    "compile_cmds": ("compile", "tune"),
    "verify_cmds": ("verify",),
    "export_cmds": ("export",),
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
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only results and errors: no progress, no notes on stderr"
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON (on the commands that print data)"
    )
    parser.add_argument(
        "--git-mirror",
        action="append",
        default=[],
        metavar="URL_PREFIX=LOCAL_URL",
        help="fetch git sources under URL_PREFIX from LOCAL_URL instead, repeatable (also MICROTVM_REGISTRY_GIT_MIRROR, "
        "and git_mirror in config.toml); applied as git's url.<LOCAL_URL>.insteadOf",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for group in groups:
        group.register(subparsers)
    # Users type global flags after the command too (``microtvm fetch --offline x``); accept both
    # places without letting a subcommand's default overwrite what was given before it.
    for sub in _leaf_parsers(subparsers):
        sub.add_argument("--offline", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        sub.add_argument("--git-mirror", action="append", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if not any("--json" in a.option_strings for a in sub._actions):
            # Accepted everywhere, so `microtvm --json build` is not a parse error: it says that
            # this command prints no data.
            sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _leaf_parsers(subparsers) -> List[argparse.ArgumentParser]:
    """Every parser a command line can end in (``cache list`` as well as ``cache``)."""
    found = []
    for sub in subparsers.choices.values():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        found.append(sub)
        for action in nested:
            found.extend(_leaf_parsers(action))
    return found


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
        command="path", spec=words[1], offline="--offline" in argv, verbose=False, quiet=False, json=False,
        git_mirror=[], handler=_group("registry_cmds").cmd_path, json_output=True,
    )


def _exit_now(status: int) -> None:
    """After Ctrl-C, end at once. Every ``with`` block has already cleaned up on the way here
    (servers, QEMU, staging folders); what is left are threads we do not own, such as GitPython's
    watchdog timer, which would keep the interpreter alive for the whole git timeout, and a git
    still running if the signal reached only us. End those children, flush, and leave."""
    import os
    import signal

    from ..procs import descendant_pids

    for pid in descendant_pids(os.getpid()):
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _apply_global_flags(args: argparse.Namespace) -> None:
    """-q, --offline and --git-mirror reach the library (and the processes it starts: a
    template's server adding a kernel library to a project) through the environment, the same way
    their environment variables do."""
    import os

    if getattr(args, "offline", False):
        from ..dirs import OFFLINE_ENV

        os.environ[OFFLINE_ENV] = "1"
    if args.quiet:
        from ..progress import QUIET_ENV

        os.environ[QUIET_ENV] = "1"  # progress bars and notes, in this process and its children
    if args.git_mirror:
        from ..fetch.mirrors import MIRROR_ENV, parse_mirrors

        parse_mirrors(args.git_mirror, "--git-mirror")  # a malformed one is a one-line error now, not mid-fetch
        os.environ[MIRROR_ENV] = " ".join(args.git_mirror + [os.environ.get(MIRROR_ENV, "")]).strip()


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that every ``with`` block cleans up (servers,
    QEMU, staging and tuning folders) as for Ctrl-C, instead of Python's default instant death."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the console script; returns the exit status (0 ok, 1 error, 2 usage)."""
    import signal

    if argv is None:
        argv = sys.argv[1:]
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    args = _parse_path_fast(argv)
    if args is None:
        parser = build_parser(argv)
        args = parser.parse_args(argv)  # exits 2 on usage errors, as argparse does
        if args.json and not getattr(args, "json_output", False):
            parser.error(f"`{args.command}` prints no data, so it has no --json output")
    if args.verbose:
        # Only -v pays for configuring logging; without it Python's last-resort handler still
        # prints warnings, one line each, which is all the quiet mode wants.
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    handler: Callable[[argparse.Namespace], Optional[int]] = args.handler
    try:
        _apply_global_flags(args)
        return int(handler(args) or 0)
    except KeyboardInterrupt as err:
        terminated = isinstance(err, _Terminated)
        print(f"{PROG}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        _exit_now(143 if terminated else 130)
        return 143 if terminated else 130
    except BrokenPipeError:
        # ``microtvm list --json | head``: the reader left; that is not an error worth a line.
        # Point stdout at devnull so the interpreter's final flush does not complain again.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into a line
        if isinstance(err, RecursionError) and not args.verbose:
            message = "an input (an index, a lockfile, a JSON or TOML file) is nested too deeply to read; check the file named above, or run with -v"
        elif not isinstance(err, (MicrotvmError,) + _wire_error_types()):
            if args.verbose:
                raise
            message = f"unexpected {type(err).__name__}: {err} (run with -v for a traceback)"
        else:
            if args.verbose:
                import traceback

                traceback.print_exc()
            from ..project_api.client import describe_wire_error

            message = describe_wire_error(err)
        from ..errors import BuildError
        from ..formats.names import printable

        if isinstance(err, MicrotvmError) and not isinstance(err, BuildError):
            # Our own messages are one line by design; a newline in one comes from a name it
            # quotes, so it is shown escaped rather than cutting the sentence short.
            message = str(err)

        # One line, whatever names the message quotes (a model's, a device's, an index's).
        message = printable(message.rstrip(" \n"))
        print(f"{PROG}: error: {message}", file=sys.stderr)
        if isinstance(err, BuildError):
            # The one thing worth more than a line: the compiler's own words, indented under it.
            for line in str(err).splitlines()[1:]:
                print(f"  | {printable(line.expandtabs(8))}", file=sys.stderr)
        return 1
