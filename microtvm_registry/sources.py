"""Where a template's bytes come from, and how to get them onto disk verified and safely.

Two kinds of source, both pinned by content so that a mirror or a moved URL cannot change what
the user gets:

- :class:`GitSource`: a commit of a git repository, a folder (``subdir``) inside it whose git
  tree id must equal ``tree``, plus optional files from elsewhere in the same commit
  (:class:`ExtraFile`, each pinned by blob id; TVM v0.12+ templates need ``server.py``).
- :class:`ArchiveSource`: a tar or zip file at ``url`` whose sha256 is pinned, and a folder
  inside it (optionally pinned by ``tree``).

Git goes through the git command line (driven by GitPython, imported lazily), so the user's git
configuration applies -- ``url.<base>.insteadOf`` mirrors, proxies, credentials. We never clone:
a temporary bare repository fetches only the one commit at depth 1 without blobs
(``--filter=blob:none``), git itself checks the commit and the folder's tree id, then only the
blobs of that folder (and the extra files) are fetched in one request and written out by us from
``git cat-file`` -- not by ``git checkout``, whose eol/attribute/LFS filters could change bytes.

Everything a source names is treated as hostile until checked: transports outside
https/http/git/ssh/file (``ext::`` runs commands), option-like values (``-u...``), non-hex
commits, paths that are absolute or contain ``..``, archive members or symlinks that escape the
target folder, device files. Such input raises :class:`~microtvm_registry.errors.UnsafeSourceError`.
Sources from a remote index are fetched with ``allow_file_urls=False`` so an index cannot read
local files.

Nothing here imports git, requests or tqdm at module import time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .contentid import is_object_id, tree_id
from .errors import FetchError, UnsafeSourceError, VerificationError, first_line

__all__ = [
    "ExtraFile",
    "GitSource",
    "ArchiveSource",
    "Source",
    "source_key",
    "source_to_dict",
    "source_from_dict",
    "validate_source",
    "url_transport",
    "fetch_source",
    "fetch_git",
    "fetch_archive",
    "check_links_inside",
    "GIT_ALLOWED_PROTOCOLS",
]

#: Transports git may use for our fetches (also exported to git as GIT_ALLOW_PROTOCOL).
GIT_ALLOWED_PROTOCOLS = ("https", "http", "git", "ssh", "file")
_SCHEME_ALIASES = {"git+ssh": "ssh", "ssh+git": "ssh"}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HELPER_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+.-]*)::")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_BAD_REF_CHARS = set(" ~^:?*[\\\x7f")
#: Overall limit for one git command (a hung server must not hang us forever).
GIT_TIMEOUT_ENV = "MICROTVM_REGISTRY_GIT_TIMEOUT"
_DEFAULT_GIT_TIMEOUT = 1800.0


# --------------------------------------------------------------------------------------------
# Validation helpers


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


# --------------------------------------------------------------------------------------------
# Source descriptions


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

    def describe(self) -> str:
        where = f":{self.subdir}" if self.subdir else ""
        return f"{self.url} @ {self.commit[:12]}{where}"


@dataclasses.dataclass(frozen=True)
class ArchiveSource:
    """Folder ``subdir`` of the tar/zip archive at ``url`` whose sha256 is ``sha256``."""

    url: str
    sha256: str
    subdir: str = ""
    tree: Optional[str] = None

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


Source = Union[GitSource, ArchiveSource]


def _canonical(source: Source) -> Dict[str, Any]:
    if isinstance(source, GitSource):
        return {
            "kind": "git",
            "commit": source.commit,
            "subdir": source.subdir,
            "tree": source.tree,
            "extra_files": sorted([e.path, e.dest, e.blob] for e in source.extra_files),
        }
    if isinstance(source, ArchiveSource):
        return {"kind": "archive", "sha256": source.sha256, "subdir": source.subdir, "tree": source.tree}
    raise TypeError(f"not a source: {source!r}")


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
    if isinstance(source, GitSource):
        out: Dict[str, Any] = {"git": source.url}
        if source.ref is not None:
            out["ref"] = source.ref
        out.update(commit=source.commit, subdir=source.subdir)
        if source.tree is not None:
            out["tree"] = source.tree
        if source.extra_files:
            out["extra"] = [
                {"path": e.path, "dest": e.dest, "blob": e.blob} for e in source.extra_files
            ]
        return out
    out = {"url": source.url, "sha256": source.sha256}
    if source.subdir:
        out["subdir"] = source.subdir
    if source.tree is not None:
        out["tree"] = source.tree
    return out


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
    kind = "git" if isinstance(source, GitSource) else "archive"
    _check_url(source.url, allow_file_urls=allow_file_urls, kind=kind)


# --------------------------------------------------------------------------------------------
# Filesystem safety


def _inside(root: str, candidate: str) -> bool:
    return candidate == root or candidate.startswith(root.rstrip(os.sep) + os.sep)


def check_links_inside(folder: Union[str, Path]) -> None:
    """Refuse any symlink under ``folder`` whose target is absolute or resolves outside it."""
    root = os.path.realpath(folder)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            rel = os.path.relpath(path, root)
            lexical = os.path.normpath(os.path.join(os.path.dirname(path), target))
            if (
                os.path.isabs(target)
                or not _inside(root, lexical)
                or not _inside(root, os.path.realpath(path))
            ):
                raise UnsafeSourceError(
                    f"symlink {rel} -> {target} points outside the template folder; refusing it"
                )


def _safe_parts(name: str, what: str) -> Optional[List[str]]:
    """Split an archive member / tree path; None for the root itself; refuse escapes."""
    if "\0" in name or "\\" in name:
        raise UnsafeSourceError(f"{what} {name!r} contains a NUL or backslash; refusing the archive")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeSourceError(f"{what} {name!r} is an absolute path; refusing it")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeSourceError(f"{what} {name!r} contains '..'; refusing it")
    return parts or None


def _mkdirs(root: Path, parts: Sequence[str]) -> Path:
    """Create root/parts... as real folders (never through a symlink)."""
    current = root
    for part in parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeSourceError(f"{current.relative_to(root)} is both a file and a folder; refusing it")
    return current


def _write_file(root: Path, parts: Sequence[str], chunks: Iterable[bytes], executable: bool) -> None:
    parent = _mkdirs(root, parts[:-1])
    path = parent / parts[-1]
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            raise UnsafeSourceError(f"{'/'.join(parts)} is both a file and a folder; refusing it")
        os.unlink(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o755 if executable else 0o644)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    os.chmod(path, 0o755 if executable else 0o644)


def _make_links(root: Path, links: Sequence[Tuple[List[str], str]]) -> None:
    """Create symlinks last (so nothing is ever written through one), refusing escapes."""
    real_root = os.path.realpath(root)
    for parts, target in links:
        rel = "/".join(parts)
        if not target or "\0" in target or os.path.isabs(target) or target.startswith("/"):
            raise UnsafeSourceError(f"symlink {rel} -> {target} is absolute; refusing it")
        parent = _mkdirs(root, parts[:-1])
        lexical = os.path.normpath(os.path.join(real_root, *parts[:-1], target))
        if not _inside(real_root, lexical):
            raise UnsafeSourceError(f"symlink {rel} -> {target} points outside the template folder")
        path = parent / parts[-1]
        if os.path.lexists(path):
            raise UnsafeSourceError(f"{rel} appears twice (a symlink and a file); refusing it")
        os.symlink(target, path)
    check_links_inside(root)


# --------------------------------------------------------------------------------------------
# Progress


def _want_progress(progress: Optional[bool]) -> bool:
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Git


def _git_env(git_dir: Path) -> Dict[str, str]:
    return {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(GIT_ALLOWED_PROTOCOLS),
        "GIT_DIR": str(git_dir),
        "GIT_OBJECT_DIRECTORY": str(git_dir / "objects"),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "",
        "GIT_NAMESPACE": "",
        "LC_ALL": "C",
        "LANGUAGE": "C",
        # ssh: never ask questions on a terminal we do not own.
        "GIT_SSH_VARIANT": os.environ.get("GIT_SSH_VARIANT", "auto"),
    }


def _git_timeout() -> float:
    try:
        return float(os.environ.get(GIT_TIMEOUT_ENV, _DEFAULT_GIT_TIMEOUT))
    except ValueError:
        return _DEFAULT_GIT_TIMEOUT


class _Git:
    """Runs git commands (through GitPython's command layer) in one temporary bare repository."""

    def __init__(self, git_dir: Path, progress: bool, label: str) -> None:
        import git as gitpython  # lazy: keep warm paths free of GitPython

        self._gitpython = gitpython
        self.git_dir = git_dir
        self.env = _git_env(git_dir)
        self.cmd = gitpython.Git(str(git_dir.parent))
        self.progress = progress
        self.label = label

    def run(
        self,
        *args: str,
        stdin: Optional[bytes] = None,
        binary: bool = False,
        show_progress: bool = False,
    ) -> Tuple[int, Union[str, bytes], str]:
        """Run ``git ARGS``; return (status, stdout, stderr). Never raises on a git failure."""
        import tempfile

        command = ["git", *args]
        istream = None
        if stdin is not None:
            istream = tempfile.TemporaryFile()
            istream.write(stdin)
            istream.seek(0)
        try:
            if show_progress and self.progress:
                return self._run_with_progress(command, istream)
            status, out, err = self.cmd.execute(
                command,
                env=self.env,
                istream=istream,
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=not binary,
                kill_after_timeout=_git_timeout(),
            )
            return status, out, err if isinstance(err, str) else err.decode("utf-8", "replace")
        except self._gitpython.exc.GitCommandNotFound as exc:
            raise FetchError("git is not installed or not on PATH; install git to fetch git sources") from exc
        finally:
            if istream is not None:
                istream.close()

    def _run_with_progress(self, command: List[str], istream) -> Tuple[int, str, str]:
        from git.cmd import handle_process_output
        from git.util import RemoteProgress
        from tqdm import tqdm

        bar = tqdm(desc=self.label, unit="obj", leave=False, file=sys.stderr)

        class _Progress(RemoteProgress):
            def update(self, op_code, cur_count, max_count=None, message=""):
                if op_code & RemoteProgress.RECEIVING:
                    if max_count:
                        bar.total = int(max_count)
                    bar.n = int(cur_count or 0)
                    if message:
                        bar.set_postfix_str(message.strip(", "))
                    bar.refresh()

        progress = _Progress()
        proc = self.cmd.execute(command, env=self.env, istream=istream, as_process=True)
        try:
            handle_process_output(
                proc, None, progress.new_message_handler(), None, kill_after_timeout=_git_timeout()
            )
            status = proc.proc.wait() if proc.proc is not None else 1
        finally:
            bar.close()
        err = "\n".join(progress.error_lines + progress.other_lines)
        return status, "", err


def _git_reason(text: str) -> str:
    """The line of git's stderr that says why: its last ``fatal:``/``error:`` line (git follows
    those with advice such as "...and the repository exists."), else its last line."""
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("warning:")]
    reasons = [l for l in lines if l.startswith(("fatal:", "error:"))]
    return (reasons or lines or ["git failed without a message"])[-1]


