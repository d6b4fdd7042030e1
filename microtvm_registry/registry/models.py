"""Templates, their versions and where each came from: plain data, no I/O.

A :class:`TemplateVersion` carries one exact source: a :class:`~.sources.GitSource` or
:class:`~.sources.ArchiveSource`, a :class:`PackagedSource` (inside the wheel) or a
:class:`FolderSource` (a plugin's folder).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Tuple, Union

if TYPE_CHECKING:  # pragma: no cover
    from packaging.version import Version

    from .sources import ArchiveSource, GitSource


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a template's server needs: tools on PATH, pip packages, a Python version."""

    tools: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()
    python: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class PackagedSource:
    """A template shipped inside the wheel, at ``relpath`` (``templates/host``).

    ``include`` names shared folders it builds from (``templates/common``): its server copies
    them into a generated project, and its content id covers them (see
    :func:`microtvm_registry.packaged.packaged_content_id`).
    """

    relpath: str
    include: Tuple[str, ...] = ()
    kind_key: ClassVar[str] = "packaged"  # its kind in source_kinds

    def to_table(self) -> Dict[str, Any]:
        table: Dict[str, Any] = {"packaged": self.relpath}
        if self.include:
            table["include"] = list(self.include)
        return table

    def summary(self) -> str:
        return f"packaged {self.relpath}"

    def direct_content_id(self) -> Optional[str]:
        return None  # hashed from the installed folder (packaged_content_id)


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """A folder that already exists on disk (a plugin's template inside an installed package)."""

    path: str
    kind_key: ClassVar[str] = "path"  # its kind in source_kinds

    def to_table(self) -> Dict[str, Any]:
        return {"path": self.path}

    def summary(self) -> str:
        return f"folder {self.path}"

    def direct_content_id(self) -> Optional[str]:
        return None


@dataclasses.dataclass(frozen=True)
class PluginPin:
    """What a lockfile records for a plugin's folder: the distribution that provides it (its
    content id is verified at every use)."""

    dist: str


#: Any exact source a template version can pin (source_kinds says what each kind can do).
AnySource = Union["GitSource", "ArchiveSource", PackagedSource, FolderSource]


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
    source: AnySource
    origin: Origin
    requires: Requirements = Requirements()
    description: str = ""
    platform: str = ""
    entry: Optional[str] = None
    note: Optional[str] = None
    kind: str = "template"  # or "library": C compiled into firmware (CMSIS-NN), never a server to run
    license: str = ""

    @property
    def is_library(self) -> bool:
        return self.kind == LIBRARY

    @property
    def parsed_version(self) -> "Version":
        return parse_version(self.version)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


#: The kinds of entry an index lists: templates (Project API servers) and libraries (C sources a
#: build compiles in, e.g. CMSIS-NN for ``compile --kernels cmsis-nn``).
TEMPLATE = "template"
LIBRARY = "library"


class Template:
    """A template (or library) name with its versions, newest first.

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
        kind: str = TEMPLATE,
        license: str = "",
    ) -> None:
        self.name = name
        self.description = description
        self.platform = platform
        self._versions = versions
        self._loader = loader
        self.kind = kind
        self.license = license

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


def describe_source(source: AnySource) -> str:
    """One line naming the exact source, for messages and ``microtvm show``."""
    return source.summary()


def source_to_table(source: AnySource) -> Dict[str, Any]:
    """The TOML keys that name ``source`` exactly (the inverse of index_format's parse_source)."""
    return source.to_table()


def same_source(a: AnySource, b: AnySource) -> bool:
    """True when two sources name the same bytes (a git ``ref`` is only a label and is ignored)."""
    ta, tb = source_to_table(a), source_to_table(b)
    ta.pop("ref", None)
    tb.pop("ref", None)
    return ta == tb


#: Longer version strings are refused: real ones are a few characters, and packaging turns a
#: 5000-digit number into a ValueError from int() rather than InvalidVersion.
MAX_VERSION_LENGTH = 64


def parse_version(text: str) -> "Version":
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
