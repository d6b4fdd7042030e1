"""Our own small files: TOML read through a parse memo, and writes that readers never see half done.

The extra-index list, the trusted ids, lockfiles and index copies all use these, so they sit on
the lowest floor with no imports from the rest of the package but ``dirs`` (lazily).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Type



PARSED_TOML_DIR = "parsed-toml"


def load_toml_bytes(data: bytes, *, memo: bool = False) -> Dict[str, Any]:
    """Parse TOML with tomllib (3.11+) or tomli; raises their TOMLDecodeError.

    Warm commands read the same few files every time (the packaged indexes, the extra-index
    list, a lockfile), and importing and running a TOML parser is a large share of what
    ``microtvm path`` costs. So a parse is memoized in the cache as JSON, keyed by the text's
    CRC and length, and holding the text itself: a hit is used only if the text is identical,
    so a collision can never return another file's data. Writing the memo is best effort (a
    shared, read-only cache simply never gets one).

    Only text that itself lives in the cache (extra indexes' copies) asks for the memo
    (``memo=True``): anyone who can write the cache could write a memo, so a file whose meaning is
    trusted (a packaged index, a lockfile, our config) is never read through one.
    """
    text = data.decode("utf-8")
    memo_path = _toml_memo_path(data) if memo else None
    if memo_path is not None:
        try:
            with open(memo_path, "r", encoding="utf-8") as fh:
                stored = json.load(fh)
            if stored.get("toml") == text and isinstance(stored.get("doc"), dict):
                return stored["doc"]
        except (OSError, ValueError, AttributeError, RecursionError):
            pass
    tomllib = _toml_module()
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise tomllib.TOMLDecodeError("nested too deeply (a real file is a few levels deep)") from None
    if memo_path is not None:
        try:
            payload = json.dumps({"toml": text, "doc": doc})  # TypeError for TOML dates: skip
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.tmp")
            tmp.write_text(payload, encoding="utf-8")
            os.replace(tmp, memo_path)
        except (OSError, TypeError, ValueError):
            pass
    return doc


def _toml_memo_path(data: bytes) -> Optional[Path]:
    import zlib

    from .dirs import cache_dir

    try:
        return cache_dir() / PARSED_TOML_DIR / f"{zlib.crc32(data):08x}-{len(data)}.json"
    except Exception:  # noqa: BLE001 - no usable cache folder: just parse
        return None


def read_toml_config(path: Path, error: type, what: str) -> Optional[Dict[str, Any]]:
    """One of our config files (extra indexes, trusted ids), or None when there is none yet; an
    unreadable one raises ``error`` naming the file, since guessing would lose the user's data."""
    if not path.exists():
        return None
    try:
        return load_toml_bytes(path.read_bytes())
    except (OSError, UnicodeDecodeError, toml_decode_error()) as err:
        raise error(f"{path}: cannot read {what}: {err}; fix or delete the file") from None


def _toml_module() -> Any:
    """tomllib (3.11+) or its backport tomli (3.10)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10
        import tomli as tomllib
    return tomllib


def toml_decode_error() -> Type[Exception]:
    error: Type[Exception] = _toml_module().TOMLDecodeError
    return error


#: How long a read-modify-write waits for another process's before giving up with a message.
UPDATE_LOCK_TIMEOUT = 120.0


@contextlib.contextmanager
def update_lock(path: Path) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` across a read-modify-write of it.

    Two ``microtvm lock`` (or ``index add``, ``trust``) runs that each read the file, add their
    part and write it back would otherwise lose one another's part. The file itself cannot carry
    the lock (an atomic write replaces its inode), and a lock file beside it would litter a
    project, so the lock lives in our runtime folder, named by a hash of the file's real path
    (a symlinked lockfile and its target share one lock).
    """
    import hashlib

    from filelock import FileLock, Timeout

    from .errors import MicrotvmError

    real = os.path.realpath(path)
    name = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32] + ".lock"
    lock = FileLock(str(_lock_folder() / name), timeout=UPDATE_LOCK_TIMEOUT)
    try:
        lock.acquire()
    except Timeout:
        raise MicrotvmError(
            f"{real}: another microtvm command has been updating it for {UPDATE_LOCK_TIMEOUT:.0f} s; "
            "wait for it to finish (or end it) and run this again"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _lock_folder() -> Path:
    """Our runtime folder's locks/ (private to the user), else one in the system temp folder, so
    a read-only shared cache still lets a user update their own files. The temp folder is
    shared: there the folder must be ours alone (see :func:`private_folder`)."""
    import tempfile

    from .dirs import runtime_dir
    from .errors import MicrotvmError

    try:
        folder = runtime_dir() / "locks"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.access(folder, os.W_OK):
            return folder
    except Exception:  # noqa: BLE001 - no usable cache folder: the temp folder will do
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    shared = Path(tempfile.gettempdir()) / f"microtvm-registry-{uid}"
    problem = private_folder(shared)
    if problem is None:
        locks = shared / "locks"
        problem = private_folder(locks)
        if problem is None:
            return locks
    raise MicrotvmError(
        f"no private folder for microtvm's locks: the runtime folder is not writable, and {problem}; "
        "remove it (or set XDG_RUNTIME_DIR to a folder of your own) and run this again"
    )


def private_folder(folder: Path) -> Optional[str]:
    """Makes ``folder`` (mode 0700) unless it exists; None when it is a real folder owned by this
    user that no one else may write, else what is wrong with it. In a shared place such as /tmp
    anyone can create the folder first, to read or hold our locks or plant links in it."""
    import stat

    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as err:
        return f"{folder} cannot be made ({err.strerror or err})"
    try:
        info = os.lstat(folder)
    except OSError as err:
        return f"{folder} cannot be read ({err.strerror or err})"
    if stat.S_ISLNK(info.st_mode):
        return f"{folder} is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"{folder} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o022:
        return f"{folder} may be written by others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def atomic_write_bytes(path: Path, data: bytes, *, follow_symlinks: bool = True) -> None:
    """Write beside the target and rename over it, so readers never see half a file.

    With ``follow_symlinks`` a symlinked target is written through the link (the rename replaces
    the file it points to), so a lockfile kept elsewhere and linked into a project stays a link.
    Without it (outputs written into a folder others may share), a link planted at the name is
    replaced, never followed. The temporary file is created exclusively (never through a link
    planted at its name) and gets the mode any new file of the user's would (the umask).
    """
    import tempfile

    path = Path(os.path.realpath(path)) if follow_symlinks else Path(os.path.abspath(path))
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=str(path.parent))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        from .errors import MicrotvmError

        raise MicrotvmError(f"cannot write {path}: {err.strerror or err}; check that its folder exists and is writable") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def current_umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, links resolved on both sides."""
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == base or base in real.parents


def warn(message: str) -> None:
    """One line on stderr that does not stop anything (a broken extra index, a bad plugin)."""
    print(f"microtvm: warning: {message}", file=sys.stderr)
