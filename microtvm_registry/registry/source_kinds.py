"""Kinds of source, one object each behind one protocol, keyed by the index key that names them:
``git`` (a commit's folder), ``url`` (an archive pinned by sha256), ``packaged`` (inside the
wheel), ``path`` (a plugin's folder on disk).

Everything that depends on the kind of a source asks its kind (:func:`kind_of`): how an index or
lockfile table becomes a source and back, the one line that names it, the content id it has
without fetching, whether it names something on this machine, or, for kinds used in place, where
its folder is and what its content id is. How a kind is fetched into the cache is the fetch
stage's, keyed by the same key (``microtvm_registry.fetch.FETCHERS``). pooch's
``choose_downloader`` is the model: the caller never tests a source's class. A new kind of source
is one class here (and a fetcher, for a kind that is fetched).

Nothing heavy is imported at module level: git, archives and hashing load when a kind needs them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Mapping, Optional, Protocol, cast

if TYPE_CHECKING:  # pragma: no cover
    from .models import FolderSource, PackagedSource
    from .sources import ArchiveSource, GitSource, Source


class TableReader(Protocol):
    """What a kind needs of index_format's checker to read its keys (each error names the file
    and the key)."""

    def fail(self, key: str, problem: str) -> Exception: ...
    def get_str(self, table: Dict[str, Any], key: str, path: str, *, required: bool = False, default: Any = None) -> Any: ...
    def get_hex(self, table: Dict[str, Any], key: str, path: str, digits: int, *, required: bool) -> Optional[str]: ...
    def get_relpath(self, table: Dict[str, Any], key: str, path: str, *, required: bool, default: str = "") -> str: ...
    def get_str_list(self, table: Dict[str, Any], key: str, path: str) -> tuple: ...
    def get_tables(self, table: Dict[str, Any], key: str, path: str) -> list: ...
    def unknown(self, table: Dict[str, Any], known: Any, key: str) -> None: ...


def has_scheme(url: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url)) and not re.match(r"^[A-Za-z]:[\\/]", url)


def resolve_relative(url: str, base: Optional[str]) -> str:
    """A relative source location resolved against the index's own location."""
    if base is None or has_scheme(url) or re.match(r"^[^/\s]+@[^/\s]+:", url) or os.path.isabs(url):
        return url
    if re.match(r"^https?://", base):
        from urllib.parse import urljoin

        return urljoin(base, url)
    return str((Path(base).parent / url).resolve())


def is_local_location(url: str) -> bool:
    """True for file:// URLs and plain paths (what a remote index may not point at)."""
    if url.startswith("file:"):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        return False
    if re.match(r"^[^/\s]+@[^/\s]+:", url):  # scp-like git remote user@host:path
        return False
    return True


class SourceKind:
    """The protocol (see the module docstring); the base answers for a kind fetched into the cache."""

    key: ClassVar[str] = ""  # the index key that names the kind
    name: ClassVar[str] = ""  # what `list` and `show` call it
    in_place: ClassVar[bool] = False  # used where it is (packaged, path), not fetched into the cache

    def from_table(self, chk: TableReader, table: Dict[str, Any], path: str, base: Optional[str]) -> Any:
        raise NotImplementedError

    def to_table(self, source: Any) -> Dict[str, Any]:
        """The index / lockfile keys that name ``source`` exactly (the inverse of from_table)."""
        return source.to_table()

    def describe(self, source: Any) -> str:
        """One line naming the exact source (``git URL @ commit (ref) folder``, ...)."""
        return source.summary()

    def direct_content_id(self, source: Any) -> Optional[str]:
        """The content id the source has by construction, known without fetching or hashing."""
        return source.direct_content_id()

    def is_local(self, source: Any) -> bool:
        """Whether the source names something on this machine (which a remote index may not)."""
        return False

    def local_folder(self, source: Any) -> Optional[Path]:
        """In-place kinds: the folder (None when it is missing)."""
        return None

    def content_id(self, source: Any, folder: Path) -> str:
        """In-place kinds: the content id of the folder as it is now."""
        from ..contentid import tree_id

        return tree_id(folder)

    def installed_content_id(self, source: Any) -> Optional[str]:
        """The id recorded when microtvm-registry was installed (packaged templates of a wheel)."""
        return None

    def default_version(self) -> Optional[str]:
        """The version an index entry of this kind has when it names none (None: it must name one)."""
        return None

    def lock_source(self, source: Any, origin_name: str) -> Any:
        """What a lockfile records for this source (``origin_name``: the index or plugin it came from)."""
        return source


