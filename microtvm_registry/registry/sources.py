"""The exact sources a template version pins, and the safety checks on what they name.

Where a template's bytes come from, and how to get them onto disk verified and safely.

Two kinds of source, both pinned by content so that a mirror or a moved URL cannot change what
the user gets:

- :class:`GitSource`: a commit of a git repository, a folder (``subdir``) inside it whose git
  tree id must equal ``tree``, plus optional files from elsewhere in the same commit
  (:class:`ExtraFile`, each pinned by blob id; TVM v0.12+ templates need ``server.py``).
- :class:`ArchiveSource`: a tar or zip file at ``url`` whose sha256 is pinned, and a folder
  inside it (optionally pinned by ``tree``).

Everything a source names is treated as hostile until checked: transports outside
https/http/git/ssh/file (``ext::`` runs commands), option-like values (``-u...``), non-hex
commits, paths that are absolute or contain ``..``. Such input raises
:class:`~microtvm_registry.errors.UnsafeSourceError`. Getting the bytes is
:mod:`microtvm_registry.fetch`; this module does no I/O.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Union

from ..contentid import is_object_id
from ..errors import FetchError, UnsafeSourceError


#: Transports git may use for our fetches (also exported to git as GIT_ALLOW_PROTOCOL).
GIT_ALLOWED_PROTOCOLS = ("https", "http", "git", "ssh", "file")


_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

_HELPER_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.-]*)::")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

_BAD_REF_CHARS = set(" ~^:?*[\\\x7f")


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _check_rel_path(value: Any, what: str, *, allow_empty: bool) -> str:
    """Normalize a repo/folder-relative posix path; refuse absolute paths and '..'."""
    if not isinstance(value, str):
        raise UnsafeSourceError(f"{what} must be a string, got {type(value).__name__}")
    if _has_control(value) or "\\" in value:
        raise UnsafeSourceError(f"{what} {value!r} contains control characters or backslashes")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise UnsafeSourceError(f"{what} {value!r} is absolute; use a path relative to its folder")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeSourceError(f"{what} {value!r} contains '..'; it must stay inside its folder")
    if parts and parts[0].startswith("-"):
        raise UnsafeSourceError(f"{what} {value!r} looks like a command-line option")
    if not parts and not allow_empty:
        raise UnsafeSourceError(f"{what} is empty; name a file")
    return "/".join(parts)


def _check_object_id(value: Any, what: str, *, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if isinstance(value, str) and is_object_id(value.lower()):
        return value.lower()
    raise UnsafeSourceError(f"{what} {value!r} is not a full 40-hex git object id")


def url_transport(url: str) -> str:
    """The transport git would use for ``url``: https, http, git, ssh or file.

    Raises UnsafeSourceError for anything else: transport helpers (``ext::cmd``, ``fd::3``),
    unknown schemes, option-like values, ssh hosts that look like options.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeSourceError("source URL is empty")
    if _has_control(url) or url != url.strip():
        raise UnsafeSourceError(f"source URL {url!r} contains whitespace or control characters")
    if url.startswith("-"):
        raise UnsafeSourceError(f"source URL {url!r} looks like a command-line option")
    helper = _HELPER_RE.match(url)
    if helper:
        raise UnsafeSourceError(
            f"source URL {url!r} uses the git transport helper '{helper.group(1)}::', which is"
            " refused; use an https, http, git, ssh or file URL"
        )
    match = _SCHEME_RE.match(url)
    if match:
        scheme = match.group(1).lower()
        scheme = _SCHEME_ALIASES.get(scheme, scheme)
        if scheme not in GIT_ALLOWED_PROTOCOLS:
            raise UnsafeSourceError(
                f"source URL {url!r} uses transport '{scheme}', which is refused; use one of"
                f" {', '.join(GIT_ALLOWED_PROTOCOLS)}"
            )
        if scheme == "ssh":
            netloc = url[match.end() :].split("/", 1)[0]
            host = netloc.rsplit("@", 1)[-1]
            if host.startswith("-") or netloc.startswith("-"):
                raise UnsafeSourceError(f"source URL {url!r} has an option-like ssh host")
        return scheme
    # scp-like "host:path" (ssh) when a ':' comes before any '/'; else a local path.
    colon, slash = url.find(":"), url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        host = url[:colon].rsplit("@", 1)[-1]
        if host.startswith("-") or url.startswith("-"):
            raise UnsafeSourceError(f"source URL {url!r} has an option-like ssh host")
        return "ssh"
    return "file"


