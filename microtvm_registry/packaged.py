"""Files shipped inside the wheel: packaged templates and indexes.

In an installed wheel the top-level ``templates/`` and ``index/`` folders live inside the
package (see pyproject's package-dir); in a source checkout or an editable install they sit
beside it. Both are found here, so callers never care which.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from .errors import TemplateNotFoundError

_PACKAGE_DIR = Path(__file__).resolve().parent
_DATA_ROOTS = ("templates", "index")


def _data_root(top: str) -> Path:
    inside = _PACKAGE_DIR / top
    if inside.is_dir():
        return inside
    return _PACKAGE_DIR.parent / top


def get_packaged_resource(relpath: str) -> Path:
    """The real path of ``relpath`` (e.g. ``templates/host``) shipped with this package."""
    parts = PurePosixPath(relpath).parts
    if not relpath or PurePosixPath(relpath).is_absolute() or ".." in parts or parts[0] not in _DATA_ROOTS:
        raise TemplateNotFoundError(
            f"packaged resource {relpath!r} is not a relative path under {' or '.join(_DATA_ROOTS)}/"
        )
    path = _data_root(parts[0]).joinpath(*parts[1:])
    if not path.exists():
        parent = path.parent
        known = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        raise TemplateNotFoundError(
            f"no packaged resource {relpath!r}; {parent.name}/ has: {', '.join(known) or 'nothing'}"
        )
    return path
