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
        shipped = _shipped_parses()
        for file in files:
            origin = Origin("packaged", file.stem, str(file), trusted=True, remote=False)
            # Never the cache's parse memo: whoever can write the cache could repoint a curated
            # name. The wheel ships its own parse (checked by hash); a checkout parses the TOML.
            cached.append(load_index_file(file, origin, allow_packaged=True, lazy=True, parsed=shipped.get(file.name)))
        _PACKAGED_MEMO.clear()
        _PACKAGED_MEMO[key] = cached
    return list(cached)


def _shipped_parses() -> Dict[str, Any]:
    """``{file name: {"sha256", "doc"}}`` written into the wheel by setup.py (empty in a checkout)."""
    import json

    from ..packaged import shipped_data_file

    path = shipped_data_file("index-parsed.json")
    try:
        data = json.loads(path.read_text("utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_PACKAGED_MEMO: Dict[Any, List[Index]] = {}  # parsed once per process (Index objects are not mutated)
