"""Trust: starting a template's server runs the template's code, so we ask first.

- Templates pinned by a packaged index (and the packaged templates themselves) are trusted: they
  were reviewed when this package was released, and the cache verifies their commit/tree/blob
  ids, so the bytes that run are the bytes that were reviewed.
- Anything else (an extra index, a URL, a plugin, a lockfile pin no packaged index knows) runs
  only once the user trusted its *content id*: ``microtvm trust SPEC`` records it in
  ``trusted.toml`` in the config folder, or ``--trust`` allows one run. A different content id
  (the vendor changed the template) asks again.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from ..errors import TrustError

TRUST_FILE = "trusted.toml"

if TYPE_CHECKING:  # pragma: no cover
    from ..registry.models import TemplateVersion



@dataclasses.dataclass(frozen=True)
class TrustRecord:
    """One trusted content id, with what it was when trusted (for people reading the file)."""

    name: str
    version: str
    content_id: str
    source: str = ""
    trusted_at: str = ""


def trust_file() -> Path:
    from .. import dirs

    return dirs.config_dir() / TRUST_FILE


def load_trusted() -> List[TrustRecord]:
    """Every record in the trust file (empty when there is none)."""
    from ..registry.index_format import HEX40, _Checker
    from ..files import read_toml_config

    path = trust_file()
    doc = read_toml_config(path, TrustError, "the trusted templates")
    if doc is None:
        return []
    chk = _Checker(str(path), TrustError)
    records = []
    for n, table in enumerate(chk.get_tables(doc, "trusted", "")):
        key = f"trusted[{n}]"
        content_id = chk.get_str(table, "content_id", key, required=True)
        if not HEX40.match(content_id):
            raise chk.fail(f"{key}.content_id", "expected 40 hex digits")
        records.append(
            TrustRecord(
                name=chk.get_str(table, "name", key, required=True),
                version=chk.get_str(table, "version", key, default=""),
                content_id=content_id,
                source=chk.get_str(table, "source", key, default=""),
                trusted_at=chk.get_str(table, "trusted_at", key, default=""),
            )
        )
    return records


def is_trusted(content_id: str) -> bool:
    return any(r.content_id == content_id for r in load_trusted())


def record_trust(name: str, version: str, content_id: str, source: str = "") -> bool:
    """Add ``content_id`` to the trust file; False if it was already there."""
    import tomli_w

    from ..files import atomic_write_bytes, update_lock

    with update_lock(trust_file()):
        records = load_trusted()
        if any(r.content_id == content_id for r in records):
            return False
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        records.append(TrustRecord(name, version, content_id, source, stamp))
        doc = {"trusted": [dataclasses.asdict(r) for r in records]}
        header = b"# Template content ids whose servers you allowed to run (`microtvm trust SPEC`).\n"
        atomic_write_bytes(trust_file(), header + tomli_w.dumps(doc).encode("utf-8"))
    return True


def modified_packaged(tv: "TemplateVersion", content_id: Optional[str]) -> Optional[str]:
    """The id a packaged template was installed with, when its folder no longer hashes to it."""
    from ..registry.source_kinds import kind_of

    if not content_id:
        return None
    recorded = kind_of(tv.source).installed_content_id(tv.source)
    return recorded if recorded is not None and recorded != content_id else None


def trust_state(tv: "TemplateVersion", content_id: Optional[str]) -> str:
    """"packaged" (trusted by origin), "trusted" (user trusted this id), "modified" (a packaged
    template changed since install) or "untrusted"."""
    if modified_packaged(tv, content_id):
        return "modified"
    if tv.origin.trusted:
        return "packaged"
    if content_id and is_trusted(content_id):
        return "trusted"
    return "untrusted"


def check_trust(tv: "TemplateVersion", content_id: Optional[str], *, allow: bool = False) -> None:
    """Raise TrustError unless template version ``tv`` at ``content_id`` may run its server."""
    from ..registry.models import describe_source

    installed = modified_packaged(tv, content_id)
    if installed and not allow:
        raise TrustError(
            f"{tv.name}: the installed package's template was changed since microtvm-registry was installed "
            f"(content id {content_id}, installed as {installed}), so it is not trusted; reinstall microtvm-registry, "
            "or copy the folder elsewhere, edit the copy and give its path"
        )
    if allow or tv.origin.trusted:
        return
    records = load_trusted()
    if content_id and any(r.content_id == content_id for r in records):
        return
    command = f"microtvm trust {tv.name}@{tv.version}"
    earlier = [r for r in records if r.name == tv.name]
    if earlier:
        raise TrustError(
            f"{tv.name} {tv.version} changed since you trusted it (content id {content_id}, you trusted "
            f"{earlier[-1].content_id[:12]} for {earlier[-1].version}); review it, then run `{command}` or pass --trust"
        )
    raise TrustError(
        f"{tv.name} {tv.version} from {tv.origin.describe()} ({describe_source(tv.source)}, content id {content_id}) "
        f"is not trusted and starting it runs its code; review it, then run `{command}` or pass --trust"
    )