def _check_url(url: str, *, allow_file_urls: bool, kind: str) -> str:
    transport = url_transport(url)
    if kind == "archive" and transport not in ("https", "http", "file"):
        raise UnsafeSourceError(
            f"archive URL {url!r} uses '{transport}'; archives are fetched over https or http"
        )
    if transport == "file" and not allow_file_urls:
        raise UnsafeSourceError(
            f"source URL {url!r} names a local file, which a remote index may not do;"
            " add the index from a local path if you meant it"
        )
    return transport


@dataclasses.dataclass(frozen=True)
class ExtraFile:
    """A file from elsewhere in the same commit, copied into the template folder.

    ``path`` is its path in the repository, ``dest`` its path relative to the template folder,
    ``blob`` its git blob id (checked before anything is written).
    """

    path: str
    dest: str
    blob: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _check_rel_path(self.path, "extra file path", allow_empty=False))
        object.__setattr__(self, "dest", _check_rel_path(self.dest, "extra file dest", allow_empty=False))
        object.__setattr__(self, "blob", _check_object_id(self.blob, f"blob of extra file {self.path!r}"))


@dataclasses.dataclass(frozen=True)
class GitSource:
    """Folder ``subdir`` of ``commit`` in the git repository at ``url``.

    ``tree`` is the expected git tree id of that folder (None: not checked -- only for sources
    the user typed in by hand). ``ref`` is for people and for servers that refuse to serve a
    commit by id: it is only used as a fallback, and the commit is still checked.
    Construction refuses unsafe values (UnsafeSourceError).
    """

    url: str
    commit: str
    subdir: str
    tree: Optional[str]
    ref: Optional[str] = None
    extra_files: Tuple[ExtraFile, ...] = ()
    paths: Tuple[str, ...] = ()  # instead of subdir: these top-level files and folders, side by side
    kind_key: ClassVar[str] = "git"  # its kind in source_kinds

    def __post_init__(self) -> None:
        url_transport(self.url)
        object.__setattr__(self, "commit", _check_object_id(self.commit, "commit"))
        object.__setattr__(self, "subdir", _check_rel_path(self.subdir, "subdir", allow_empty=True))
        object.__setattr__(self, "tree", _check_object_id(self.tree, "tree", optional=True))
        if self.ref is not None:
            ref = self.ref
            if (
                not isinstance(ref, str)
                or not ref
                or ref.startswith("-")
                or _has_control(ref)
                or any(c in _BAD_REF_CHARS for c in ref)
                or ".." in ref
                or ref.endswith((".lock", "/", "."))
            ):
                raise UnsafeSourceError(f"ref {ref!r} is not a valid git ref name")
        extras = tuple(
            e if isinstance(e, ExtraFile) else ExtraFile(**dict(e)) for e in (self.extra_files or ())
        )
        dests = [e.dest for e in extras]
        if len(set(dests)) != len(dests):
            raise UnsafeSourceError(f"extra files of {self.url} at {self.commit[:12]} share a dest path")
        object.__setattr__(self, "extra_files", extras)
        paths = tuple(self.paths or ())
        for p in paths:
            if not isinstance(p, str) or _check_rel_path(p, "path", allow_empty=False) != p or "/" in p or p.startswith("."):
                raise UnsafeSourceError(f"path {p!r} of {self.url} must be one top-level file or folder name")
        if paths and (self.subdir or extras):
            raise UnsafeSourceError(f"{self.url}: give paths, or subdir (and extra files), not both")
        if len(set(paths)) != len(paths):
            raise UnsafeSourceError(f"{self.url}: paths names a file or folder twice")
        object.__setattr__(self, "paths", paths)

    def describe(self) -> str:
        where = f":{self.subdir}" if self.subdir else ""
        return f"{self.url} @ {self.commit[:12]}{where}"

    def summary(self) -> str:
        """One line naming the exact source, for messages and ``microtvm show``."""
        text = f"git {self.url} @ {self.commit[:12]}"
        if self.ref:
            text += f" ({self.ref})"
        if self.subdir:
            text += f" {self.subdir}"
        if self.paths:
            text += " " + " + ".join(self.paths)
        if self.extra_files:
            text += " + " + ", ".join(f"{e.path} as {e.dest}" for e in self.extra_files)
        return text

    def to_table(self) -> Dict[str, Any]:
        """The index / lockfile keys, in the order the lockfile shows them."""
        out: Dict[str, Any] = {"git": self.url}
        if self.ref is not None:
            out["ref"] = self.ref
        out["commit"] = self.commit
        if self.paths:
            out["paths"] = list(self.paths)
        else:
            out["subdir"] = self.subdir
        if self.tree is not None:
            out["tree"] = self.tree
        if self.extra_files:
            out["extra"] = [{"path": e.path, "dest": e.dest, "blob": e.blob} for e in self.extra_files]
        return out

    def direct_content_id(self) -> Optional[str]:
        """The folder's tree id is its content id, unless extra files are added to it (with
        ``paths``, ``tree`` is the id of the materialized folder itself)."""
        return None if self.extra_files else self.tree


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
    """Folder ``subdir`` of the tar/zip archive at ``url`` whose sha256 is ``sha256``."""

    url: str
    sha256: str
    subdir: str = ""
    tree: Optional[str] = None
    kind_key: ClassVar[str] = "url"  # its kind in source_kinds

    def __post_init__(self) -> None:
        url_transport(self.url)
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256.lower()):
            raise UnsafeSourceError(f"sha256 {self.sha256!r} of {self.url} is not 64 hex digits")
        object.__setattr__(self, "sha256", self.sha256.lower())
        object.__setattr__(self, "subdir", _check_rel_path(self.subdir, "subdir", allow_empty=True))
        object.__setattr__(self, "tree", _check_object_id(self.tree, "tree", optional=True))

    def describe(self) -> str:
        where = f":{self.subdir}" if self.subdir else ""
        return f"{self.url} (sha256 {self.sha256[:12]}){where}"

    def summary(self) -> str:
        """One line naming the exact source, for messages and ``microtvm show``."""
        text = f"archive {self.url} sha256 {self.sha256[:12]}"
        if self.subdir:
            text += f" {self.subdir}"
        return text

    def to_table(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"url": self.url, "sha256": self.sha256}
        if self.subdir:
            out["subdir"] = self.subdir
        if self.tree is not None:
            out["tree"] = self.tree
        return out

    def direct_content_id(self) -> Optional[str]:
        return self.tree