_UNREACHABLE = (
    "could not resolve host",
    "unable to look up",
    "unable to connect",
    "connection refused",
    "connection timed out",
    "failed to connect",
    "could not read from remote repository",
    "couldn't connect",
    "network is unreachable",
    "transport '",
    "unsupported protocol",
)
_NO_COMMIT = ("not our ref", "no such remote ref", "couldn't find remote ref", "unadvertised object")


def _commit_present(g: _Git, commit: str) -> bool:
    status, out, _ = g.run("cat-file", "-t", commit)
    return status == 0 and str(out).strip() == "commit"


def _fetch_args(g: _Git) -> List[str]:
    return ["-c", "fetch.writeCommitGraph=false", "fetch", "--no-tags", "--no-write-fetch-head",
            "--recurse-submodules=no", "--progress" if g.progress else "--quiet"]


def _new_repo(work: Path, name: str, progress: bool, label: str) -> _Git:
    g = _Git(work / name, progress, label)
    status, _, err = g.run("init", "--quiet", "--bare", "--template=", str(g.git_dir))
    if status != 0:
        raise FetchError(f"git init failed in {work}: {_git_reason(err)}")
    return g


def _fetch_commit(g: _Git, url: str, source: GitSource) -> Optional[str]:
    """Fetch the commit by id at depth 1 without blobs. Returns None, or git's error text."""
    status, _, err = g.run(*_fetch_args(g), "--depth=1", "--filter=blob:none", "--", url,
                           source.commit, show_progress=True)
    if status == 0 and _commit_present(g, source.commit):
        return None
    low = err.lower()
    if any(s in low for s in _UNREACHABLE) and not any(s in low for s in _NO_COMMIT):
        raise FetchError(f"could not fetch {url}: {_git_reason(err)}; check the URL and your network")
    return err or "the commit did not arrive"


