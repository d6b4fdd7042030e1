"""Extra indexes the user added (``microtvm index add NAME URL_OR_PATH``): the config and the copies.

The config file lists name + location; the last good copy of each lives in the cache beside its
ETag, so a remote index is fetched only by ``index add`` / ``index update`` (or when no copy
exists), and a broken one is one warning line while the last good copy keeps working.
"""
from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import FetchError, IndexFormatError, MicrotvmError, OfflineError, TemplateNotFoundError, first_line
from ..files import atomic_write_bytes, read_toml_config, update_lock, warn
from .index_format import INDEX_NAME_RE, _Checker, parse_index
from .source_kinds import has_scheme
from .models import Index, Origin
from .packaged_indexes import packaged_indexes


CONFIG_FILE = "indexes.toml"

#: An index is a small text file; an endless or huge body stops here.
MAX_INDEX_ENV = "MICROTVM_REGISTRY_MAX_INDEX_BYTES"
DEFAULT_MAX_INDEX_BYTES = 8 * 1024 * 1024

COPY_DIR = "index-copies"

HTTP_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)

HTTP_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class ExtraIndex:
    """An index the user added: a name and where it lives (http(s) URL or a local path)."""

    name: str
    location: str

    @property
    def remote(self) -> bool:
        return bool(re.match(r"^https?://", self.location))

    def origin(self) -> Origin:
        return Origin("index", self.name, self.location, trusted=False, remote=self.remote)


def _config_path() -> Path:
    from .. import dirs

    return dirs.config_dir() / CONFIG_FILE


def _copy_paths(name: str) -> Tuple[Path, Path]:
    from .. import dirs

    folder = dirs.cache_dir() / COPY_DIR
    return folder / f"{name}.toml", folder / f"{name}.meta.json"


def list_extra_indexes() -> List[ExtraIndex]:
    """The extra indexes recorded in the config file, in the order they were added."""
    path = _config_path()
    doc = read_toml_config(path, IndexFormatError, "the extra-index list")
    if doc is None:
        return []
    chk = _Checker(str(path))
    result = []
    for n, table in enumerate(chk.get_tables(doc, "index", "")):
        name = chk.get_str(table, "name", f"index[{n}]", required=True)
        location = chk.get_str(table, "location", f"index[{n}]", required=True)
        result.append(ExtraIndex(name, location))
    return result


def _write_extra_indexes(entries: Sequence[ExtraIndex]) -> None:
    import tomli_w

    doc = {"index": [{"name": e.name, "location": e.location} for e in entries]}
    header = b"# Extra template indexes, managed by `microtvm index add/remove`.\n"
    atomic_write_bytes(_config_path(), header + tomli_w.dumps(doc).encode("utf-8"))


def _normalise_location(location: str) -> str:
    if re.match(r"^https?://", location):
        return location
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    if has_scheme(location):
        raise MicrotvmError(f"index location {location!r}: only http(s) URLs and local paths are supported")
    return str(Path(location).expanduser().resolve())


def add_extra_index(name: str, location: str, *, offline: bool = False) -> Index:
    """Record an extra index after checking that it can be read and parsed."""
    if not INDEX_NAME_RE.match(name):
        raise MicrotvmError(f"index name {name[:40]!r}: use up to 64 letters, digits, '.', '_' or '-'")
    packaged = {i.name for i in packaged_indexes()}
    if name in packaged:
        raise MicrotvmError(f"index name {name!r} is taken by a packaged index; choose another name")
    entries = list_extra_indexes()
    if any(e.name == name for e in entries):
        raise MicrotvmError(f"an index named {name!r} already exists; run `microtvm index remove {name}` first")
    entry = ExtraIndex(name, _normalise_location(location))
    if entry.remote and offline:
        raise OfflineError(f"cannot add index {name!r} from {entry.location} while offline; retry without --offline")
    index = _refresh_one(entry)
    # The fetch can take a while, so the list is re-read under the lock: another `index add`
    # that finished meanwhile keeps its entry.
    with update_lock(_config_path()):
        entries = list_extra_indexes()
        if any(e.name == name for e in entries):
            raise MicrotvmError(f"an index named {name!r} was just added by another command; run `microtvm index list`")
        _write_extra_indexes(entries + [entry])
    return index


def remove_extra_index(name: str) -> None:
    """Forget an extra index and its cached copy."""
    with update_lock(_config_path()):
        entries = list_extra_indexes()
        if not any(e.name == name for e in entries):
            known = ", ".join(e.name for e in entries) or "none"
            raise TemplateNotFoundError(f"no extra index named {name!r} (extra indexes: {known})")
        _write_extra_indexes([e for e in entries if e.name != name])
    for p in _copy_paths(name):
        if p.exists():
            p.unlink()


def _read_meta(name: str) -> Dict[str, Any]:
    import json

    meta = _copy_paths(name)[1]
    try:
        return json.loads(meta.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}


def _store_copy(entry: ExtraIndex, data: bytes, etag: Optional[str]) -> None:
    import json

    copy, meta = _copy_paths(entry.name)
    atomic_write_bytes(copy, data)
    atomic_write_bytes(
        meta,
        json.dumps({"location": entry.location, "etag": etag, "fetched": time.time()}).encode("utf-8"),
    )