Source = Union[GitSource, ArchiveSource]


def _canonical(source: Source) -> Dict[str, Any]:
    """What a fetched source's bytes depend on: its table without the location (``git``/``url``)
    or labels (``ref``), with its kind."""
    table = source.to_table()
    for label in ("git", "url", "ref"):
        table.pop(label, None)
    table.setdefault("subdir", "")
    table.setdefault("tree", None)
    if source.kind_key == "git":
        table["extra_files"] = sorted([e["path"], e["dest"], e["blob"]] for e in table.pop("extra", []))
    return {"kind": "git" if source.kind_key == "git" else "archive", **table}


def source_key(source: Source) -> str:
    """sha256 of the source's canonical, URL-independent description.

    What is pinned (commit, folder, ids) decides the content, not where it is served from, so a
    mirror URL or a moved repository maps to the same cache entry.
    """
    text = json.dumps(_canonical(source), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_to_dict(source: Source) -> Dict[str, Any]:
    """A TOML/JSON-friendly mapping using the index's keys, in the order the lockfile shows them
    (``git``, ``ref``, ``commit``, ``subdir``, ``tree``, ``extra`` = list of {path, dest, blob};
    or ``url``, ``sha256``, ``subdir``, ``tree``); inverse of source_from_dict."""
    return source.to_table()


def source_from_dict(data: Mapping[str, Any]) -> Source:
    """Build a source from index/lockfile keys: ``git``+``commit`` or ``url``+``sha256``."""
    if "git" in data:
        raw = data.get("extra", data.get("extra_files", ()))
        extras = tuple(ExtraFile(e["path"], e["dest"], e["blob"]) for e in raw)
        return GitSource(
            url=data["git"],
            commit=data.get("commit", ""),
            subdir=data.get("subdir", ""),
            tree=data.get("tree"),
            ref=data.get("ref"),
            extra_files=extras,
        )
    if "url" in data:
        return ArchiveSource(
            url=data["url"], sha256=data.get("sha256", ""), subdir=data.get("subdir", ""), tree=data.get("tree")
        )
    raise FetchError("source has neither 'git' nor 'url'; give git+commit+subdir or url+sha256")


def validate_source(source: Source, *, allow_file_urls: bool = True) -> None:
    """Check a source before fetching it (construction already checked the rest)."""
    _check_url(source.url, allow_file_urls=allow_file_urls, kind="git" if source.kind_key == "git" else "archive")
