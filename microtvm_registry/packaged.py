"""Files shipped inside the wheel: packaged templates and indexes.

In an installed wheel the top-level ``templates/``, ``index/`` and ``boards/`` folders live inside
the package as ``microtvm_registry/data/templates``, ``.../data/index`` and ``.../data/boards`` (see
pyproject's package-dir); in a source checkout or an editable install they sit beside the
package. Both are found here, so callers never care which.

A template is run as a subprocess from a real folder, so when the package is imported from a
zip (zipimport, a zipapp) there is no real path: the requested subtree is then extracted once
into the cache, under a key made of the package version and a hash of the subtree's content, and
that folder is returned. Extraction goes to a temporary folder renamed into place, so a crash
never leaves half a template behind.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, List, Optional, Sequence, Tuple

from .errors import TemplateNotFoundError

_PACKAGE = __name__.rsplit(".", 1)[0]
_PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_ROOTS = ("templates", "index", "boards")
_DATA_DIR = "data"  # where the wheel puts templates/ and index/ inside the package
EXTRACT_DIR = "packaged"


def _data_root(top: str) -> Path:
    inside = _PACKAGE_DIR / _DATA_DIR / top
    if inside.is_dir():
        return inside
    return _PACKAGE_DIR.parent / top


def packaged_data_roots() -> List[Path]:
    """The folders our wheel data lives in (templates/, index/, boards/), wherever installed."""
    return [_data_root(top) for top in _DATA_ROOTS]


def shipped_root_of(path: Any) -> Optional[Path]:
    """The folder of our wheel data that holds ``path``, or None when it is not ours."""
    from .files import is_within

    return next((root for root in packaged_data_roots() if is_within(path, root)), None)


def _check_relpath(relpath: str) -> Tuple[str, ...]:
    pure = PurePosixPath(relpath) if isinstance(relpath, str) else None
    parts = pure.parts if pure is not None else ()
    if (
        not relpath
        or pure is None
        or pure.is_absolute()
        or "\\" in relpath
        or ".." in parts
        or parts[0] not in _DATA_ROOTS
    ):
        raise TemplateNotFoundError(
            f"packaged resource {relpath!r} is not a relative path under "
            f"{', '.join(r + '/' for r in _DATA_ROOTS[:-1])} or {_DATA_ROOTS[-1]}/ "
            "(absolute paths and '..' are refused)"
        )
    return parts


def get_packaged_resource(relpath: str) -> Path:
    """The real path of ``relpath`` (e.g. ``templates/host``) shipped with this package."""
    parts = _check_relpath(relpath)
    path = _data_root(parts[0]).joinpath(*parts[1:])
    if path.exists():
        return path
    zipped = _zipped_root()
    if zipped is not None:
        return _from_zip(zipped, parts, relpath)
    parent = path.parent
    known = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    raise TemplateNotFoundError(
        f"no packaged resource {relpath!r}; {parent.name}/ has: {', '.join(known) or 'nothing'}"
    )


def _zipped_root() -> Any:
    """The package as an importlib.resources Traversable when it has no real folder, else None."""
    if _PACKAGE_DIR.is_dir():
        return None
    from importlib import resources

    try:
        root = resources.files(_PACKAGE)
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - not imported as a package
        return None
    return root


def _walk(node: Any, prefix: str = "") -> List[Tuple[str, Any]]:
    """(relative posix path, Traversable) of every file under ``node``, sorted."""
    files: List[Tuple[str, Any]] = []
    for child in node.iterdir():
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            files.extend(_walk(child, rel + "/"))
        elif child.is_file():
            files.append((rel, child))
    return sorted(files, key=lambda item: item[0])


def _zip_executable(item: Any) -> bool:
    """Whether the zip entry behind a Traversable has an owner-exec bit (zipfile.Path only)."""
    root, at = getattr(item, "root", None), getattr(item, "at", None)
    if root is None or at is None or not hasattr(root, "getinfo"):
        return False
    try:
        return bool((root.getinfo(at).external_attr >> 16) & stat.S_IXUSR)
    except KeyError:
        return False


def _from_zip(root: Any, parts: Tuple[str, ...], relpath: str) -> Path:
    node = root.joinpath(_DATA_DIR)
    for n, part in enumerate(parts):
        # Look the name up among the folder's children, so a missing one can be answered with
        # what the folder does have.
        children = {c.name: c for c in node.iterdir()} if node.is_dir() else {}
        child = children.get(part)
        if child is None:
            known = sorted(children)
            where = "/".join(parts[:n]) or f"{_PACKAGE}/{_DATA_DIR}"
            raise TemplateNotFoundError(
                f"no packaged resource {relpath!r}; {where}/ has: {', '.join(known) or 'nothing'}"
            )
        node = child
    from ._version import __version__
    from .dirs import cache_dir

    import hashlib
    import shutil

    files = [("", node)] if node.is_file() else _walk(node)
    digest = hashlib.sha256()
    contents = []
    for rel, item in files:
        data = item.read_bytes()
        executable = _zip_executable(item)
        contents.append((rel, data, executable))
        digest.update(f"{rel}\0{len(data)}\0{int(executable)}\0".encode("utf-8") + data)
    key = f"{__version__}-{digest.hexdigest()[:16]}"
    target_root = cache_dir() / EXTRACT_DIR / key
    target = target_root.joinpath(*parts)
    if target.exists():
        return target
    tmp = cache_dir() / EXTRACT_DIR / f".{key}.{os.getpid()}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        dest = tmp.joinpath(*parts)
        for rel, data, executable in contents:
            out = dest / rel if rel else dest
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            if executable:
                # Keep the mode the zip recorded: it is part of the content id, and scripts run.
                out.chmod(out.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        try:
            # Another process may have won the race; its copy is identical (same key).
            os.rename(tmp, target_root)
        except OSError:
            if not target.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


RECORDED_IDS = "packaged-ids.json"

#: Not part of a packaged template: pip byte-compiles every .py of a wheel it installs.
PACKAGED_SKIP_DIRS = ("__pycache__",)


def recorded_content_id(relpath: str) -> Optional[str]:
    """The content id ``relpath`` had when the wheel was built (``setup.py`` records them), or
    None in a checkout or editable install, where the templates are the developer's to edit."""
    import json

    path = _PACKAGE_DIR / _DATA_DIR / RECORDED_IDS
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "unreadable"  # never equal to a real id: the template is then not trusted
    value = data.get(relpath) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def packaged_content_id(relpath: str, include: Sequence[str] = ()) -> str:
    """The content id of a packaged template: its folder's tree id with each shared folder it
    builds from (``include``) hashed in as a subfolder named by that folder's last part."""
    from .contentid import tree_id

    mounts = {PurePosixPath(inc).name: get_packaged_resource(inc) for inc in include}
    return tree_id(get_packaged_resource(relpath), mounts, skip_dirs=PACKAGED_SKIP_DIRS)