def _http_get(url: str, etag: Optional[str], label: str) -> Tuple[int, Any, bytes]:
    """GET within the limits of :mod:`microtvm_registry.http`: retries with backoff (Retry-After
    capped), one overall deadline, and at most MAX_INDEX_BYTES (an endless body costs a few MB,
    not gigabytes). Returns (status, headers, body); the caller words every status itself."""
    from ..http import bounded_get, byte_limit

    headers = {"Accept": "application/toml, text/plain, */*"}
    if etag:
        headers["If-None-Match"] = etag
    return bounded_get(
        url,
        what=label,
        max_bytes=byte_limit(MAX_INDEX_ENV, DEFAULT_MAX_INDEX_BYTES),
        limit_env=MAX_INDEX_ENV,
        headers=headers,
        accept=tuple(range(100, 600)),  # the caller words other statuses itself
        retries=HTTP_RETRIES,
        backoff=0.2,
        connect_timeout=HTTP_TIMEOUT[0],
        read_timeout=HTTP_TIMEOUT[1],
    )

def _refresh_one(entry: ExtraIndex) -> Index:
    """Fetch or read ``entry``, validate it, keep it as the last good copy, return it.

    A bad new copy never replaces the last good one: it is validated before it is stored.
    """
    copy, _meta = _copy_paths(entry.name)
    origin = entry.origin()
    if not entry.remote:
        path = Path(entry.location)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FetchError(f"index {entry.name!r}: cannot read {path}: {err.strerror or err}") from None
        copy_path = _copy_paths(entry.name)[0]
        try:
            unchanged = copy_path.read_bytes() == data and _read_meta(entry.name).get("location") == entry.location
        except OSError:
            unchanged = False
        # Local indexes are read on every command. Text identical to the last good copy was
        # fully validated when it was stored, so its versions are checked only when used (as
        # for packaged indexes); a changed file is validated whole before it is stored.
        index = parse_index(data, str(path), origin, base=str(path), lazy=unchanged, memo=True)
        if not unchanged:
            _store_copy(entry, data, None)
        return index
    meta = _read_meta(entry.name)
    etag = meta.get("etag") if copy.exists() and meta.get("location") == entry.location else None
    status, headers, data = _http_get(entry.location, etag, f"index {entry.name!r} ({entry.location})")
    if status == 304 and etag:
        index = parse_index(copy.read_bytes(), entry.location, origin, base=entry.location, memo=True)
        _store_copy(entry, copy.read_bytes(), etag)  # refresh the timestamp
        return index
    if status != 200:
        raise FetchError(f"index {entry.name!r}: {entry.location} answered HTTP {status}")
    index = parse_index(data, entry.location, origin, base=entry.location, memo=True)
    _store_copy(entry, data, headers.get("ETag"))
    return index


def _load_copy(entry: ExtraIndex) -> Optional[Index]:
    copy, _ = _copy_paths(entry.name)
    meta = _read_meta(entry.name)
    if not copy.exists() or meta.get("location") != entry.location:
        return None
    return parse_index(copy.read_bytes(), entry.location, entry.origin(), base=entry.location, memo=True)


def _copy_age(entry: ExtraIndex) -> str:
    fetched = _read_meta(entry.name).get("fetched")
    if not fetched:
        return "an earlier copy"
    return "the copy from " + time.strftime("%Y-%m-%d %H:%M", time.localtime(fetched))


def load_extra_indexes(*, offline: bool = False, refresh: bool = False) -> List[Index]:
    """Every extra index that can be read; a broken one is one warning line, never an error.

    Remote indexes are read from the last good copy unless ``refresh`` (``microtvm index
    update``) or there is no copy yet; local files are re-read each time. Offline never fetches.
    """
    result = []
    try:
        entries = list_extra_indexes()
    except MicrotvmError as err:
        warn(str(err))
        return []
    for entry in entries:
        index = None
        fresh_needed = refresh or not entry.remote or _load_copy_safe(entry) is None
        if fresh_needed and not (offline and entry.remote):
            try:
                index = _refresh_one(entry)
            except (MicrotvmError, ValueError, RecursionError) as err:  # one broken index is one warning
                err = err if isinstance(err, MicrotvmError) else MicrotvmError(f"index {entry.name!r} ({entry.location}): {first_line(err)}")
                fallback = _load_copy_safe(entry)
                tail = f"; using {_copy_age(entry)}" if fallback else "; skipped"
                warn(f"{first_line(err)}{tail}")
                index = fallback
        else:
            index = _load_copy_safe(entry)
            if index is None:
                warn(f"index {entry.name!r} ({entry.location}) has no cached copy and --offline is set; skipped")
        if index is not None:
            result.append(index)
    return result


def update_extra_indexes() -> List[Tuple[str, bool, str]]:
    """Re-fetch every extra index now; (name, ok, one-line message) each. Failures keep the old copy."""
    report = []
    for entry in list_extra_indexes():
        try:
            index = _refresh_one(entry)
            report.append((entry.name, True, f"ok ({len(index.templates)} template(s))"))
        except MicrotvmError as err:
            fallback = _load_copy_safe(entry)
            tail = f"; keeping {_copy_age(entry)}" if fallback else "; no copy kept"
            report.append((entry.name, False, f"failed: {first_line(err)}{tail}"))
    return report


def _load_copy_safe(entry: ExtraIndex) -> Optional[Index]:
    try:
        return _load_copy(entry)
    except (MicrotvmError, ValueError, RecursionError):
        return None
