"""What every fetch shares: a staging folder beside the target, and writes that cannot escape it.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from ..errors import FetchError, UnsafeSourceError
from ..registry.sources import Source, validate_source


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