def _fetch_full(g: _Git, url: str, source: GitSource, first_error: str) -> None:
    """Fallback for servers that will not give out objects by id (old protocol, no
    allowAnySHA1InWant): fetch the ref people named, with all its blobs (they could not be
    asked for by id either), deepening to its whole history if the pinned commit is older than
    its tip, and check that the pinned commit is really there."""
    status, err = 1, first_error
    if source.ref:
        status, _, err = g.run(*_fetch_args(g), "--depth=1", "--", url, source.ref, show_progress=True)
        if status == 0 and not _commit_present(g, source.commit):
            status, _, err = g.run(*_fetch_args(g), "--unshallow", "--", url, source.ref, show_progress=True)
        if status == 0 and _commit_present(g, source.commit):
            return
        if status == 0:
            raise VerificationError(
                f"ref {source.ref} of {url} does not contain commit {source.commit};"
                " the index entry is wrong or the ref was rewritten"
            )
    else:  # maybe only the filter bothered the server
        status, _, err = g.run(*_fetch_args(g), "--depth=1", "--", url, source.commit, show_progress=True)
        if status == 0 and _commit_present(g, source.commit):
            return
    if any(s in (first_error + err).lower() for s in _NO_COMMIT):
        raise VerificationError(
            f"commit {source.commit} is not available from {url} ({_git_reason(first_error)});"
            " check the index entry, or give its ref"
        )
    raise FetchError(f"could not fetch {source.commit[:12]} from {url}: {_git_reason(err)}")


