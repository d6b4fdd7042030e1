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
            # Never the cache's parse memo: whoever can write the cache could repoint a curated
            # name. The parse shipped beside the TOML is used, checked by hash.
            cached.append(load_index_file(file, origin, allow_packaged=True, lazy=True, parsed=_shipped_parse(file)))
        _PACKAGED_MEMO.clear()
        _PACKAGED_MEMO[key] = cached
    return list(cached)


def _shipped_parse(toml_file: Any) -> Any:
    """``{"sha256", "doc"}`` shipped beside a packaged index (``tools/parse_indexes.py`` writes
    it), or None; load_index_file uses it only while the sha256 matches the TOML's text."""
    import json

    try:
        data = json.loads(toml_file.with_suffix(".parsed.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


_PACKAGED_MEMO: Dict[Any, List[Index]] = {}  # parsed once per process (Index objects are not mutated)
