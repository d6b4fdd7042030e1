"""Archive sources: download with retries, check the sha256, extract safely, check the tree id.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import hashlib

from ..contentid import tree_id
from ..errors import FetchError, UnsafeSourceError, VerificationError
from ..progress import wanted
from ..limits import DEFAULT_MAX_EXTRACTED_BYTES, MAX_EXTRACTED_ENV, MAX_MEMBERS
from ..registry.sources import ArchiveSource, url_transport
from .staging import _make_links, _mkdirs, _rmtree, _safe_parts, _staging_for, _write_file, check_links_inside


#: The largest archive we download unless told otherwise (real templates are a few MB).
MAX_ARCHIVE_ENV = "MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES"
DEFAULT_MAX_ARCHIVE_BYTES = 256 * 1024 * 1024
# What an archive may expand to (limits.py, shared with MLFs): a zip or tar bomb stops there,
# and its staging folder goes.


def _download(
    url: str,
    target: Path,
    *,
    expected_sha256: str,
    progress: bool,
    label: Optional[str] = None,
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

    from ..http import bounded_get, byte_limit
    from ..progress import activity

    limit = byte_limit(MAX_ARCHIVE_ENV, DEFAULT_MAX_ARCHIVE_BYTES)
    digest_box = [hashlib.sha256()]
    with activity(f"fetching {label or url.rsplit('/', 1)[-1]}", show=progress, unit="B", total=None) as bar:

        def started(length: Optional[int]) -> None:
            digest_box[0] = hashlib.sha256()  # a retry starts the file, and its hash, again
            if bar is not None:
                bar.reset(total=length)

        def received(data: bytes) -> None:
            digest_box[0].update(data)
            if bar is not None:
                bar.update(len(data))

        with open(target, "wb") as out:
            bounded_get(url, what=f"archive {label or url}", max_bytes=limit, limit_env=MAX_ARCHIVE_ENV, sink=out,
                        retries=retries, backoff=backoff, connect_timeout=timeout[0], read_timeout=timeout[1],
                        on_start=started, on_chunk=received)
    _check_sha256(url, digest_box[0].hexdigest(), expected_sha256)


def _check_sha256(url: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise VerificationError(
            f"archive {url} has sha256 {actual}, not {expected} as pinned; refusing it"
        )


class _Budget:
    """What extraction may still write: a total size and a member count, so that a bomb stops
    early (and its staging folder is removed by the caller) instead of filling the disk."""

    def __init__(self, what: str) -> None:
        from ..http import byte_limit

        self.what = what
        self.left = byte_limit(MAX_EXTRACTED_ENV, DEFAULT_MAX_EXTRACTED_BYTES)
        self.limit = self.left
        self.members = 0

    def take(self, size: int) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise FetchError(f"{self.what} has more than {MAX_MEMBERS:,} members; refused (no template is that large)")
        self.left -= max(0, size)
        if self.left < 0:
            raise FetchError(
                f"{self.what} expands to more than {self.limit:,} bytes; refused (set {MAX_EXTRACTED_ENV} to allow more)"
            )


def _extract_tar(archive: Path, target: Path, what: str = "the archive") -> None:
    import tarfile

    budget = _Budget(what)
    links: List[Tuple[List[str], str]] = []
    written: Dict[str, bool] = {}
    data_filter = getattr(tarfile, "data_filter", None)
    try:
        tf = tarfile.open(archive, "r:*")
    except tarfile.TarError as exc:
        raise FetchError(f"archive is neither a zip nor a readable tar file: {exc}") from exc
    with tf:
        for member in tf:
            budget.take(member.size if member.isreg() else 0)
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
                if src is None:  # pragma: no cover - a regular member always has data
                    raise FetchError(f"archive member {member.name!r} cannot be read")
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
                with open(target.joinpath(*(link_parts or [])), "rb") as linked:
                    data = linked.read()
                _write_file(target, parts, [data], written[key])
                written["/".join(parts)] = written[key]
            else:
                raise UnsafeSourceError(
                    f"archive member {member.name!r} is a device, fifo or other special file"
                )
    _make_links(target, links)


def _extract_zip(archive: Path, target: Path, what: str = "the archive") -> None:
    import zipfile

    links: List[Tuple[List[str], str]] = []
    budget = _Budget(what)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():  # sizes first: a bomb is refused before a byte is written
            budget.take(info.file_size)
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
    label: Optional[str] = None,
    timeout: Tuple[float, float] = (10.0, 60.0),
    retries: int = 3,
    backoff: float = 0.5,
) -> None:
    """Download, check sha256, extract safely, and move ``subdir`` to the new folder ``dest``."""
    import zipfile

    dest, work = _staging_for(source, dest, allow_file_urls, ".archive-")
    try:
        archive = work / "download"
        _download(source.url, archive, expected_sha256=source.sha256, progress=wanted(progress), label=label,
                  timeout=timeout, retries=retries, backoff=backoff)
        extracted = work / "x"
        extracted.mkdir()
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, extracted, f"archive {source.url}")
        else:
            _extract_tar(archive, extracted, f"archive {source.url}")
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