def _is_shallow(g: _Git) -> bool:
    return (g.git_dir / "shallow").exists()


def _rev_parse(g: _Git, rev: str) -> Optional[str]:
    status, out, _ = g.run("rev-parse", "--verify", "--quiet", "--end-of-options", rev)
    return str(out).strip() if status == 0 else None


def _ls_tree(g: _Git, tree: str) -> List[Tuple[str, str, str, str]]:
    """(mode, type, oid, path) for every blob/link/gitlink under ``tree``, recursively."""
    status, out, err = g.run("ls-tree", "-r", "-z", "--full-tree", tree, binary=True)
    if status != 0:
        raise FetchError(f"git ls-tree {tree} failed: {_git_reason(err)}")
    entries = []
    for record in bytes(out).split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split()
        entries.append((mode, kind, oid, os.fsdecode(path)))
    return entries


def _fetch_blobs(g: _Git, url: str, tree: str, extra_oids: Sequence[str]) -> None:
    status, out, err = g.run("rev-list", "--objects", "--missing=print", tree)
    if status != 0:
        raise FetchError(f"git rev-list {tree} failed: {_git_reason(err)}")
    missing = [line[1:].split()[0] for line in str(out).splitlines() if line.startswith("?")]
    if not missing:
        return  # the server ignored the filter: everything is here
    wanted = sorted(set(missing) | set(extra_oids))
    status, _, err = g.run(
        "-c", "fetch.negotiationAlgorithm=noop", "fetch", "--no-tags", "--no-write-fetch-head",
        "--recurse-submodules=no", "--filter=blob:none", "--stdin",
        "--progress" if g.progress else "--quiet", "--", url,
        stdin=("\n".join(wanted) + "\n").encode(), show_progress=True,
    )
    if status != 0:
        raise _BlobFetchRefused(_git_reason(err))


class _BlobFetchRefused(Exception):
    pass


