"""Archive sources: download with retries, check the sha256, extract safely, check the tree id.
"""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import hashlib

from ..contentid import tree_id
from ..errors import FetchError, UnsafeSourceError, VerificationError, first_line
from ..registry.sources import ArchiveSource, url_transport
from .staging import _make_links, _mkdirs, _rmtree, _safe_parts, _staging_for, _want_progress, _write_file, check_links_inside


class _Incomplete(Exception):
    pass


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
                    from ..progress import activity

                    received = 0
                    with activity(f"fetching {label or url.rsplit('/', 1)[-1]}", show=progress, unit="B", total=total) as bar:
                        with open(target, "wb") as out:
                            for chunk in response.iter_content(chunk_size=1 << 16):
                                digest.update(chunk)
                                out.write(chunk)
                                received += len(chunk)
                                if bar is not None:
                                    bar.update(len(chunk))
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
        _download(source.url, archive, expected_sha256=source.sha256, progress=_want_progress(progress), label=label,
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
