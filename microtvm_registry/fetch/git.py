"""Git sources: one commit at depth 1 without blobs, then only the folder's blobs, written by us.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..contentid import tree_id
from ..errors import FetchError, UnsafeSourceError, VerificationError
from ..registry.sources import GIT_ALLOWED_PROTOCOLS, ExtraFile, GitSource, url_transport
from .staging import _make_links, _rmtree, check_links_inside, _safe_parts, _staging_for, _write_file


#: Overall limit for one git command (a hung server must not hang us forever).
GIT_TIMEOUT_ENV = "MICROTVM_REGISTRY_GIT_TIMEOUT"


_DEFAULT_GIT_TIMEOUT = 1800.0


def _git_env(git_dir: Path) -> Dict[str, str]:
    from .mirrors import mirror_git_env

    return {
        **mirror_git_env(),
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
            return status, out or b"", err if isinstance(err, str) else (err or b"").decode("utf-8", "replace")
        except self._gitpython.exc.GitCommandNotFound as exc:
            raise FetchError("git is not installed or not on PATH; install git to fetch git sources") from exc
        finally:
            if istream is not None:
                istream.close()

    def _run_with_progress(self, command: List[str], istream) -> Tuple[int, str, str]:
        from git.cmd import handle_process_output
        from git.util import RemoteProgress

        from ..progress import activity

        with activity(f"fetching {self.label}", show=True) as bar:

            class _Progress(RemoteProgress):
                def update(self, op_code, cur_count, max_count=None, message=""):
                    if op_code & RemoteProgress.RECEIVING:
                        text = f"{int(cur_count or 0)}" + (f"/{int(max_count)}" if max_count else "") + " objects"
                        bar.set_postfix_str(f" {text} {message.strip(', ')}".rstrip(), refresh=True)

            progress = _Progress()
            proc = self.cmd.execute(command, env=self.env, istream=istream, as_process=True)
            handle_process_output(
                proc, None, progress.new_message_handler(), None, kill_after_timeout=_git_timeout()
            )
            status = proc.proc.wait() if proc.proc is not None else 1
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


def _selection_tree(g: _Git, source: GitSource) -> str:
    """A tree object, made locally, holding just ``source.paths`` of the commit side by side: the
    id of the folder the cache will hold, known before any blob is fetched (``tree`` pins it)."""
    status, out, err = g.run("ls-tree", "-z", source.commit, "--", *source.paths, binary=True)
    if status != 0:
        raise FetchError(f"git ls-tree {source.commit[:12]} failed: {_git_reason(err)}")
    records = [r for r in _as_bytes(out).split(b"\0") if r]
    found = {os.fsdecode(r.partition(b"\t")[2]) for r in records}
    missing = [p for p in source.paths if p not in found]
    if missing:
        raise VerificationError(f"commit {source.commit[:12]} of {source.url} has no {missing[0]!r}; the index entry is wrong")
    status, out, err = g.run("mktree", "-z", "--missing", stdin=b"".join(r + b"\0" for r in records))
    if status != 0:
        raise FetchError(f"git mktree failed: {_git_reason(err)}")
    return str(out).strip()


def _rev_parse(g: _Git, rev: str) -> Optional[str]:
    status, out, _ = g.run("rev-parse", "--verify", "--quiet", "--end-of-options", rev)
    return str(out).strip() if status == 0 else None


def _ls_tree(g: _Git, tree: str) -> List[Tuple[str, str, str, str]]:
    """(mode, type, oid, path) for every blob/link/gitlink under ``tree``, recursively."""
    status, out, err = g.run("ls-tree", "-r", "-z", "--full-tree", tree, binary=True)
    if status != 0:
        raise FetchError(f"git ls-tree {tree} failed: {_git_reason(err)}")
    entries = []
    for record in _as_bytes(out).split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split()
        entries.append((mode, kind, oid, os.fsdecode(path)))
    return entries


def _as_bytes(out: Union[str, bytes]) -> bytes:
    """A binary run's stdout (``run(..., binary=True)`` gives bytes)."""
    return out if isinstance(out, bytes) else out.encode("utf-8", "surrogateescape")


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
    data = _as_bytes(out)
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


def fetch_git(
    source: GitSource,
    dest: Union[str, Path],
    *,
    allow_file_urls: bool = True,
    progress: Optional[bool] = None,
    label: Optional[str] = None,
) -> None:
    """Fetch ``source`` into the new folder ``dest`` (which must not exist), verified.

    Verifies: the commit exists, ``subdir`` at that commit has tree id ``source.tree``, each extra
    file has its pinned blob id, no symlink escapes. Raises UnsafeSourceError, VerificationError
    or FetchError; on failure ``dest`` does not exist.
    """
    dest, work = _staging_for(source, dest, allow_file_urls, ".git-")
    try:
        label = label or source.url
        from ..progress import wanted

        g = _new_repo(work, "repo.git", wanted(progress), label)
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
        tree = _selection_tree(g, source) if source.paths else _rev_parse(g, where)
        if source.paths:
            where = tree or where
        if tree is None:
            raise VerificationError(
                f"commit {source.commit[:12]} of {source.url} has no folder {source.subdir!r};"
                " the index entry is wrong"
            )
        if source.tree is not None and tree != source.tree:
            what = " + ".join(source.paths) if source.paths else f"folder {source.subdir!r}"
            raise VerificationError(
                f"{what} of {source.url} at {source.commit[:12]} has tree {tree},"
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
            if (_selection_tree(g, source) if source.paths else _rev_parse(g, where)) != tree:
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
