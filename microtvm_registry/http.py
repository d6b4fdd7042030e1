"""One bounded HTTP GET for everything we download (archives, extra indexes).

Every download has limits a user can rely on, so that a broken or hostile server costs seconds
and megabytes, never hours or gigabytes:

- one overall deadline across all attempts (``MICROTVM_REGISTRY_DOWNLOAD_DEADLINE``, default
  300 s), reported in the error;
- ``Retry-After`` obeyed only up to :data:`RETRY_AFTER_CAP` seconds (and never past the deadline);
- a byte limit per download (the caller's: a few MB for an index, 256 MB by default for an
  archive, ``MICROTVM_REGISTRY_MAX_ARCHIVE_BYTES``), checked against Content-Length before the
  body and against the bytes as they arrive;
- bytes are the bytes on the wire: ``Accept-Encoding: identity`` is asked for, and a body sent
  with a ``Content-Encoding`` anyway is stored undecoded (the pinned sha256 is of the file as
  served), so Content-Length and the count always agree;
- redirects: at most 10, and only to http(s); a loop or a redirect to ``file://`` is one line.

requests is imported only when a download happens (warm paths never pay for it).
"""
from __future__ import annotations

import email.utils
import time
from typing import Any, BinaryIO, Callable, Dict, Mapping, Optional, Tuple

from .errors import FetchError, first_line
from . import limits
from .limits import env_number

DEADLINE_ENV = "MICROTVM_REGISTRY_DOWNLOAD_DEADLINE"
DEFAULT_DEADLINE = 300.0
RETRY_AFTER_CAP = 30.0
MAX_REDIRECTS = 10
RETRY_STATUSES = (429, 500, 502, 503, 504)


def deadline_seconds() -> float:
    """The overall deadline of one download, from the environment or the default."""
    return env_number(DEADLINE_ENV, DEFAULT_DEADLINE, "seconds", FetchError)


def byte_limit(env: str, default: int) -> int:
    """A download's size limit from ``env`` (bytes) or ``default``."""
    return limits.byte_limit(env, default, FetchError)


def retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), uncapped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value[:12])  # a 5000-digit number is still "very long", not an OverflowError
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class _Retry(Exception):
    """A failure worth another attempt (connection trouble, a 5xx, a short body)."""

    def __init__(self, reason: str, wait: Optional[float] = None) -> None:
        super().__init__(reason)
        self.wait = wait


def bounded_get(
    url: str,
    *,
    what: str,
    max_bytes: int,
    limit_env: str,
    sink: Optional[BinaryIO] = None,
    headers: Optional[Mapping[str, str]] = None,
    accept: Tuple[int, ...] = (200,),
    retries: int = 3,
    backoff: float = 0.5,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    deadline: Optional[float] = None,
    on_start: Optional[Callable[[Optional[int]], None]] = None,
    on_chunk: Optional[Callable[[bytes], None]] = None,
) -> Tuple[int, Dict[str, str], bytes]:
    """GET ``url`` within the limits above; return (status, headers, body).

    The body is returned when ``sink`` is None, else written to ``sink`` (which is truncated
    before each attempt) and ``b""`` is returned. ``what`` names the download in errors;
    ``limit_env`` is the variable that raises ``max_bytes``. A status outside ``accept`` (and not
    worth retrying) is a FetchError naming it.
    """
    import requests

    deadline = deadline_seconds() if deadline is None else deadline
    give_up_at = time.monotonic() + deadline
    last = ""
    session = requests.Session()
    session.max_redirects = MAX_REDIRECTS
    request_headers = {"Accept-Encoding": "identity", **(headers or {})}
    try:
        for attempt in range(retries + 1):
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            try:
                return _attempt(session, url, what, max_bytes, limit_env, sink, request_headers, accept,
                                (min(connect_timeout, remaining), min(read_timeout, remaining)), give_up_at, deadline,
                                on_start, on_chunk)
            except _Retry as err:
                last = str(err)
                if attempt == retries:
                    break
                wait = err.wait if err.wait is not None else backoff * (2 ** attempt)
                wait = min(wait, RETRY_AFTER_CAP, max(0.0, give_up_at - time.monotonic()))
                time.sleep(wait)
    finally:
        session.close()
    if time.monotonic() >= give_up_at:
        raise FetchError(
            f"{what}: gave up after {deadline:g} s, the download deadline (last: {last or 'no answer'}); "
            f"set {DEADLINE_ENV} to allow longer"
        )
    raise FetchError(f"{what}: failed after {retries + 1} attempts: {last}")


