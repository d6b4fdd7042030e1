"""Project commands: ``info``, ``create-project``, ``build``, ``flash``.

They drive a template's or project's own server through the Project API client. The library is
imported inside the handlers so the rest of the CLI stays fast.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ProjectError
from ..formats.names import printable

from ._common import add_json_flag, add_option_flag, parse_key_values, print_json, print_table, resolve_auto_port, timeout_seconds

if TYPE_CHECKING:  # pragma: no cover
    from ..registry.models import TemplateVersion

#: Same value as project_api.client.DEFAULT_TIMEOUT_SEC (not imported: keeps the parser light).
_DEFAULT_TIMEOUT = 600.0


def _add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=_DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for each answer of the project's server (default {_DEFAULT_TIMEOUT:g}; 0 = no limit)",
    )


def _add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="store_true",
        help="trust the template's content id and run its server (for templates fetched by name)",
    )



def register(subparsers) -> None:
    """Add this group's subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "info",
        help="show a template's or project's platform and options",
        description="Start the folder's Project API server and print what server_info_query says.",
    )
    p.add_argument("target", metavar="TEMPLATE_OR_DIR", help="a template name or a template/project folder")
    add_json_flag(p)
    _add_trust(p)
    _add_timeout(p)
    p.set_defaults(handler=cmd_info)

    p = subparsers.add_parser(
        "create-project",
        help="generate a project from a template and a Model Library Format tar",
        description="Generate DIR (which must not exist) from TEMPLATE and the model in --mlf.",
    )
    p.add_argument("target", metavar="TEMPLATE", help="a template name or a template folder")
    p.add_argument("project_dir", metavar="DIR", help="the new project folder (must not exist)")
    p.add_argument("--mlf", required=True, metavar="FILE", help="the Model Library Format tar")
    p.add_argument(
        "--standalone-crt",
        metavar="DIR",
        default=None,
        help="a TVM <= 0.18 standalone_crt folder, for templates that copy from it (default: an empty folder)",
    )
    add_option_flag(p)
    _add_trust(p)
    _add_timeout(p)
    p.set_defaults(handler=cmd_create_project)

    for name, handler in (("build", cmd_build), ("flash", cmd_flash)):
        p = subparsers.add_parser(
            name,
            help=f"{name} a generated project",
            description=f"Ask the project's Project API server to {name} it.",
        )
        p.add_argument("project_dir", metavar="DIR", help="a generated project folder")
        add_option_flag(p)
        _add_timeout(p)
        p.set_defaults(handler=handler)


