"""C-safe names for whatever a model calls its tensors.

A model file is data a user may have downloaded, and its tensor names are arbitrary strings
(``a b``, ``y */ system("...") /*``, ``../../x``). None of them may reach C source, a Makefile
or a file name as they are: each gets an identifier we derive (letters, digits and ``_``, not a
C keyword, unique ignoring case so upper-cased macro names stay distinct), and the model's own
name is kept beside it in the model's facts, for people.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Sequence

#: Longest identifier we derive: long enough to stay recognisable, short enough for any linker.
MAX_IDENTIFIER = 48

C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if inline int long
    register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while
    _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary _Noreturn _Static_assert _Thread_local
    asm bool true false NULL main""".split()
)


def is_c_identifier(text: str) -> bool:
    return isinstance(text, str) and bool(C_IDENTIFIER.fullmatch(text)) and text not in C_KEYWORDS


def c_identifier(text: str) -> str:
    """One name made C-safe (not yet unique): other characters become ``_``."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", str(text))[:MAX_IDENTIFIER].strip("_") or "t"
    if not re.match(r"[A-Za-z_]", out):
        out = f"t_{out}"
    if out in C_KEYWORDS:
        out = f"{out}_"
    return out


def c_identifiers(names: Sequence[str], reserved: Iterable[str] = ()) -> List[str]:
    """A C-safe identifier for each of ``names``, in order, unique among themselves and apart
    from ``reserved``, ignoring case. A name that is already a safe identifier keeps itself
    unless it clashes."""
    taken = {r.lower() for r in reserved}
    out: List[str] = []
    for name in names:
        base = c_identifier(name)
        candidate, n = base, 1
        while candidate.lower() in taken:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """Text as a terminal may show it: a character that is not printable (a newline, an escape
    sequence's ESC, a bidi override) written as Python writes it in a string, so a name from a
    model, an index or a device can neither move the cursor nor start a line of its own."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   for c in text)


def c_name_map(model_names: Sequence[str], reserved: Iterable[str] = ()) -> Dict[str, str]:
    """model name -> the C-safe identifier used for it everywhere in C, files and the MLF (a name
    listed twice, an input that is also an output, gets one identifier)."""
    unique = list(dict.fromkeys(model_names))
    return dict(zip(unique, c_identifiers(unique, reserved)))