def _read_blobs(g: _Git, oids: Sequence[str]) -> Dict[str, bytes]:
    if not oids:
        return {}
    status, out, err = g.run("cat-file", "--batch", stdin=("\n".join(oids) + "\n").encode(), binary=True)
    if status != 0:
        raise FetchError(f"git cat-file failed: {_git_reason(err)}")
    data = bytes(out)
    blobs: Dict[str, bytes] = {}
    pos = 0
    for oid in oids:
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        if len(header) != 3 or header[1] != b"blob":
            raise FetchError(f"object {oid} is missing from the fetched repository")
        size = int(header[2])
        blobs[header[0].decode()] = data[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
    return blobs


def _staging_for(source: "Source", dest: Union[str, Path], allow_file_urls: bool, prefix: str) -> Tuple[Path, Path]:
    """Check ``source`` and ``dest`` before any network work, and make a staging folder beside
    ``dest`` (same filesystem, so the finished folder moves into place with one rename)."""
    import tempfile

    dest = Path(os.path.abspath(dest))
    validate_source(source, allow_file_urls=allow_file_urls)
    if os.path.lexists(dest):
        raise FetchError(f"fetch target {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest, Path(tempfile.mkdtemp(prefix=prefix, dir=dest.parent))


def fetch_git(
    source: GitSource,
    dest: Union[str, Path],
    *,
    allow_file_urls: bool = True,
    progress: Optional[bool] = None,
) -> None:
    """Fetch ``source`` into the new folder ``dest`` (which must not exist), verified.

    Verifies: the commit exists, ``subdir`` at that commit has tree id ``source.tree``, each extra
    file has its pinned blob id, no symlink escapes. Raises UnsafeSourceError, VerificationError
    or FetchError; on failure ``dest`` does not exist.
    """
    dest, work = _staging_for(source, dest, allow_file_urls, ".git-")
    try:
        label = f"fetch {source.url}"
        g = _new_repo(work, "repo.git", _want_progress(progress), label)
        # insteadOf may rewrite the URL (a mirror): the rewritten one must be safe too.
        status, out, _ = g.run("ls-remote", "--get-url", "--", source.url)
        effective = str(out).strip() if status == 0 and str(out).strip() else source.url
        if effective != source.url:
            url_transport(effective)
        error = _fetch_commit(g, source.url, source)
        if error is not None:
            g = _new_repo(work, "full.git", g.progress, label)
            _fetch_full(g, source.url, source, error)
        where = f"{source.commit}:{source.subdir}" if source.subdir else f"{source.commit}^{{tree}}"
        tree = _rev_parse(g, where)
        if tree is None:
            raise VerificationError(
                f"commit {source.commit[:12]} of {source.url} has no folder {source.subdir!r};"
                " the index entry is wrong"
            )
        if source.tree is not None and tree != source.tree:
            raise VerificationError(
                f"folder {source.subdir!r} of {source.url} at {source.commit[:12]} has tree {tree},"
                f" not {source.tree} as pinned; refusing it"
            )
        extras: List[Tuple[ExtraFile, str]] = []
        for extra in source.extra_files:
            found = _rev_parse(g, f"{source.commit}:{extra.path}")
            if found != extra.blob:
                raise VerificationError(
                    f"extra file {extra.path} of {source.url} at {source.commit[:12]} is"
                    f" {found or 'missing'}, not blob {extra.blob} as pinned; refusing it"
                )
            extras.append((extra, extra.blob))
        entries = _ls_tree(g, tree)
        for mode, kind, oid, path in entries:
            if kind != "blob":
                raise FetchError(
                    f"{source.describe()} contains a submodule at {path}; submodules are not supported"
                )
        try:
            # rev-list on the folder's tree reports missing (promised) blobs with '?'.
            _fetch_blobs(g, source.url, tree, [oid for _, oid in extras])
        except _BlobFetchRefused as exc:
            # The server will not send blobs by id: fetch whole commits in a fresh repository
            # (no remembered filter) and read the files from there.
            g = _new_repo(work, "blobs.git", g.progress, label)
            _fetch_full(g, source.url, source, str(exc))
            if _rev_parse(g, where) != tree:
                raise FetchError(f"could not fetch the files of {source.describe()}: {exc}") from None
        oids = sorted({oid for _, _, oid, _ in entries} | {oid for _, oid in extras})
        blobs = _read_blobs(g, oids)
        out_dir = work / "out"
        out_dir.mkdir()
        links: List[Tuple[List[str], str]] = []
        for mode, _, oid, path in entries:
            parts = _safe_parts(path, "path")
            if parts is None or ".git" in parts:
                raise UnsafeSourceError(f"{source.describe()} has an unsafe path {path!r}")
            if mode == "120000":
                links.append((parts, os.fsdecode(blobs[oid])))
            else:
                _write_file(out_dir, parts, [blobs[oid]], executable=(mode == "100755"))
        _make_links(out_dir, links)
        actual = tree_id(out_dir)
        if actual != tree:
            raise VerificationError(
                f"materialized {source.describe()} hashes to {actual}, not {tree}; refusing it"
            )
        for extra, oid in extras:
            parts = extra.dest.split("/")
            if os.path.lexists(out_dir.joinpath(*parts)):
                raise FetchError(
                    f"extra file {extra.path} would overwrite {extra.dest} in {source.describe()}"
                )
            _write_file(out_dir, parts, [blobs[oid]], executable=False)
        check_links_inside(out_dir)
        os.rename(out_dir, dest)
    finally:
        _rmtree(work)


# --------------------------------------------------------------------------------------------
# Archives


def _rmtree(path: Union[str, Path]) -> None:
    """Remove a tree even if parts of it were made read-only; a vanished tree is fine."""
    import shutil

    try:
        if not os.path.lexists(path):
            return
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
            return
        os.chmod(path, 0o755)
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                sub = os.path.join(dirpath, name)
                if not os.path.islink(sub):
                    os.chmod(sub, 0o755)
        shutil.rmtree(path)
    except FileNotFoundError:
        pass


class _Incomplete(Exception):
    pass


def _download(
    url: str,
    target: Path,
    *,
    expected_sha256: str,
    progress: bool,
    timeout: Tuple[float, float],
    retries: int,
    backoff: float,
) -> None:
    """Stream ``url`` to ``target`` while hashing; retry transient failures; check sha256."""
    if url_transport(url) == "file":
        local = url[len("file://"):] if url.startswith("file://") else url
        digest = hashlib.sha256()
        try:
            with open(local, "rb") as src, open(target, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
        except OSError as exc:
            raise FetchError(f"could not read archive {url}: {exc.strerror}") from exc
        _check_sha256(url, digest.hexdigest(), expected_sha256)
        return

    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    last_error = ""
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * (2 ** (attempt - 1)))
            digest = hashlib.sha256()
            try:
                with session.get(url, stream=True, timeout=timeout) as response:
                    if response.status_code != 200:
                        raise FetchError(
                            f"could not download {url}: HTTP {response.status_code}"
                            " (check the URL; the server may be down)"
                        )
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    bar = None
                    if progress:
                        from tqdm import tqdm

                        bar = tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                                   leave=False, file=sys.stderr)
                    received = 0
                    try:
                        with open(target, "wb") as out:
                            for chunk in response.iter_content(chunk_size=1 << 16):
                                digest.update(chunk)
                                out.write(chunk)
                                received += len(chunk)
                                if bar is not None:
                                    bar.update(len(chunk))
                    finally:
                        if bar is not None:
                            bar.close()
                    if total is not None and received != total:
                        raise _Incomplete(f"got {received} of {total} bytes")
                _check_sha256(url, digest.hexdigest(), expected_sha256)
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, _Incomplete) as exc:
                last_error = _short_error(exc)
    finally:
        session.close()
    raise FetchError(f"could not download {url} after {retries + 1} attempts: {last_error}")


