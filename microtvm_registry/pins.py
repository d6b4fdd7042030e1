"""``microtvm lock``, ``unlock`` and ``sync``: resolve, fetch to learn the content id, pin.

These join three stages (resolve a spec, materialize it in the cache, write the lockfile), so
they sit above all three; the lockfile format itself is :mod:`microtvm_registry.registry.lockfile`.

The semantics are uv's, so a user who knows ``uv lock`` / ``uv sync`` is not surprised:

- ``lock SPEC`` records what was asked for (the specifier) with the pin. A name that is already
  pinned keeps its pin when the pin still satisfies the new spec; it is re-resolved only when it
  does not (and then the replacement is reported) or when ``--upgrade`` / ``--upgrade NAME`` asks.
- ``unlock NAME`` removes a pin.
- ``sync`` fetches and verifies every pin; an entry that is hand-written, or whose pinned version
  no longer satisfies its recorded specifier, is re-resolved within that specifier and the file
  rewritten. ``sync --locked`` does the same checks but fails instead of changing the file;
  ``sync --frozen`` uses the pins exactly as written (it does not check them against their
  specifiers) and never changes the file. In every mode a content id that differs from its pin
  is refused.

Every read-modify-write of the lockfile holds a file lock (:func:`~microtvm_registry.files.update_lock`),
so concurrent ``lock`` runs never lose one another's pins, and the file is written once, after
everything succeeded, so a failure changes nothing.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from .errors import LockfileError
from .registry.lockfile import LOCK_NAME, LockEntry, Lockfile, check_content_id, entry_for, find_lockfile


Progress = Optional[Callable[[str], None]]

#: ``upgrade=ALL``: re-resolve every pin within its specifier.
ALL = "*"

SYNC_MODES = ("sync", "locked", "frozen")


@dataclasses.dataclass(frozen=True)
class PinChange:
    """What ``lock``/``unlock``/``sync`` did to one name; ``old``/``new`` are versions (None =
    not pinned before / removed)."""

    name: str
    action: str  # pinned, kept, replaced, upgraded, unchanged, removed, verified
    old: Optional[str] = None
    new: Optional[str] = None
    content_id: Optional[str] = None

    def describe(self) -> str:
        if self.action == "replaced":
            return f"replaced {self.name} {self.old} with {self.new} {self.content_id}"
        if self.action == "upgraded":
            return f"upgraded {self.name} {self.old} -> {self.new} {self.content_id}"
        if self.action == "removed":
            return f"removed {self.name} {self.old}"
        return f"{self.action} {self.name} {self.new} {self.content_id}"


@dataclasses.dataclass
class LockResult:
    lock: Lockfile
    changes: List[PinChange]
    written: bool


def refuse_template_folder(path: Path) -> None:
    """A lockfile belongs to a user's project: never write one into a template folder we ship or
    a cache entry (``cd "$(microtvm path host)"; microtvm lock ...`` would otherwise change the
    packaged template's own content id)."""
    from .dirs import cache_dir
    from .files import is_within
    from .packaged import shipped_root_of

    folder = Path(os.path.realpath(path)).parent
    shipped = shipped_root_of(folder)
    if shipped is not None:
        what, root = "the installed package's templates", shipped
    elif is_within(folder, cache_dir()):
        what, root = "the template cache", cache_dir()
    else:
        return
    raise LockfileError(
        f"{folder} is inside {what} ({os.path.realpath(root)}); a lockfile belongs to your project: "
        "cd to your project's folder and run the command there"
    )


def _target(start: Optional[Path]) -> Path:
    return find_lockfile(start) or Path(start or os.getcwd()).absolute() / LOCK_NAME


def lock_specs(
    specs: Sequence[str],
    *,
    upgrade: Union[bool, Sequence[str]] = (),
    offline: bool = False,
    start: Optional[Path] = None,
    progress: Progress = None,
) -> LockResult:
    """Pin each spec (keeping a pin that satisfies it), then re-resolve what ``upgrade`` names.

    ``upgrade`` is True (or contains :data:`ALL`) for every pin, or a list of names.
    """
    from .registry.resolve import parse_spec

    parsed = [parse_spec(s) for s in specs]  # every spec checked before anything is fetched
    upgrade_names = [] if upgrade is True else [u for u in (upgrade or ()) if u != ALL]
    upgrade_all = upgrade is True or ALL in (upgrade or ())
    path = _target(start)
    refuse_template_folder(path)
    from .files import update_lock

    with update_lock(path):
        lock = Lockfile.load(path) if path.exists() else Lockfile(path)
        before = lock.to_bytes() if path.exists() else None
        missing = [n for n in upgrade_names if lock.find(n) is None and not any(_same_name(s.name, n) for s in parsed)]
        if missing:
            raise LockfileError(f"{path}: {', '.join(missing)} is not pinned, so there is nothing to upgrade; run `microtvm lock {missing[0]}`")
        changes: List[PinChange] = []

        def pin(request: str, existing: Optional[LockEntry], specifier: Optional[str], upgrading: bool) -> None:
            new = _fresh_pin(request, specifier, offline, progress, "locking")
            if existing is not None and existing.name != new.name:
                del lock.entries[existing.name]
            lock.entries[new.name] = new
            if existing is None:
                action = "pinned"
            elif existing.version == new.version and existing.content_id == new.content_id:
                action = "unchanged"
            else:
                action = "upgraded" if upgrading else "replaced"
            changes.append(PinChange(new.name, action, existing.version if existing else None, new.version, new.content_id))

        done = set()
        for spec in parsed:
            existing = lock.find(spec.name)
            specifier = "" if spec.specifier is None else str(spec.specifier)
            upgrading = upgrade_all or any(_same_name(spec.name, n) or (existing and _same_name(existing.name, n)) for n in upgrade_names)
            if existing is not None and existing.complete and not upgrading and spec.matches(existing.version):
                lock.entries[existing.name] = dataclasses.replace(existing, specifier=specifier)
                changes.append(PinChange(existing.name, "kept", existing.version, existing.version, existing.content_id))
                done.add(existing.name)
                continue
            pin(spec.text, existing, specifier, upgrading)
            done.add(changes[-1].name)
        targets = sorted(lock.entries) if upgrade_all else [e.name for e in map(lock.find, upgrade_names) if e is not None]
        for name in targets:
            if name in done:
                continue
            existing = lock.entries[name]
            # An entry with no recorded specifier was asked for as "that version" by hand or by an
            # older release; --upgrade means "the newest", so it gets any version.
            specifier = existing.specifier or ""
            pin(f"{name}@{specifier}" if specifier else name, existing, existing.specifier, True)
            done.add(name)
        data = lock.to_bytes()
        written = data != before
        if written:
            lock.save()
    return LockResult(lock, changes, written)


def _fresh_pin(request: str, specifier: Optional[str], offline: bool, progress: Progress, verb: str) -> LockEntry:
    """Resolve ``request`` ignoring any pin, fetch it to learn its content id, and return the
    entry that pins it as asked for by ``specifier``."""
    from .registry.resolve import resolve
    from .template_paths import materialize_with_id

    tv = resolve(request, use_lock=False, offline=offline).version
    if progress and verb:
        progress(f"{verb} {tv.name} {tv.version}")
    _path, content_id = materialize_with_id(tv, offline=offline)
    return entry_for(tv, content_id, specifier)


def _same_name(a: str, b: str) -> bool:
    """``zephyr`` and ``apache-tvm/zephyr`` name the same pin (the vendor part may be left out)."""
    return a == b or a.rsplit("/", 1)[-1] == b or b.rsplit("/", 1)[-1] == a


def unlock(names: Sequence[str], *, start: Optional[Path] = None) -> LockResult:
    """Remove the pins of ``names``; a name that is not pinned is an error and nothing changes."""
    path = find_lockfile(start)
    if path is None:
        raise LockfileError(f"no {LOCK_NAME} in {Path(start or os.getcwd()).absolute()} or its parents: nothing is pinned")
    refuse_template_folder(path)
    from .files import update_lock

    with update_lock(path):
        lock = Lockfile.load(path)
        changes = []
        for name in names:
            entry = lock.find(name)
            if entry is None:
                pinned = ", ".join(sorted(lock.entries)) or "nothing"
                raise LockfileError(f"{path} does not pin {name!r} (it pins {pinned}); nothing was changed")
            del lock.entries[entry.name]
            changes.append(PinChange(entry.name, "removed", entry.version, None, entry.content_id))
        lock.save()
    return LockResult(lock, changes, True)


@dataclasses.dataclass
class SyncResult:
    lock: Lockfile
    changed: List[str]  # entries that were re-resolved and pinned
    verified: List[str]
    changes: List[PinChange] = dataclasses.field(default_factory=list)


def _stale(entry: LockEntry) -> Optional[str]:
    """Why ``sync`` would change this entry, or None."""
    if not entry.complete:
        return "has no exact source and content id yet (written by hand)"
    if not entry.satisfies_request():
        return f"is pinned at {entry.version}, outside its specifier {entry.specifier!r}"
    return None


def sync(
    *,
    frozen: bool = False,
    mode: Optional[str] = None,
    offline: bool = False,
    start: Optional[Path] = None,
    progress: Progress = None,
) -> SyncResult:
    """Fetch and verify everything pinned; ``mode`` is "sync", "locked" or "frozen" (see the
    module docstring). A content id that differs from the pin raises VerificationError and
    nothing is cached under it."""
    from .registry.resolve import Spec, _resolve_pin
    from .template_paths import materialize_with_id

    mode = mode or ("frozen" if frozen else "sync")
    if mode not in SYNC_MODES:
        raise ValueError(f"sync mode {mode!r} is not one of {SYNC_MODES}")
    path = find_lockfile(start)
    if path is None:
        raise LockfileError(f"no {LOCK_NAME} in {Path(start or os.getcwd()).absolute()} or its parents; run `microtvm lock SPEC` first")
    from .files import update_lock

    with update_lock(path):
        lock = Lockfile.load(path)
        stale: Dict[str, str] = {name: why for name, e in sorted(lock.entries.items()) for why in [_stale(e)] if why}
        if mode == "frozen":
            stale = {n: why for n, why in stale.items() if not lock.entries[n].complete}
            if stale:
                raise LockfileError(
                    f"{path}: {', '.join(stale)} would be resolved and pinned (no exact source/content id yet), "
                    "which --frozen never does; run `microtvm sync` without --frozen and commit the result"
                )
        elif mode == "locked" and stale:
            reasons = "; ".join(f"{n} {why}" for n, why in stale.items())
            raise LockfileError(f"{path} would change ({reasons}); run `microtvm sync` and commit the result")
        if stale:
            refuse_template_folder(path)
        changed, verified, changes = [], [], []
        for name in sorted(lock.entries):
            entry = lock.entries[name]
            if progress:
                progress(f"syncing {name} {entry.version}")
            if name not in stale:
                pinned = _resolve_pin(Spec.exact(name, entry.version), entry, lock.path, None, offline)
                _p, content_id = materialize_with_id(pinned.version, offline=offline, expected=entry.content_id, progress=None)
                check_content_id(f"{name} {entry.version}", entry.content_id, content_id)
                verified.append(name)
                changes.append(PinChange(name, "verified", entry.version, entry.version, entry.content_id))
                continue
            new = lock.entries[name] = _fresh_pin(entry.requested, entry.specifier, offline, None, "")
            changed.append(name)
            changes.append(PinChange(name, "pinned" if not entry.complete else "replaced", entry.version, new.version, new.content_id))
        if changed:
            lock.save()
    return SyncResult(lock, changed, verified, changes)