class GitKind(SourceKind):
    key = "git"
    name = "git"

    def from_table(self, chk: TableReader, table: Dict[str, Any], path: str, base: Optional[str]) -> "GitSource":
        from . import sources

        url = resolve_relative(chk.get_str(table, "git", path, required=True), base)
        commit = chk.get_hex(table, "commit", path, 40, required=True)
        paths = chk.get_str_list(table, "paths", path)
        if paths and "subdir" in table:
            raise chk.fail(f"{path}.paths", "give paths (top-level files and folders) or subdir, not both")
        subdir = "" if paths else chk.get_relpath(table, "subdir", path, required=True)
        ref = chk.get_str(table, "ref", path)
        tree = chk.get_hex(table, "tree", path, 40, required=True)
        extras = []
        for n, extra in enumerate(chk.get_tables(table, "extra", path)):
            epath = f"{path}.extra[{n}]"
            chk.unknown(extra, ("path", "dest", "blob"), epath)
            extras.append(
                sources.ExtraFile(
                    path=chk.get_relpath(extra, "path", epath, required=True),
                    dest=chk.get_relpath(extra, "dest", epath, required=True),
                    blob=chk.get_hex(extra, "blob", epath, 40, required=True) or "",
                )
            )
        dests = [e.dest for e in extras]
        if len(set(dests)) != len(dests):
            raise chk.fail(f"{path}.extra", "two extra files have the same dest")
        return sources.GitSource(url=url, commit=commit or "", subdir=subdir, tree=tree, ref=ref, extra_files=tuple(extras),
                                 paths=tuple(paths))

    def is_local(self, source: "GitSource") -> bool:
        return is_local_location(source.url)


class ArchiveKind(SourceKind):
    key = "url"
    name = "archive"

    def from_table(self, chk: TableReader, table: Dict[str, Any], path: str, base: Optional[str]) -> "ArchiveSource":
        from . import sources

        url = resolve_relative(chk.get_str(table, "url", path, required=True), base)
        sha256 = chk.get_hex(table, "sha256", path, 64, required=True) or ""
        subdir = chk.get_relpath(table, "subdir", path, required=False)
        tree = chk.get_hex(table, "tree", path, 40, required=True)
        return sources.ArchiveSource(url=url, sha256=sha256, subdir=subdir, tree=tree)

    def is_local(self, source: "ArchiveSource") -> bool:
        return is_local_location(source.url)


class PackagedKind(SourceKind):
    key = "packaged"
    name = "packaged"
    in_place = True

    def from_table(self, chk: TableReader, table: Dict[str, Any], path: str, base: Optional[str]) -> "PackagedSource":
        from .models import PackagedSource

        include = chk.get_str_list(table, "include", path)
        for n, inc in enumerate(include):
            chk.get_relpath({"include": inc}, "include", f"{path}.include[{n}]", required=True)
        return PackagedSource(chk.get_relpath(table, "packaged", path, required=True), include)

    def is_local(self, source: "PackagedSource") -> bool:
        return True

    def local_folder(self, source: "PackagedSource") -> Optional[Path]:
        from ..packaged import get_packaged_resource

        try:
            return get_packaged_resource(source.relpath)
        except Exception:  # noqa: BLE001 - a missing packaged folder is "no folder"; callers say what to do
            return None

    def content_id(self, source: "PackagedSource", folder: Path) -> str:
        from ..packaged import packaged_content_id

        return packaged_content_id(source.relpath, source.include)

    def installed_content_id(self, source: "PackagedSource") -> Optional[str]:
        from ..packaged import recorded_content_id

        return recorded_content_id(source.relpath)

    def default_version(self) -> Optional[str]:
        from .._version import __version__  # a packaged template is as new as the package

        return __version__


class FolderKind(SourceKind):
    key = "path"
    name = "folder"
    in_place = True

    def from_table(self, chk: TableReader, table: Dict[str, Any], path: str, base: Optional[str]) -> "FolderSource":
        from .models import FolderSource

        folder = chk.get_str(table, "path", path, required=True)
        if not os.path.isabs(folder):
            if base is None:
                raise chk.fail(f"{path}.path", f"{folder!r} must be an absolute path")
            folder = str((Path(base).parent / folder).resolve())
        return FolderSource(folder)

    def is_local(self, source: "FolderSource") -> bool:
        return True

    def local_folder(self, source: "FolderSource") -> Optional[Path]:
        path = Path(source.path)
        return path if path.is_dir() else None

    def lock_source(self, source: "FolderSource", origin_name: str) -> Any:
        from .models import PluginPin  # a plugin's folder is pinned by its distribution

        return PluginPin(origin_name)


#: Every kind, by the index key that names it (the order in which a table's keys are looked for).
KINDS: Dict[str, SourceKind] = {k.key: k for k in (GitKind(), ArchiveKind(), PackagedKind(), FolderKind())}


def kind_of(source: Any) -> SourceKind:
    """The kind of a source object (each source class names its kind's key)."""
    key = getattr(source, "kind_key", None)
    if key not in KINDS:
        raise TypeError(f"not a source: {source!r}")
    return KINDS[key]


def cached_source(source: Any) -> Optional["Source"]:
    """The source, typed as one the cache holds, when its kind is fetched into the cache; None
    for a kind used in place."""
    return None if kind_of(source).in_place else cast("Source", source)


def kind_named_in(table: Mapping[str, Any]) -> list:
    """The kinds whose key a table carries (a valid table carries exactly one)."""
    return [kind for key, kind in KINDS.items() if key in table]
