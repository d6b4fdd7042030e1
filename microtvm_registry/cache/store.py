"""The per-user template cache: content-addressed, verified, safe under concurrency and crashes.

Layout under the cache root (``dirs.cache_dir()`` unless given)::

    templates/<content_id>/   complete entries only, made read-only; the name IS the tree id
    sources/<key>             small JSON: source key -> content id (+ the source, for `cache list`)
    tmp/<lock>--<random>/     staging on the same filesystem (so the final rename is atomic)
    locks/<lock>.lock         one file lock per source key

Why this shape:

- An entry appears by one ``rename`` of a fully written and verified folder, so a reader never
  sees a partial entry, whatever got killed when. Leftover staging folders are ignored and swept
  by whoever next holds their lock.
- The source key is URL-independent (commit + folder + pinned ids, or sha256 + folder), so a
  mirror hits the same entry, and an entry whose content id is not known in advance (a template
  with extra files) is still found offline through ``sources/<key>``, written last.
- The warm path reads at most one small file and stats one folder: no hashing, and no import of
  git, requests or tqdm.
- One process fetches a given source at a time (a per-key file lock); the others wait, then find
  the entry ready.
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

from ..contentid import is_object_id
from ..errors import CacheError, OfflineError, VerificationError
from ..registry.source_kinds import kind_of
from ..registry.sources import Source, source_key, source_to_dict

__all__ = ["Cache", "Materialized", "CacheEntry", "VerifyResult"]

_LOCK_TIMEOUT = 3600.0


@dataclasses.dataclass(frozen=True)
class Materialized:
    """A template folder in the cache: ``path`` is ``templates/<content_id>``."""

    path: Path
    content_id: str
    fetched: bool = False  # True when this call downloaded it


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    content_id: str
    path: Path
    size: int  # bytes of file content
    sources: tuple  # source dicts (source_to_dict) recorded for this entry
    labels: tuple = ()  # "name@version" of the templates fetched into it, as they were asked for


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    content_id: str
    path: Path
    ok: bool
    actual: Optional[str]  # the id the folder hashes to now (None if unreadable)
    removed: bool = False


class Cache:
    """Content-addressed template cache rooted at ``root`` (default: dirs.cache_dir())."""

    def __init__(self, root: Union[str, Path, None] = None) -> None:
        if root is None:
            from ..dirs import cache_dir

            root = cache_dir()
        self.root = Path(root)
        self.templates_dir = self.root / "templates"
        self.sources_dir = self.root / "sources"
        self.tmp_dir = self.root / "tmp"
        self.locks_dir = self.root / "locks"

    # ---------------------------------------------------------------------------- lookups
    def entry_path(self, content_id: str) -> Path:
        return self.templates_dir / content_id

    def has(self, content_id: str) -> bool:
        """A complete entry: a real folder (an entry replaced by a symlink is not one)."""
        if not is_object_id(content_id):
            return False
        path = self.entry_path(content_id)
        return path.is_dir() and not path.is_symlink()

    # ---------------------------------------------------------------------------- re-checks
    def fingerprint_path(self, content_id: str) -> Path:
        return self.root / "fingerprints" / content_id

    def check_entry(self, content_id: str) -> Path:
        """The entry's folder, after checking it is still what was fetched; raises CacheError.

        Run before a template's server starts from the cache (and on every cache hit): an entry
        replaced by a symlink, made writable, or whose files changed is refused, so a tampered
        entry never runs under its old trust. Cheap on the common path: a stat walk compared
        with the fingerprint recorded when the entry was made; only a changed fingerprint costs
        a full re-hash (and a matching re-hash records the new fingerprint).
        """
        path = self.entry_path(content_id)
        hint = "run `microtvm cache verify --repair`, then fetch it again"
        if path.is_symlink():
            raise CacheError(f"cache entry {path} is a symlink, not the folder that was fetched; refused ({hint})")
        if not path.is_dir():
            raise CacheError(f"cache entry {path} is missing; fetch it again")
        fingerprint, writable = _stat_fingerprint(path)
        if writable is not None:
            raise CacheError(f"cache entry {path} is writable ({writable}); entries are read-only once complete, so it was refused ({hint})")
        try:
            recorded = self.fingerprint_path(content_id).read_text("ascii").strip()
        except OSError:
            recorded = None
        if recorded == fingerprint:
            return path
        from ..contentid import tree_id

        try:
            actual = tree_id(path)
        except OSError as exc:
            raise CacheError(f"cache entry {path} cannot be read: {exc.strerror or exc}; {hint}") from None
        if actual != content_id:
            raise CacheError(f"cache entry {path} was changed after it was fetched (it hashes to {actual}); refused ({hint})")
        self._record_fingerprint(content_id, fingerprint)
        return path

    def _record_fingerprint(self, content_id: str, fingerprint: Optional[str] = None) -> None:
        """Best effort: a read-only shared cache just re-hashes instead."""
        try:
            if fingerprint is None:
                fingerprint, _ = _stat_fingerprint(self.entry_path(content_id))
            target = self.fingerprint_path(content_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{content_id}.{os.getpid()}.tmp")
            tmp.write_text(fingerprint, "ascii")
            os.replace(tmp, target)
        except OSError:
            pass

    def _mapped_id(self, key: str) -> Optional[str]:
        try:
            with open(self.sources_dir / key, "r", encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError, RecursionError):
            return None
        cid = data.get("content_id") if isinstance(data, dict) else None
        return cid if is_object_id(cid) else None

    def lookup(self, source: Source, expected_content_id: Optional[str] = None) -> Optional[Materialized]:
        """The cached entry for ``source`` if there is one (cheap: no hashing, no network).

        When ``expected_content_id`` is given, only an entry with that id is returned.
        """
        # Only ids this source is known to yield: the one recorded when it was fetched, or the one
        # it has by construction. An expected id alone proves nothing: a lockfile could pair this
        # source with the id of another template that happens to be cached.
        candidates: List[str] = []
        mapped = self._mapped_id(source_key(source))
        if mapped:
            candidates.append(mapped)
        direct = kind_of(source).direct_content_id(source)
        if direct:
            candidates.append(direct)
        for cid in candidates:
            if expected_content_id and cid != expected_content_id:
                continue
            if self.has(cid):
                return Materialized(self.entry_path(cid), cid)
        return None

    def _checked(self, hit: Optional[Materialized]) -> Optional[Materialized]:
        """A cache hit that passes :meth:`check_entry`; a damaged one is removed when we may (and
        then fetched again by the caller), else its error is raised."""
        if hit is None:
            return None
        try:
            self.check_entry(hit.content_id)
            return hit
        except CacheError:
            self._remove_entry(hit.content_id)
            if os.path.lexists(self.entry_path(hit.content_id)):
                raise
            return None

    # ---------------------------------------------------------------------------- fetching
    def materialize(
        self,
        source: Source,
        *,
        offline: bool = False,
        progress: Optional[bool] = None,
        expected_content_id: Optional[str] = None,
        allow_file_urls: bool = True,
        label: Optional[str] = None,
    ) -> Materialized:
        """Return the cached folder for ``source``, fetching and verifying it first if needed.

        ``label`` names the template in messages (e.g. ``apache-tvm/zephyr@0.18.0``).
        Raises OfflineError (offline and not cached), VerificationError (fetched content differs
        from what is pinned: nothing is kept), UnsafeSourceError, FetchError.
        """
        hit = self._checked(self.lookup(source, expected_content_id))
        if hit is not None:
            return hit
        name = label or source.describe()
        if offline:
            spec = f"microtvm fetch {label}" if label else "microtvm fetch <template>"
            raise OfflineError(
                f"{name} is not in the cache ({self.root}) and offline mode is on;"
                f" run `{spec}` while online first"
            )
        key = source_key(source)
        with self._lock(key):
            hit = self._checked(self.lookup(source, expected_content_id))
            if hit is not None:
                return hit
            self._sweep_stale(key)
            staging = self._staging(key)
            try:
                from ..contentid import tree_id
                from ..fetch import fetch_source

                folder = staging / "t"
                fetch_source(source, folder, allow_file_urls=allow_file_urls, progress=progress, label=label)
                content_id = tree_id(folder)
                if expected_content_id and content_id != expected_content_id:
                    raise VerificationError(
                        f"{name} has content id {content_id}, not {expected_content_id} as pinned;"
                        " refusing it (check the lockfile or index entry)"
                    )
                path = self._install(folder, content_id)
                self._write_mapping(key, content_id, source, label)
                return Materialized(path, content_id, fetched=True)
            finally:
                _rmtree(staging)

    def list_entries(self) -> List[CacheEntry]:
        """Complete entries, with their recorded sources (from sources/*)."""
        by_id: dict = {}
        labels: dict = {}
        if self.sources_dir.is_dir():
            for item in sorted(self.sources_dir.iterdir()):
                try:
                    data = json.loads(item.read_text("utf-8"))
                except (OSError, ValueError, RecursionError):
                    continue
                if isinstance(data, dict) and isinstance(data.get("content_id"), str):
                    by_id.setdefault(data["content_id"], []).append(data.get("source"))
                    if isinstance(data.get("label"), str):
                        labels.setdefault(data["content_id"], set()).add(data["label"])
        entries = []
        for cid in self._entry_ids():
            path = self.entry_path(cid)
            entries.append(
                CacheEntry(cid, path, _size(path), tuple(s for s in by_id.get(cid, []) if s), tuple(sorted(labels.get(cid, ()))))
            )
        return entries

    def verify(self, repair: bool = False) -> List[VerifyResult]:
        """Re-hash every entry; with ``repair``, remove the ones that do not match their name."""
        from ..contentid import tree_id

        results = []
        for cid in self._entry_ids():
            path = self.entry_path(cid)
            try:
                actual: Optional[str] = None if path.is_symlink() else tree_id(path)
            except OSError:
                actual = None
            ok = actual == cid
            removed = False
            if not ok and repair:
                self._remove_entry(cid)
                removed = True
            results.append(VerifyResult(cid, path, ok, actual, removed))
        return results

    def verify_memos(self, repair: bool = False) -> Tuple[int, List[Path]]:
        """Re-parse every TOML parse memo (extra indexes' copies) and compare; with ``repair``,
        remove the ones whose parse differs from the text they hold. Returns (checked, bad)."""
        from ..files import PARSED_TOML_DIR, load_toml_bytes

        folder = self.root / PARSED_TOML_DIR
        bad: List[Path] = []
        checked = 0
        for item in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            checked += 1
            try:
                stored = json.loads(item.read_text("utf-8"))
                good = load_toml_bytes(stored["toml"].encode("utf-8")) == stored["doc"]
            except Exception:  # noqa: BLE001 - unreadable in any way is bad
                good = False
            if not good:
                bad.append(item)
                if repair:
                    try:
                        item.unlink()
                    except OSError:
                        pass
        return checked, bad

    def clean(self, keep: Optional[Iterable[str]] = None) -> List[str]:
        """Remove entries (all, or those whose id is not in ``keep``); return the removed ids.

        Also drops source mappings that point at removed entries and sweeps stale staging.
        """
        keep_set = None if keep is None else set(keep)
        removed = []
        for cid in self._entry_ids():
            if keep_set is None or cid not in keep_set:
                self._remove_entry(cid)
                removed.append(cid)
        if self.sources_dir.is_dir():
            for item in self.sources_dir.iterdir():
                mapped = self._mapped_id(item.name)
                if mapped is None or not self.has(mapped):
                    try:
                        item.unlink()
                    except OSError:
                        pass
        if keep_set is None:
            from ..files import PARSED_TOML_DIR

            _rmtree(self.root / PARSED_TOML_DIR)  # parse memos: remade on the next read
        self._sweep_stale(None)
        return removed

    # ---------------------------------------------------------------------------- internals
    def _entry_ids(self) -> List[str]:
        if not self.templates_dir.is_dir():
            return []
        return sorted(n for n in os.listdir(self.templates_dir) if is_object_id(n))

    def _ensure_dirs(self) -> None:
        try:
            for d in (self.templates_dir, self.sources_dir, self.tmp_dir, self.locks_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache folder {self.root}: {exc.strerror};"
                " set MICROTVM_REGISTRY_CACHE to a writable folder"
            ) from exc

    def _lock(self, name: str):
        from filelock import FileLock

        self._ensure_dirs()
        return FileLock(str(self.locks_dir / f"{name}.lock"), timeout=_LOCK_TIMEOUT)

    def _staging(self, name: str) -> Path:
        path = self.tmp_dir / f"{name}--{os.getpid()}-{os.urandom(4).hex()}"
        path.mkdir()
        return path

    def _sweep_stale(self, name: Optional[str]) -> None:
        """Remove staging folders nobody is working in.

        With ``name`` (whose lock we hold) every ``name--*`` folder is a crashed predecessor's.
        With None, each folder is removed only if its lock can be taken right now.
        """
        if not self.tmp_dir.is_dir():
            return
        from filelock import FileLock, Timeout

        for item in os.listdir(self.tmp_dir):
            owner, sep, _ = item.partition("--")
            if not sep:
                _rmtree(self.tmp_dir / item)  # removed entries being deleted, etc.
                continue
            if name is not None:
                if owner == name:
                    _rmtree(self.tmp_dir / item)
                continue
            lock = FileLock(str(self.locks_dir / f"{owner}.lock"), timeout=0)
            try:
                with lock:
                    _rmtree(self.tmp_dir / item)
            except Timeout:
                pass

    def _install(self, folder: Path, content_id: str) -> Path:
        """Make ``folder`` read-only and rename it into place (someone else's identical copy wins)."""
        _make_read_only(folder)
        target = self.entry_path(content_id)
        if target.is_symlink():  # not an entry (see check_entry): it never blocks a fetch
            os.unlink(target)
        try:
            os.rename(folder, target)
        except OSError:
            if not target.is_dir():
                raise
        self._record_fingerprint(content_id)
        return target

    def _write_mapping(self, key: str, content_id: str, source: Source, label: Optional[str] = None) -> None:
        data = {"content_id": content_id, "source": source_to_dict(source), "time": int(time.time())}
        if label:
            data["label"] = label
        tmp = self.sources_dir / f".{key}.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
        os.replace(tmp, self.sources_dir / key)

    def _remove_entry(self, content_id: str) -> None:
        """Move the entry out of templates/ atomically, then delete it (never leave half of it)."""
        self._ensure_dirs()
        path = self.entry_path(content_id)
        try:
            self.fingerprint_path(content_id).unlink()
        except OSError:
            pass
        if path.is_symlink():  # never chmod or delete what a link points at
            os.unlink(path)
            return
        grave = self.tmp_dir / f"removed-{content_id}-{os.urandom(4).hex()}"
        try:
            os.chmod(path, 0o755)
            os.rename(path, grave)
        except FileNotFoundError:
            return
        _rmtree(grave)


_WRITE_BITS = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


def _stat_fingerprint(folder: Path):
    """(sha256 of every file's and folder's path, mode, size, inode, mtime and ctime; the first
    writable path or None). ctime cannot be set back by a user, so an edit changes it."""
    import hashlib

    h = hashlib.sha256()
    writable = None
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in [None] + sorted(filenames):
            p = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(p)
            if writable is None and not stat.S_ISLNK(st.st_mode) and st.st_mode & _WRITE_BITS:
                writable = os.path.relpath(p, folder)
            rel = os.path.relpath(p, folder)
            h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest(), writable


def _make_read_only(folder: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o555 if st.st_mode & stat.S_IXUSR else 0o444)
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o555)
    os.chmod(folder, 0o555)


def _rmtree(path: Path) -> None:
    from ..fetch.staging import _rmtree as rm

    rm(path)


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
