"""A command a user gives as an option (``flash_command``), checked before it runs: split as a
shell would split it (no shell runs it), its ``{field}`` placeholders filled from the names the
template offers, its program found. Each mistake is one sentence naming the option and the fix,
never Python's KeyError, IndexError or ValueError from ``str.format``.
"""
from __future__ import annotations

import shlex
import shutil
import string
from typing import List, Mapping

from .project_files import TemplateKitError


def fill_command(option: str, command: str, fields: Mapping[str, str]) -> List[str]:
    """``command`` as an argument list with ``{name}`` replaced by ``fields[name]``; ``{{`` and
    ``}}`` are literal braces, as in Python's format strings."""
    known = ", ".join("{" + name + "}" for name in fields)
    braces = "write {{ and }} for a literal brace"
    try:
        parts = shlex.split(command)
    except ValueError as err:
        raise TemplateKitError(f"option {option}: {err} in {command!r}; close the quote (the command is split as a shell would, but no shell runs it)") from None
    if not parts:
        raise TemplateKitError(f"option {option} is empty; give the command, with {known} where they belong")
    filled = []
    for part in parts:
        try:
            pieces = list(string.Formatter().parse(part))
        except ValueError:
            raise TemplateKitError(f"option {option}: {part!r} has a lone brace; {braces}, and use {known} for the fields") from None
        for _text, field, spec, conversion in pieces:
            if field is None:
                continue
            if field not in fields or spec or conversion:
                written = "{" + field + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                raise TemplateKitError(f"option {option}: {written} is not a field it fills; use {known} ({braces})")
        filled.append(part.format(**fields))
    if shutil.which(filled[0]) is None:
        raise TemplateKitError(
            f"option {option}: its program {filled[0]!r} is not on PATH (or not an executable file); install it or give its full path"
        )
    return filled
