"""The indexes shipped in the wheel's ``index/`` folder; their pins are trusted.

Parsed once per process and lazily per template (``microtvm path`` needs one template's
versions, not the whole curated index's).
"""
from __future__ import annotations

from typing import Any, Dict, List

from .index_format import load_index_file
from .models import Index, Origin


def packaged_indexes() -> List[Index]:
    """Every index shipped with the package; its pins are trusted."""
    from ..packaged import get_packaged_resource

    folder = get_packaged_resource("index")
    files = sorted(folder.glob("*.toml"))
    key = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    cached = _PACKAGED_MEMO.get(key)
    if cached is None:
        cached = []
        for file in files:
            origin = Origin("packaged", file.stem, str(file), trusted=True, remote=False)
            cached.append(load_index_file(file, origin, allow_packaged=True, lazy=True))
        _PACKAGED_MEMO.clear()
        _PACKAGED_MEMO[key] = cached
    return list(cached)


_PACKAGED_MEMO: Dict[Any, List[Index]] = {}  # parsed once per process (Index objects are not mutated)
