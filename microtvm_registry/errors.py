"""One exception hierarchy for everything the library raises on purpose.

Every message is a single line that names the thing that is wrong and, where there is one, what
the user can do next; the CLI prints it as ``microtvm: error: <message>`` and exits 1. Code that
catches "anything this package meant to raise" catches :class:`MicrotvmError`.

The Project API wire errors (``JSONRPCError`` and friends) live in the stdlib-only server module
because templates carry a copy of it; they are not part of this tree, and the CLI handles both.
"""
from __future__ import annotations


def first_line(err: object) -> str:
    """The first line of an error (or text): what a one-line message shows of it. An error with
    no text is named by its type, so the line is never empty."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if isinstance(err, BaseException) else ""


class MicrotvmError(Exception):
    """Base class: an error the user can act on, with a one-line message."""


class SpecError(MicrotvmError):
    """A template spec (NAME, NAME@VERSION, NAME@SPECIFIER) is malformed."""


class TemplateNotFoundError(MicrotvmError):
    """No index, plugin or packaged template provides the requested name or version."""


class IndexFormatError(MicrotvmError):
    """An index file is malformed; the message names the file and the key."""


class LockfileError(MicrotvmError):
    """microtvm.lock is malformed, or --frozen found that it would change."""


class FetchError(MicrotvmError):
    """Getting a source (git, archive, index over HTTP) failed."""


class VerificationError(FetchError):
    """A commit, sha256 or content id did not match what the index or lockfile pins."""


class UnsafeSourceError(FetchError):
    """A source was refused for safety: a dangerous URL or ref, a path or link escaping its folder."""


class OfflineError(MicrotvmError):
    """Offline mode was asked for and the cache does not have what is needed."""


class CacheError(MicrotvmError):
    """The cache folder is unusable (permissions, a damaged entry that could not be repaired)."""


class TrustError(MicrotvmError):
    """A template's server would run code whose content id the user has not trusted yet."""


class ProjectError(MicrotvmError):
    """A template or generated project folder cannot be used as asked."""


class OptionError(ProjectError):
    """A project option is unknown, missing, outside its choices, or not of its declared type."""


class MissingToolError(ProjectError):
    """A tool a template declares (``requires.tools``) is not on PATH."""


class BuildError(ProjectError):
    """Building a project failed; the message carries the compiler's last lines."""


class ModelError(MicrotvmError):
    """A model cannot be compiled or used: a bad file, a shape, an operator (the message says which)."""


class SessionError(MicrotvmError):
    """A host-driven session with a device failed (bad tensor, bad frame, device error)."""


class BoardError(MicrotvmError):
    """An unknown board, or no single connected device for a board (``serial_port=auto``)."""
