"""Templates, their versions and where each came from: plain data, no I/O.

A :class:`TemplateVersion` carries one exact source: a :class:`~.sources.GitSource` or
:class:`~.sources.ArchiveSource`, a :class:`PackagedSource` (inside the wheel) or a
:class:`FolderSource` (a plugin's folder).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Dict, List, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a template's server needs: tools on PATH, pip packages, a Python version."""

    tools: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()
    python: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"tools": list(self.tools), "pip": list(self.pip)}
        if self.python:
            out["python"] = self.python
        return out


@dataclasses.dataclass(frozen=True)
class PackagedSource:
    """A template shipped inside the wheel, at ``relpath`` (``templates/host``).

    ``include`` names shared folders it builds from (``templates/common``): its server copies
    them into a generated project, and its content id covers them (see
    :func:`microtvm_registry.packaged.packaged_content_id`).
    """

    relpath: str
    include: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """A folder that already exists on disk (a plugin's template inside an installed package)."""

    path: str


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a template version came from; decides trust and which URLs its sources may use."""

    kind: str  # "packaged" (index shipped in the wheel), "index" (extra), "plugin", "lockfile"
    name: str  # index name, plugin distribution, or "microtvm.lock"
    location: str  # file path or URL
    trusted: bool = False
    remote: bool = False

    def describe(self) -> str:
        if self.kind == "packaged":
            return f"packaged index {self.name!r}"
        if self.kind == "index":
            return f"index {self.name!r} ({self.location})"
        if self.kind == "plugin":
            return f"plugin {self.name!r}"
        return f"{self.name} ({self.location})"


@dataclasses.dataclass(frozen=True)
class TemplateVersion:
    """One version of one template with its exact source."""

    name: str
    version: str
    source: Any  # sources.GitSource | sources.ArchiveSource | PackagedSource | FolderSource
    origin: Origin
    requires: Requirements = Requirements()
    description: str = ""
    platform: str = ""
    entry: Optional[str] = None
    note: Optional[str] = None

    @property
    def parsed_version(self):
        return parse_version(self.version)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class Template:
    """A template name with its versions, newest first.

    ``versions`` may be given as a list or built on first use by ``loader``: ``microtvm path``
    reads the whole curated index on every call but needs the versions of one template only.
    """

    def __init__(
        self,
        name: str,
        description: str,
        platform: str,
        versions: Optional[List[TemplateVersion]] = None,
        *,
        loader: Optional[Callable[[], List[TemplateVersion]]] = None,
    ) -> None:
        self.name = name
        self.description = description
        self.platform = platform
        self._versions = versions
        self._loader = loader

    @property
    def versions(self) -> List[TemplateVersion]:
        if self._versions is None:
            assert self._loader is not None
            self._versions = self._loader()
        return self._versions

    @property
    def latest(self) -> TemplateVersion:
        return self.versions[0]

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"Template({self.name!r})"


@dataclasses.dataclass
class Index:
    """One parsed index file."""

    name: str
    origin: Origin
    templates: List[Template]


def source_kind(source: Any) -> str:
    """"git", "archive", "packaged" or "folder"."""
    if isinstance(source, PackagedSource):
        return "packaged"
    if isinstance(source, FolderSource):
        return "folder"
    if hasattr(source, "commit"):
        return "git"
    return "archive"


def describe_source(source: Any) -> str:
    """One line naming the exact source, for messages and ``microtvm show``."""
    kind = source_kind(source)
    if kind == "packaged":
        return f"packaged {source.relpath}"
    if kind == "folder":
        return f"folder {source.path}"
    if kind == "git":
        text = f"git {source.url} @ {source.commit[:12]}"
        if getattr(source, "ref", None):
            text += f" ({source.ref})"
        if source.subdir:
            text += f" {source.subdir}"
        extras = getattr(source, "extra_files", ()) or ()
        if extras:
            text += " + " + ", ".join(f"{e.path} as {e.dest}" for e in extras)
        return text
    text = f"archive {source.url} sha256 {source.sha256[:12]}"
    if getattr(source, "subdir", ""):
        text += f" {source.subdir}"
    return text


def is_local_location(url: str) -> bool:
    """True for file:// URLs and plain paths (what a remote index may not point at)."""
    if url.startswith("file:"):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        return False
    if re.match(r"^[^/\s]+@[^/\s]+:", url):  # scp-like git remote user@host:path
        return False
    return True


def source_to_table(source: Any) -> Dict[str, Any]:
    """The TOML keys that name ``source`` exactly (the inverse of :func:`parse_source`)."""
    kind = source_kind(source)
    if kind == "packaged":
        table: Dict[str, Any] = {"packaged": source.relpath}
        if source.include:
            table["include"] = list(source.include)
        return table
    if kind == "folder":
        return {"path": source.path}
    from .sources import source_to_dict  # loaded already: the source object is one of its classes

    return source_to_dict(source)


def same_source(a: Any, b: Any) -> bool:
    """True when two sources name the same bytes (a git ``ref`` is only a label and is ignored)."""
    ta, tb = source_to_table(a), source_to_table(b)
    ta.pop("ref", None)
    tb.pop("ref", None)
    return ta == tb


#: Longer version strings are refused: real ones are a few characters, and packaging turns a
#: 5000-digit number into a ValueError from int() rather than InvalidVersion.
MAX_VERSION_LENGTH = 64


def parse_version(text: str):
    """``packaging.version.Version(text)``, raising InvalidVersion (never ValueError or
    OverflowError) for anything that is not a reasonable PEP 440 version."""
    from packaging.version import InvalidVersion, Version

    if not isinstance(text, str) or len(text) > MAX_VERSION_LENGTH:
        raise InvalidVersion(f"{str(text)[:20]!r}... is longer than {MAX_VERSION_LENGTH} characters")
    try:
        return Version(text)
    except (ValueError, OverflowError) as err:
        if isinstance(err, InvalidVersion):
            raise
        raise InvalidVersion(str(err)) from None
