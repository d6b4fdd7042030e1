"""Getting a template's bytes onto disk, verified: git, archives (and the wheel: ``packaged``).

Git goes through the git command line (driven by GitPython, imported lazily), so the user's git
configuration applies -- ``url.<base>.insteadOf`` mirrors, proxies, credentials. We never clone:
a temporary bare repository fetches only the one commit at depth 1 without blobs
(``--filter=blob:none``), git itself checks the commit and the folder's tree id, then only the
blobs of that folder (and the extra files) are fetched in one request and written out by us from
``git cat-file`` -- not by ``git checkout``, whose eol/attribute/LFS filters could change bytes.

Archive members and symlinks that escape the target folder and device files raise
:class:`~microtvm_registry.errors.UnsafeSourceError`; sources from a remote index are fetched
with ``allow_file_urls=False`` so an index cannot read local files. Nothing here imports git,
requests or tqdm at module import time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

from ..registry.sources import ArchiveSource, GitSource, Source


def _git(source: "GitSource", dest: Path, **kw: Any) -> None:
    from .git import fetch_git

    fetch_git(source, dest, **kw)


def _archive(source: "ArchiveSource", dest: Path, **kw: Any) -> None:
    from .archive import fetch_archive

    fetch_archive(source, dest, **kw)


#: How each kind of source that lives in the cache is fetched, by its index key (source_kinds).
FETCHERS: Dict[str, Callable[..., None]] = {"git": _git, "url": _archive}


def fetch_source(
    source: Source,
    dest: Union[str, Path],
    *,
    allow_file_urls: bool = True,
    progress: Optional[bool] = None,
    label: Optional[str] = None,
) -> None:
    """Fetch any source into the new folder ``dest`` with its kind's fetcher (``FETCHERS``)."""
    from ..registry.source_kinds import kind_of

    kind = kind_of(source)
    if kind.key not in FETCHERS:
        raise TypeError(f"{kind.name} sources are used in place, not fetched: {source!r}")
    FETCHERS[kind.key](source, Path(dest), allow_file_urls=allow_file_urls, progress=progress, label=label)
