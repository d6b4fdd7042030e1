"""``microtvm.lock``: the templates a project was made with, pinned by exact source and content id.

The file sits at the project root and is found by walking up from the current folder, like
other lockfiles, so every command run inside the project honours it. Format::

    # written by `microtvm lock`
    schema = 1

    [[template]]
    name = "apache-tvm/zephyr"
    version = "0.18.0"
    specifier = ">=0.12"             # what was asked for ("" = any version); sync stays within it
    index = "apache-tvm"             # where it was resolved from (informational)
    content_id = "<40 hex>"          # git tree id of the materialized folder
    git = "https://github.com/apache/tvm.git"
    ref = "v0.18.0"
    commit = "<40 hex>"
    subdir = "apps/microtvm/zephyr/template_project"
    tree = "<40 hex>"
    [[template.extra]]
    path = "python/tvm/micro/project_api/server.py"
    dest = "server.py"
    blob = "<40 hex>"

Other sources use ``url`` + ``sha256`` (+ ``subdir``) + ``tree``, ``packaged = "templates/host"``
or ``plugin = "<distribution>"``. An entry with only ``name`` and ``version`` (written by hand)
is allowed: ``microtvm sync`` resolves it and records the rest, and ``sync --frozen`` refuses
because the file would change. An entry without ``specifier`` (written by hand, or by an older
version) asks for exactly its version. The file is written with tomli_w, atomically.

This module is the file format only; ``lock`` and ``sync`` are :mod:`microtvm_registry.pins`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

from ..errors import LockfileError, VerificationError

if TYPE_CHECKING:  # pragma: no cover
    from .models import AnySource, TemplateVersion



LOCK_NAME = "microtvm.lock"

SCHEMA = 1


_ENTRY_KEYS = {
    "name", "version", "index", "content_id", "git", "ref", "commit", "subdir", "tree", "extra",
    "url", "sha256", "packaged", "plugin", "include", "specifier", "paths", "kind",
}


_HEADER = (
    "# microtvm.lock: templates pinned for this project by `microtvm lock`.\n"
    "# Commit it; `microtvm sync` fetches and verifies exactly these.\n"
)


from .models import PluginPin  # noqa: E402,F401 - lockfile entries hold it; importable from here as before


@dataclasses.dataclass(frozen=True)
class LockEntry:
    """One pinned template. ``source`` is None for a hand-written name+version entry."""

    name: str
    version: str
    source: Union["AnySource", PluginPin, None] = None
    content_id: Optional[str] = None
    index: Optional[str] = None
    #: The PEP 440 specifier asked for ("" = any version; None = exactly ``version``).
    specifier: Optional[str] = None
    kind: str = "template"  # or "library" (recorded only for libraries)

    @property
    def complete(self) -> bool:
        return self.source is not None and self.content_id is not None

    @property
    def requested(self) -> str:
        """The spec this pin stands for, as ``lock`` and ``sync`` re-resolve it."""
        if self.specifier is None:
            return f"{self.name}@=={self.version}"
        return f"{self.name}@{self.specifier}" if self.specifier else self.name

    def satisfies_request(self) -> bool:
        """Whether the pinned version is still within what was asked for (a hand edit of
        ``specifier`` can take it out)."""
        if not self.specifier:
            return True
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(self.specifier).contains(self.version, prereleases=True)

    def to_table(self) -> Dict[str, Any]:
        from .models import source_to_table

        table: Dict[str, Any] = {"name": self.name, "version": self.version}
        if self.kind != "template":
            table["kind"] = self.kind
        if self.specifier is not None:
            table["specifier"] = self.specifier
        if self.index:
            table["index"] = self.index
        if self.content_id:
            table["content_id"] = self.content_id
        if isinstance(self.source, PluginPin):
            table["plugin"] = self.source.dist
        elif self.source is not None:
            table.update(source_to_table(self.source))
        return table


@dataclasses.dataclass
class Lockfile:
    """The parsed lockfile; ``entries`` keyed by full template name."""

    path: Path
    entries: Dict[str, LockEntry] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Lockfile":
        """Parse and validate; errors name the file and the key."""
        from .index_format import _Checker, parse_source, NAME_RE, HEX40
        from ..files import load_toml_bytes, toml_decode_error

        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise LockfileError(f"{path}: cannot read: {err.strerror or err}") from None
        try:
            doc = load_toml_bytes(raw)
        except UnicodeDecodeError:
            raise LockfileError(f"{path}: not UTF-8 text") from None
        except toml_decode_error() as err:
            raise LockfileError(f"{path}: not valid TOML: {err}; fix it or delete it and run `microtvm lock`") from None
        chk = _Checker(str(path), LockfileError)
        schema = doc.get("schema")
        if schema is None:
            raise chk.fail("schema", "missing (required): add `schema = 1` at the top")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema != SCHEMA:
            raise chk.fail("schema", f"expected {SCHEMA}, got {schema!r}")
        from packaging.version import InvalidVersion

        from .models import parse_version

        lock = cls(path)
        for n, table in enumerate(chk.get_tables(doc, "template", "")):
            key = f"template[{n}]"
            chk.unknown(table, _ENTRY_KEYS, key)
            name = chk.get_str(table, "name", key, required=True)
            if not NAME_RE.match(name):
                raise chk.fail(f"{key}.name", f"{name!r} is not NAME or VENDOR/NAME")
            if name in lock.entries:
                raise chk.fail(f"{key}.name", f"{name!r} is pinned twice")
            version = chk.get_str(table, "version", key, required=True)
            try:
                parse_version(version)
            except InvalidVersion:
                raise chk.fail(f"{key}.version", f"{version[:40]!r} is not a PEP 440 version") from None
            content_id = chk.get_str(table, "content_id", key)
            if content_id is not None and not HEX40.match(content_id):
                raise chk.fail(f"{key}.content_id", "expected 40 hex digits")
            index = chk.get_str(table, "index", key)
            kind = chk.get_str(table, "kind", key, default="template")
            if kind not in ("template", "library"):
                raise chk.fail(f"{key}.kind", f"{kind!r} is not template or library")
            specifier = chk.get_str(table, "specifier", key)
            if specifier:
                from packaging.specifiers import InvalidSpecifier, SpecifierSet

                try:
                    if len(specifier) > 200:  # a 5000-digit bound would fail later as a ValueError from int()
                        raise InvalidSpecifier(specifier[:40])
                    SpecifierSet(specifier)
                except InvalidSpecifier:
                    raise chk.fail(f"{key}.specifier", f"{specifier!r} is not a PEP 440 specifier (e.g. '>=0.12,<0.19')") from None
            if "plugin" in table:
                others = [k for k in ("git", "url", "packaged", "path") if k in table]
                if others:
                    raise chk.fail(key, f"give one source, not plugin and {others[0]}")
                source: Any = PluginPin(chk.get_str(table, "plugin", key, required=True))
            else:
                source = parse_source(
                    chk, table, key, base=None, allow_packaged=True, allow_folder=False, required=False
                )
            if source is not None and content_id is None:
                raise chk.fail(f"{key}.content_id", "missing: an entry with a source must pin its content id")
            lock.entries[name] = LockEntry(name, version, source, content_id, index, specifier, kind)
        return lock

    def to_bytes(self) -> bytes:
        import tomli_w

        doc = {"schema": SCHEMA, "template": [self.entries[n].to_table() for n in sorted(self.entries)]}
        return _HEADER.encode("utf-8") + b"\n" + tomli_w.dumps(doc).encode("utf-8")

    def save(self) -> None:
        from ..files import atomic_write_bytes

        atomic_write_bytes(self.path, self.to_bytes())

    def find(self, name: str) -> Optional[LockEntry]:
        """The entry for a full name, or for a short name pinned exactly once."""
        if name in self.entries:
            return self.entries[name]
        if "/" not in name:
            hits = [e for n, e in self.entries.items() if n.rsplit("/", 1)[-1] == name]
            if len(hits) == 1:
                return hits[0]
        return None


def find_lockfile(start: Optional[Path] = None) -> Optional[Path]:
    """``microtvm.lock`` in ``start`` (default: the current folder) or the nearest parent."""
    here = Path(start or os.getcwd()).absolute()
    for folder in (here, *here.parents):
        candidate = folder / LOCK_NAME
        if candidate.is_file():
            return candidate
    return None


def load_project_lock(start: Optional[Path] = None) -> Optional[Lockfile]:
    """The project's lockfile, or None when there is none."""
    path = find_lockfile(start)
    return Lockfile.load(path) if path else None


def entry_for(tv: "TemplateVersion", content_id: str, specifier: Optional[str] = None) -> LockEntry:
    """The lock entry that pins template version ``tv`` at ``content_id``, asked for as
    ``specifier`` ("" = any version)."""
    from .source_kinds import kind_of

    source = kind_of(tv.source).lock_source(tv.source, tv.origin.name)
    return LockEntry(tv.name, tv.version, source, content_id, tv.origin.name, specifier, tv.kind)


def check_content_id(label: str, expected: Optional[str], actual: Optional[str]) -> None:
    """Raise VerificationError if a pinned content id does not match what was materialized."""
    if expected and actual and expected != actual:
        raise VerificationError(
            f"{label}: content id {actual} does not match the pinned {expected}; "
            "the source changed, so it was refused: check it, then re-pin with `microtvm lock`"
        )