def written_as_path(arg: str) -> bool:
    """A name is a name: an argument is a folder only when it is written as a path (``.``,
    ``./x``, ``../x``, ``/x``, ``~/x``) or has a separator, exists, and is not shaped like a
    ``VENDOR/NAME`` template name. So ``host`` or ``apache-tvm/zephyr`` never picks up a folder
    of that name in the current directory (which anyone could have put there)."""
    import os
    import re

    if arg in (".", "..") or arg.startswith(("./", "../", "/", "~")):
        return True
    if os.sep in arg and os.path.exists(arg):
        return not re.match(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(@.*)?$", arg)
    return False


def resolve_target(arg: str, args: argparse.Namespace) -> Tuple[Path, Optional["TemplateVersion"]]:
    """A folder when written as a path (see :func:`written_as_path`); otherwise a template name,
    through the registry (verified and trusted; its tools are left to build and flash), with the
    version it resolved to."""
    if written_as_path(arg):
        path = Path(arg).expanduser()
        if path.is_dir():
            _note_untrusted_folder(path)
            return path, None
        if path.exists():
            raise ProjectError(f"{arg} is a file; give a template name, a template folder or a project folder")
        raise ProjectError(f"{arg}: no such folder; give a template name, a template folder or a project folder")
    from ..template_paths import template_for_run
    from ..dirs import is_offline
    from ..errors import SpecError, TemplateNotFoundError

    try:
        return template_for_run(arg, offline=is_offline(getattr(args, "offline", False)), trust=getattr(args, "trust", False))
    except (SpecError, TemplateNotFoundError) as err:
        if Path(arg).is_dir():
            raise type(err)(f"{err} (for the folder {arg}, write ./{arg})") from None
        if isinstance(err, SpecError) and ("/" in arg.split("@")[0].split("/", 1)[-1] or arg.endswith("/")):
            raise ProjectError(f"{arg}: no such folder, and not a template name; give a template name or an existing folder") from None
        raise


def _note_missing_tools(version: Optional["TemplateVersion"]) -> None:
    from ..template_paths import missing_tools_note
    from ._common import note

    sentence = missing_tools_note(version) if version is not None else None
    if sentence:
        note(f"microtvm: note: {sentence}")


def _note_untrusted_folder(path: Path) -> None:
    """Starting a server from a folder runs its code with no trust check: say so once, unless the
    folder is one we ship."""
    from ..packaged import shipped_root_of
    from ._common import note

    if shipped_root_of(path) is not None:
        return
    note(f"microtvm: note: running the server in {path}, a folder (not a trusted template): its code runs as you")


def _project_dir(arg: str, command: str) -> Path:
    path = Path(arg)
    if not path.is_dir():
        raise ProjectError(
            f"{arg} is not a folder; {command} takes a generated project folder (make one with microtvm create-project)"
        )
    return path


def _fmt_list(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_fmt_value(v) for v in value)
    return _fmt_value(value)


def _fmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _option_rows(options: List[Dict[str, Any]]) -> List[List[str]]:
    rows = []
    for opt in options:
        if not isinstance(opt, dict):
            continue
        rows.append(
            [
                str(opt.get("name", "")),
                str(opt.get("type") or ""),
                _fmt_value(opt.get("default")),
                _fmt_list(opt.get("required")),
                _fmt_list(opt.get("optional")),
                _fmt_list(opt.get("choices")),
                " ".join(str(opt.get("help") or "").split()),
            ]
        )
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    from ..project_api.client import instantiate_from_dir

    folder, version = resolve_target(args.target, args)
    with instantiate_from_dir(folder, timeout=args.timeout) as client:
        info = client.server_info_query()
    _note_missing_tools(version)
    if args.json:
        print_json(info)
        return 0
    print(f"folder: {printable(str(folder.absolute()))}")
    print(f"platform: {printable(str(info.get('platform_name')))}")
    print(f"is_template: {_fmt_value(bool(info.get('is_template')))}")
    if info.get("model_library_format_path"):
        print(f"model_library_format_path: {printable(str(info['model_library_format_path']))}")
    options = info.get("project_options") or []
    if not options:
        print("options: none")
        return 0
    print("options:")
    print_table(["name", "type", "default", "required-for", "optional-for", "choices", "help"], _option_rows(options))
    return 0


def cmd_create_project(args: argparse.Namespace) -> int:
    from ..project import TemplateProject

    options = parse_key_values(args.options)
    template, version = resolve_target(args.target, args)
    with TemplateProject.from_directory(template, timeout=args.timeout) as tp:
        project = tp.generate_project(args.mlf, args.project_dir, options, standalone_crt_dir=args.standalone_crt)
        project.close()
    if version is not None and version.requires.tools:
        from ..template_paths import record_template

        record_template(project.path, version)
        _note_missing_tools(version)
    print(project.path)
    return 0


def _run(args: argparse.Namespace, method: str) -> int:
    from ..project import GeneratedProject

    options = resolve_auto_port(parse_key_values(args.options))
    folder = _project_dir(args.project_dir, method)
    from ..progress import activity

    verb = {"build": "building", "flash": "flashing"}[method]
    with GeneratedProject.from_directory(folder, timeout=args.timeout) as project:
        with activity(f"{verb} {folder}"):
            getattr(project, method)(options)
    print(f"{method}: done ({printable(str(folder.absolute()))})")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    return _run(args, "build")


def cmd_flash(args: argparse.Namespace) -> int:
    return _run(args, "flash")
