"""Write index/<name>.parsed.json beside each packaged index/<name>.toml.

Warm commands read the packaged indexes on every start; parsing their TOML is a large share of
what ``microtvm path`` costs. The parse ships beside the TOML (in the checkout and the wheel, as
trusted as the code), holding the sha256 of the text it came from: it is used only while that
still matches, so a stale one costs speed, never correctness. ``tests/registry`` fails when one
is stale: run ``python tools/parse_indexes.py`` after editing an index.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parsed(toml_path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    raw = toml_path.read_bytes()
    return {"sha256": hashlib.sha256(raw).hexdigest(), "doc": tomllib.loads(raw.decode("utf-8"))}


def main() -> int:
    for toml_path in sorted((ROOT / "index").glob("*.toml")):
        target = toml_path.with_suffix(".parsed.json")
        target.write_text(json.dumps(parsed(toml_path), sort_keys=True, separators=(",", ":")) + "\n", "utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
