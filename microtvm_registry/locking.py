"""``microtvm lock`` and ``microtvm sync``: resolve, fetch to learn the content id, pin.

These join three stages (resolve a spec, materialize it in the cache, write the lockfile), so
they sit above all three; the lockfile format itself is :mod:`microtvm_registry.registry.lockfile`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .errors import LockfileError
from .registry.lockfile import LOCK_NAME, Lockfile, check_content_id, entry_for, find_lockfile


Progress = Optional[Callable[[str], None]]


def lock_specs(
    specs: Sequence[str], *, offline: bool = False, start: Optional[Path] = None, progress: Progress = None
) -> Lockfile:
    """Resolve each spec (ignoring its current pin), fetch it to learn its content id, pin it.

    The lockfile is the one found from ``start`` (default cwd), or a new one in that folder. The
    file is written once, after every spec succeeded, so a failure changes nothing.
    """
    from .registry.resolve import parse_spec, resolve
    from .templates import materialize_version

    path = find_lockfile(start) or Path(start or os.getcwd()).absolute() / LOCK_NAME
    lock = Lockfile.load(path) if path.exists() else Lockfile(path)
    parsed = [parse_spec(s) for s in specs]
    for spec in parsed:
        resolved = resolve(spec, use_lock=False, offline=offline)
        tv = resolved.version
        if progress:
            progress(f"locking {tv.name} {tv.version}")
        _path, content_id = materialize_version(tv, offline=offline, need_content_id=True)
        lock.entries[tv.name] = entry_for(tv, content_id)
    lock.save()
    return lock


@dataclasses.dataclass
class SyncResult:
    lock: Lockfile
    changed: List[str]  # entries that were incomplete and got resolved
    verified: List[str]


def sync(
    *, frozen: bool = False, offline: bool = False, start: Optional[Path] = None, progress: Progress = None
) -> SyncResult:
    """Fetch and verify everything pinned; complete hand-written entries (not with ``frozen``).

    A content id that differs from the pin raises VerificationError and nothing is cached under
    it. With ``frozen`` the lockfile must already be complete: anything that would change it is
    a LockfileError (exit 1), so CI never silently re-pins.
    """
    from .registry.resolve import Spec, _resolve_pin, resolve
    from .templates import materialize_version

    path = find_lockfile(start)
    if path is None:
        raise LockfileError(f"no {LOCK_NAME} in {Path(start or os.getcwd()).absolute()} or its parents; run `microtvm lock SPEC` first")
    lock = Lockfile.load(path)
    incomplete = [name for name, e in sorted(lock.entries.items()) if not e.complete]
    if frozen and incomplete:
        raise LockfileError(
            f"{path}: {', '.join(incomplete)} would be resolved and pinned (no exact source/content id yet); "
            "run `microtvm sync` without --frozen and commit the result"
        )
    changed, verified = [], []
    for name in sorted(lock.entries):
        entry = lock.entries[name]
        if progress:
            progress(f"syncing {name} {entry.version}")
        if entry.complete:
            pinned = _resolve_pin(Spec.exact(name, entry.version), entry, lock.path, None, offline)
            _p, content_id = materialize_version(
                pinned.version, offline=offline, expected=entry.content_id, need_content_id=True, progress=None
            )
            check_content_id(f"{name} {entry.version}", entry.content_id, content_id)
            verified.append(name)
            continue
        spec = Spec.exact(name, entry.version)
        resolved = resolve(spec, use_lock=False, offline=offline)
        _p, content_id = materialize_version(resolved.version, offline=offline, need_content_id=True)
        lock.entries[name] = entry_for(resolved.version, content_id)
        changed.append(name)
    if changed:
        lock.save()
    return SyncResult(lock, changed, verified)