def _attempt(session: Any, url: str, what: str, max_bytes: int, limit_env: str, sink: Optional[BinaryIO],
             headers: Mapping[str, str], accept: Tuple[int, ...], timeout: Tuple[float, float], give_up_at: float,
             deadline: float, on_start: Optional[Callable[[Optional[int]], None]],
             on_chunk: Optional[Callable[[bytes], None]]) -> Tuple[int, Dict[str, str], bytes]:
    import requests
    import urllib3.exceptions

    try:
        response = session.get(url, stream=True, timeout=timeout, headers=dict(headers))
    except requests.TooManyRedirects:
        raise FetchError(f"{what}: more than {MAX_REDIRECTS} redirects (a redirect loop at {url}); tell the server's owner") from None
    except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as err:
        raise FetchError(f"{what}: redirected to a URL that is not http(s) ({first_line(err)[:200]}); refused") from None
    except (requests.ConnectionError, requests.Timeout) as err:
        raise _Retry(_short(err)) from None
    except requests.RequestException as err:
        raise FetchError(f"{what}: {first_line(err)[:200]}") from None
    with response:
        status = response.status_code
        if status in RETRY_STATUSES:
            wait = retry_after(response.headers.get("Retry-After"))
            raise _Retry(f"HTTP {status}" + (f" (Retry-After {wait:g} s, waited at most {RETRY_AFTER_CAP:g})" if wait else ""), wait)
        if status not in accept:
            raise FetchError(f"{what}: {url} answered HTTP {status} (check the URL; the server may be down)")
        length_text = response.headers.get("Content-Length", "")
        length = int(length_text) if length_text.isdigit() and len(length_text) < 20 else None
        if length is not None and length > max_bytes:
            raise FetchError(f"{what}: {url} is {length:,} bytes, more than the limit of {max_bytes:,}; set {limit_env} to allow it")
        if on_start:
            on_start(length)
        body = bytearray()
        if sink is not None:
            sink.seek(0)
            sink.truncate()
        received = 0
        try:
            for chunk in _chunks(response.raw):
                received += len(chunk)
                if received > max_bytes:
                    raise FetchError(f"{what}: {url} sent more than the limit of {max_bytes:,} bytes; stopped (set {limit_env} to allow more)")
                if time.monotonic() > give_up_at:
                    raise FetchError(f"{what}: not finished after {deadline:g} s, the download deadline; set {DEADLINE_ENV} to allow longer")
                if sink is not None:
                    sink.write(chunk)
                else:
                    body += chunk
                if on_chunk:
                    on_chunk(chunk)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError) as err:  # the last: urllib3's own read errors (read1 is urllib3's)
            raise _Retry(_short(err)) from None
        if length is not None and received != length:
            raise _Retry(f"got {received} of {length} bytes")
        return status, response.headers, bytes(body)  # requests' case-insensitive dict


def _chunks(raw: Any):
    """The body's bytes as they arrive, undecoded. ``read1`` returns whatever one socket read
    gives, so a server trickling a byte at a time still lets the caller check the deadline
    between reads (``read(n)`` would block until n bytes came)."""
    read1 = getattr(raw, "read1", None)
    while True:
        chunk = read1(1 << 16, decode_content=False) if read1 is not None else raw.read(1 << 12, decode_content=False)
        if not chunk:
            return
        yield chunk


def _short(err: BaseException) -> str:
    import requests
    import urllib3.exceptions

    if isinstance(err, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "the server timed out"
    return first_line(err)[:200]