def _short_error(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "the server timed out"
    return first_line(exc)[:200]


def _check_sha256(url: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise VerificationError(
            f"archive {url} has sha256 {actual}, not {expected} as pinned; refusing it"
        )


def _extract_tar(archive: Path, target: Path) -> None:
    import tarfile

    links: List[Tuple[List[str], str]] = []
    written: Dict[str, bool] = {}
    data_filter = getattr(tarfile, "data_filter", None)
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise FetchError(f"archive is neither a zip nor a readable tar file: {exc}") from exc
    with tf:
        for member in tf:
            parts = _safe_parts(member.name, "archive member")
            if data_filter is not None:  # a second opinion from the stdlib where it exists
                try:
                    data_filter(member, str(target))
                except tarfile.FilterError as exc:
                    raise UnsafeSourceError(f"archive member {member.name!r} refused: {exc}") from None
            if parts is None:
                continue
            if member.isdir():
                _mkdirs(target, parts)
            elif member.isreg():
                src = tf.extractfile(member)
                assert src is not None
                _write_file(target, parts, iter(lambda: src.read(1 << 20), b""), bool(member.mode & 0o100))
                written["/".join(parts)] = bool(member.mode & 0o100)
            elif member.issym():
                links.append((parts, member.linkname))
            elif member.islnk():
                link_parts = _safe_parts(member.linkname, "hard link target")
                key = "/".join(link_parts or [])
                if key not in written:
                    raise UnsafeSourceError(
                        f"archive member {member.name!r} hard-links to {member.linkname!r},"
                        " which is not an earlier file of the archive"
                    )
                with open(target.joinpath(*link_parts), "rb") as src:
                    data = src.read()
                _write_file(target, parts, [data], written[key])
                written["/".join(parts)] = written[key]
            else:
                raise UnsafeSourceError(
                    f"archive member {member.name!r} is a device, fifo or other special file"
                )
    _make_links(target, links)


def _extract_zip(archive: Path, target: Path) -> None:
    import zipfile

    links: List[Tuple[List[str], str]] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = _safe_parts(info.filename, "archive member")
            if parts is None:
                continue
            mode = info.external_attr >> 16
            if info.is_dir():
                _mkdirs(target, parts)
            elif stat.S_ISLNK(mode):
                links.append((parts, zf.read(info).decode("utf-8", "surrogateescape")))
            elif mode == 0 or stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0:
                with zf.open(info) as src:
                    _write_file(target, parts, iter(lambda: src.read(1 << 20), b""), bool(mode & 0o100))
            else:
                raise UnsafeSourceError(
                    f"archive member {info.filename!r} is a device, fifo or other special file"
                )
    _make_links(target, links)


def fetch_archive(
    source: ArchiveSource,
    dest: Union[str, Path],
    *,
    allow_file_urls: bool = True,
    progress: Optional[bool] = None,
    timeout: Tuple[float, float] = (10.0, 60.0),
    retries: int = 3,
    backoff: float = 0.5,
) -> None:
    """Download, check sha256, extract safely, and move ``subdir`` to the new folder ``dest``."""
    import zipfile

    dest, work = _staging_for(source, dest, allow_file_urls, ".archive-")
    try:
        archive = work / "download"
        _download(source.url, archive, expected_sha256=source.sha256, progress=_want_progress(progress),
                  timeout=timeout, retries=retries, backoff=backoff)
        extracted = work / "x"
        extracted.mkdir()
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, extracted)
        else:
            _extract_tar(archive, extracted)
        folder = extracted.joinpath(*source.subdir.split("/")) if source.subdir else extracted
        if folder.is_symlink() or not folder.is_dir():
            raise VerificationError(f"archive {source.url} has no folder {source.subdir!r}; the index entry is wrong")
        check_links_inside(folder)
        if source.tree is not None:
            actual = tree_id(folder)
            if actual != source.tree:
                raise VerificationError(
                    f"folder {source.subdir or '.'} of archive {source.url} has tree {actual},"
                    f" not {source.tree} as pinned; refusing it"
                )
        os.rename(folder, dest)
    finally:
        _rmtree(work)


def fetch_source(
    source: Source,
    dest: Union[str, Path],
    *,
    allow_file_urls: bool = True,
    progress: Optional[bool] = None,
) -> None:
    """Fetch any source into the new folder ``dest`` (see fetch_git / fetch_archive)."""
    if isinstance(source, GitSource):
        fetch_git(source, dest, allow_file_urls=allow_file_urls, progress=progress)
    elif isinstance(source, ArchiveSource):
        fetch_archive(source, dest, allow_file_urls=allow_file_urls, progress=progress)
    else:
        raise TypeError(f"not a source: {source!r}")
