"""Index files: what templates exist, at which versions, from which exact source.

An index is a static TOML file (format below), so any web server, object store or git host can
serve one and no server of our own is needed. Three kinds feed the catalog, in this priority:

1. packaged indexes, the ``*.toml`` files shipped in the wheel's ``index/`` folder (the curated
   ``apache-tvm.toml`` and ``packaged.toml`` for templates inside the wheel). Their pins are
   trusted: they were reviewed when this package was released.
2. extra indexes the user added with ``microtvm index add NAME URL_OR_PATH`` (see
   :mod:`microtvm_registry.index` ``add_extra_index``), read from the last good copy in the cache.
3. plugins: installed packages that declare the entry-point group ``microtvm_registry.templates``
   (see :mod:`microtvm_registry.plugins`).

Format (``schema = 1``)::

    schema = 1
    [[template]]
    name = "apache-tvm/zephyr"          # NAME or VENDOR/NAME
    description = "..."
    platform = "zephyr"
    [[template.version]]
    version = "0.18.0"                  # PEP 440
    git = "https://github.com/apache/tvm.git"   # a git source: git + commit + subdir (+ ref)
    ref = "v0.18.0"                     # for people; the commit is what counts
    commit = "<40 hex>"
    subdir = "apps/microtvm/zephyr/template_project"
    tree = "<40 hex>"                   # git tree id of subdir at commit
    entry = "launch_microtvm_api_server.sh"     # optional: what starts the server
    note = "..."                        # optional
    [template.version.requires]
    tools = ["west", "cmake", "cc|gcc|clang"]   # on PATH; "a|b" means either will do
    pip = ["pyserial", "pyusb"]
    python = ">=3.8"
    [[template.version.extra]]          # more files from the same commit
    path = "python/tvm/micro/project_api/server.py"
    dest = "server.py"
    blob = "<40 hex>"

An archive source is ``url`` + ``sha256`` (+ ``subdir``) + ``tree`` instead of the git keys. A
relative ``git``/``url`` is resolved against the index's own location, so an index can sit next
to its archives. Packaged indexes may also use ``packaged = "templates/NAME"`` (``version`` then
defaults to this package's version). Unknown keys are allowed (logged, never fatal) so newer
indexes still load; known keys with the wrong type raise :class:`IndexFormatError` naming the
file and the key.

This module stays free of GitPython and requests at import time: ``microtvm path`` reads the
catalog on every call and must stay fast.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import FetchError, IndexFormatError, MicrotvmError, OfflineError, TemplateNotFoundError, first_line



def _log():
    """This module's logger, imported on first use: `microtvm path` never logs, so never pays."""
    import logging

    return logging.getLogger(__name__)

SCHEMA = 1
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
NAME_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Keys this version understands; anything else is logged and ignored.
_TOP_KEYS = {"schema", "template"}
_TEMPLATE_KEYS = {"name", "description", "platform", "version"}
_VERSION_KEYS = {
    "version", "git", "commit", "subdir", "ref", "tree", "url", "sha256", "extra", "requires",
    "entry", "note", "packaged", "path",
}
_EXTRA_KEYS = {"path", "dest", "blob"}
_REQUIRES_KEYS = {"tools", "pip", "python"}


# ----------------------------------------------------------------------------------------------
# TOML helpers shared by the lockfile and trust modules


PARSED_TOML_DIR = "parsed-toml"


def load_toml_bytes(data: bytes) -> Dict[str, Any]:
    """Parse TOML with tomllib (3.11+) or tomli; raises their TOMLDecodeError.

    Warm commands read the same few files every time (the packaged indexes, the extra-index
    list, a lockfile), and importing and running a TOML parser is a large share of what
    ``microtvm path`` costs. So a parse is memoized in the cache as JSON, keyed by the text's
    CRC and length, and holding the text itself: a hit is used only if the text is identical,
    so a collision can never return another file's data. Writing the memo is best effort (a
    shared, read-only cache simply never gets one).
    """
    text = data.decode("utf-8")
    memo = _toml_memo_path(data)
    if memo is not None:
        try:
            with open(memo, "r", encoding="utf-8") as fh:
                stored = json.load(fh)
            if stored.get("toml") == text and isinstance(stored.get("doc"), dict):
                return stored["doc"]
        except (OSError, ValueError, AttributeError):
            pass
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.9/3.10
        import tomli as tomllib
    doc = tomllib.loads(text)
    if memo is not None:
        try:
            payload = json.dumps({"toml": text, "doc": doc})  # TypeError for TOML dates: skip
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
            tmp.write_text(payload, encoding="utf-8")
            os.replace(tmp, memo)
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


def toml_decode_error() -> type:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.TOMLDecodeError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the target and rename over it, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def warn(message: str) -> None:
    """One line on stderr that does not stop anything (a broken extra index, a bad plugin)."""
    print(f"microtvm: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# data


@dataclasses.dataclass(frozen=True)
class Requirements:
    """What a template's server needs: tools on PATH, pip packages, a Python version."""

    tools: Tuple[str, ...] = ()
    pip: Tuple[str, ...] = ()
    python: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"tools": list(self.tools), "pip": list(self.pip)}
        if self.python:
            out["python"] = self.python
        return out


@dataclasses.dataclass(frozen=True)
class PackagedSource:
    """A template shipped inside the wheel, at ``relpath`` (``templates/host``)."""

    relpath: str


@dataclasses.dataclass(frozen=True)
class FolderSource:
    """A folder that already exists on disk (a plugin's template inside an installed package)."""

    path: str


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a template version came from; decides trust and which URLs its sources may use."""

    kind: str  # "packaged" (index shipped in the wheel), "index" (extra), "plugin", "lockfile"
    name: str  # index name, plugin distribution, or "microtvm.lock"
    location: str  # file path or URL
    trusted: bool = False
    remote: bool = False

    def describe(self) -> str:
        if self.kind == "packaged":
            return f"packaged index {self.name!r}"
        if self.kind == "index":
            return f"index {self.name!r} ({self.location})"
        if self.kind == "plugin":
            return f"plugin {self.name!r}"
        return f"{self.name} ({self.location})"


@dataclasses.dataclass(frozen=True)
class TemplateVersion:
    """One version of one template with its exact source."""

    name: str
    version: str
    source: Any  # sources.GitSource | sources.ArchiveSource | PackagedSource | FolderSource
    origin: Origin
    requires: Requirements = Requirements()
    description: str = ""
    platform: str = ""
    entry: Optional[str] = None
    note: Optional[str] = None

    @property
    def parsed_version(self):
        from packaging.version import Version

        return Version(self.version)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class Template:
    """A template name with its versions, newest first.

    ``versions`` may be given as a list or built on first use by ``loader``: ``microtvm path``
    reads the whole curated index on every call but needs the versions of one template only.
    """

    def __init__(
        self,
        name: str,
        description: str,
        platform: str,
        versions: Optional[List[TemplateVersion]] = None,
        *,
        loader: Optional[Callable[[], List[TemplateVersion]]] = None,
    ) -> None:
        self.name = name
        self.description = description
        self.platform = platform
        self._versions = versions
        self._loader = loader

    @property
    def versions(self) -> List[TemplateVersion]:
        if self._versions is None:
            assert self._loader is not None
            self._versions = self._loader()
        return self._versions

    @property
    def latest(self) -> TemplateVersion:
        return self.versions[0]

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def __repr__(self) -> str:
        return f"Template({self.name!r})"


@dataclasses.dataclass
class Index:
    """One parsed index file."""

    name: str
    origin: Origin
    templates: List[Template]


def source_kind(source: Any) -> str:
    """"git", "archive", "packaged" or "folder"."""
    if isinstance(source, PackagedSource):
        return "packaged"
    if isinstance(source, FolderSource):
        return "folder"
    if hasattr(source, "commit"):
        return "git"
    return "archive"


def describe_source(source: Any) -> str:
    """One line naming the exact source, for messages and ``microtvm show``."""
    kind = source_kind(source)
    if kind == "packaged":
        return f"packaged {source.relpath}"
    if kind == "folder":
        return f"folder {source.path}"
    if kind == "git":
        text = f"git {source.url} @ {source.commit[:12]}"
        if getattr(source, "ref", None):
            text += f" ({source.ref})"
        if source.subdir:
            text += f" {source.subdir}"
        extras = getattr(source, "extra_files", ()) or ()
        if extras:
            text += " + " + ", ".join(f"{e.path} as {e.dest}" for e in extras)
        return text
    text = f"archive {source.url} sha256 {source.sha256[:12]}"
    if getattr(source, "subdir", ""):
        text += f" {source.subdir}"
    return text


def is_local_location(url: str) -> bool:
    """True for file:// URLs and plain paths (what a remote index may not point at)."""
    if url.startswith("file:"):
        return True
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        return False
    if re.match(r"^[^/\s]+@[^/\s]+:", url):  # scp-like git remote user@host:path
        return False
    return True


def _has_scheme(url: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", url)) and not re.match(r"^[A-Za-z]:[\\/]", url)


def _resolve_relative(url: str, base: Optional[str]) -> str:
    """Resolve a relative source location against the index's own location."""
    if base is None or _has_scheme(url) or re.match(r"^[^/\s]+@[^/\s]+:", url) or os.path.isabs(url):
        return url
    if re.match(r"^https?://", base):
        from urllib.parse import urljoin

        return urljoin(base, url)
    return str((Path(base).parent / url).resolve())


# ----------------------------------------------------------------------------------------------
# parsing and validation


class _Checker:
    """Type checks that name the file and the key path in every error."""

    def __init__(self, label: str, error: type = IndexFormatError) -> None:
        self.label = label
        self.error = error

    def fail(self, key: str, problem: str) -> MicrotvmError:
        return self.error(f"{self.label}: {key}: {problem}")

    def unknown(self, table: Dict[str, Any], known: Iterable[str], key: str) -> None:
        extra = sorted(set(table) - set(known))
        if extra:
            _log().info("%s: %s: ignoring unknown key(s) %s", self.label, key or "(top level)", ", ".join(extra))

    def get_str(self, table: Dict[str, Any], key: str, path: str, *, required: bool = False, default=None):
        if key not in table:
            if required:
                raise self.fail(f"{path}.{key}" if path else key, "missing (required)")
            return default
        value = table[key]
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}" if path else key, f"expected a string, got {type(value).__name__}")
        return value

    def get_hex(self, table: Dict[str, Any], key: str, path: str, digits: int, *, required: bool) -> Optional[str]:
        value = self.get_str(table, key, path, required=required)
        if value is None:
            return None
        pattern = HEX40 if digits == 40 else HEX64
        if not pattern.match(value):
            raise self.fail(f"{path}.{key}", f"expected {digits} hex digits")
        return value

    def get_relpath(self, table: Dict[str, Any], key: str, path: str, *, required: bool, default="") -> str:
        value = self.get_str(table, key, path, required=required, default=default)
        if value:
            parts = value.replace("\\", "/").split("/")
            if value.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", value):
                raise self.fail(f"{path}.{key}", f"{value!r} must be a relative path inside the source, without '..'")
            value = "/".join(p for p in parts if p not in ("", "."))
        return value

    def get_str_list(self, table: Dict[str, Any], key: str, path: str) -> Tuple[str, ...]:
        if key not in table:
            return ()
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(f"{path}.{key}", "expected a list of strings")
        return tuple(value)

    def get_tables(self, table: Dict[str, Any], key: str, path: str) -> List[Dict[str, Any]]:
        if key not in table:
            return []
        value = table[key]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(f"{path}.{key}" if path else key, f"expected an array of tables ([[{key}]])")
        return value


def _parse_requires(chk: _Checker, table: Any, path: str) -> Requirements:
    if not isinstance(table, dict):
        raise chk.fail(path, "expected a table")
    chk.unknown(table, _REQUIRES_KEYS, path)
    tools = chk.get_str_list(table, "tools", path)
    pip = chk.get_str_list(table, "pip", path)
    for n, req in enumerate(pip):
        if _PLAIN_NAME.match(req):  # the common case, without packaging's (slow to import) parser
            continue
        from packaging.requirements import InvalidRequirement, Requirement

        try:
            Requirement(req)
        except InvalidRequirement:
            raise chk.fail(f"{path}.pip[{n}]", f"{req!r} is not a pip requirement (PEP 508)") from None
    python = chk.get_str(table, "python", path)
    if python is not None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(python)
        except InvalidSpecifier:
            raise chk.fail(f"{path}.python", f"{python!r} is not a version specifier like '>=3.8'") from None
    return Requirements(tools=tools, pip=pip, python=python)


def parse_source(
    chk: "_Checker",
    table: Dict[str, Any],
    path: str,
    *,
    base: Optional[str],
    allow_packaged: bool,
    allow_folder: bool,
    required: bool = True,
) -> Any:
    """The one source a version (or lockfile entry) names; None only when not ``required``."""
    from .errors import UnsafeSourceError

    try:
        return _parse_source(
            chk, table, path, base=base, allow_packaged=allow_packaged, allow_folder=allow_folder, required=required
        )
    except UnsafeSourceError as err:  # the source classes' own safety checks (ext:: URLs, bad refs)
        raise chk.fail(path, str(err)) from None


def _parse_source(
    chk: "_Checker",
    table: Dict[str, Any],
    path: str,
    *,
    base: Optional[str],
    allow_packaged: bool,
    allow_folder: bool,
    required: bool,
) -> Any:
    kinds = [k for k in ("git", "url", "packaged", "path") if k in table]
    if len(kinds) > 1:
        raise chk.fail(path, f"give one source, not {' and '.join(kinds)}")
    if not kinds:
        if not required:
            return None
        raise chk.fail(path, "no source: give git + commit + subdir + tree, or url + sha256 + tree")
    kind = kinds[0]
    if "extra" in table and kind != "git":
        raise chk.fail(f"{path}.extra", "extra files are only supported for git sources")
    if kind in ("git", "url"):
        from . import sources  # only network sources need it; `path host` stays light
    if kind == "git":
        url = _resolve_relative(chk.get_str(table, "git", path, required=True), base)
        commit = chk.get_hex(table, "commit", path, 40, required=True)
        subdir = chk.get_relpath(table, "subdir", path, required=True)
        ref = chk.get_str(table, "ref", path)
        tree = chk.get_hex(table, "tree", path, 40, required=True)
        extras = []
        for n, extra in enumerate(chk.get_tables(table, "extra", path)):
            epath = f"{path}.extra[{n}]"
            chk.unknown(extra, _EXTRA_KEYS, epath)
            extras.append(
                sources.ExtraFile(
                    path=chk.get_relpath(extra, "path", epath, required=True),
                    dest=chk.get_relpath(extra, "dest", epath, required=True),
                    blob=chk.get_hex(extra, "blob", epath, 40, required=True),
                )
            )
        dests = [e.dest for e in extras]
        if len(set(dests)) != len(dests):
            raise chk.fail(f"{path}.extra", "two extra files have the same dest")
        return sources.GitSource(url=url, commit=commit, subdir=subdir, tree=tree, ref=ref, extra_files=tuple(extras))
    if kind == "url":
        url = _resolve_relative(chk.get_str(table, "url", path, required=True), base)
        sha256 = chk.get_hex(table, "sha256", path, 64, required=True)
        subdir = chk.get_relpath(table, "subdir", path, required=False)
        tree = chk.get_hex(table, "tree", path, 40, required=True)
        return sources.ArchiveSource(url=url, sha256=sha256, subdir=subdir, tree=tree)
    if kind == "packaged":
        if not allow_packaged:
            raise chk.fail(f"{path}.packaged", "only indexes shipped with microtvm-registry may name packaged templates")
        return PackagedSource(chk.get_relpath(table, "packaged", path, required=True))
    if not allow_folder:
        raise chk.fail(f"{path}.path", "a local folder source is only allowed from a plugin")
    folder = chk.get_str(table, "path", path, required=True)
    if not os.path.isabs(folder):
        if base is None:
            raise chk.fail(f"{path}.path", f"{folder!r} must be an absolute path")
        folder = str((Path(base).parent / folder).resolve())
    return FolderSource(folder)


def source_to_table(source: Any) -> Dict[str, Any]:
    """The TOML keys that name ``source`` exactly (the inverse of :func:`parse_source`)."""
    kind = source_kind(source)
    if kind == "packaged":
        return {"packaged": source.relpath}
    if kind == "folder":
        return {"path": source.path}
    from .sources import source_to_dict  # loaded already: the source object is one of its classes

    return source_to_dict(source)


def same_source(a: Any, b: Any) -> bool:
    """True when two sources name the same bytes (a git ``ref`` is only a label and is ignored)."""
    ta, tb = source_to_table(a), source_to_table(b)
    ta.pop("ref", None)
    tb.pop("ref", None)
    return ta == tb


def _parse_version(
    chk: _Checker,
    table: Dict[str, Any],
    path: str,
    *,
    name: str,
    description: str,
    platform: str,
    origin: Origin,
    base: Optional[str],
    allow_packaged: bool,
    allow_folder: bool,
) -> TemplateVersion:
    from packaging.version import InvalidVersion, Version

    chk.unknown(table, _VERSION_KEYS, path)
    source = parse_source(chk, table, path, base=base, allow_packaged=allow_packaged, allow_folder=allow_folder)
    version = chk.get_str(table, "version", path, required=not isinstance(source, PackagedSource))
    if version is None:
        from . import __version__

        version = __version__
    try:
        Version(version)
    except InvalidVersion:
        raise chk.fail(f"{path}.version", f"{version!r} is not a PEP 440 version like '1.2.0'") from None
    requires = Requirements()
    if "requires" in table:
        requires = _parse_requires(chk, table["requires"], f"{path}.requires")
    return TemplateVersion(
        name=name,
        version=version,
        source=source,
        origin=origin,
        requires=requires,
        description=description,
        platform=platform,
        entry=chk.get_str(table, "entry", path),
        note=chk.get_str(table, "note", path),
    )


def parse_template_table(
    chk: _Checker,
    table: Dict[str, Any],
    path: str,
    *,
    origin: Origin,
    base: Optional[str] = None,
    allow_packaged: bool = False,
    allow_folder: bool = False,
    lazy: bool = False,
) -> Template:
    """Validate one ``[[template]]`` table (also used for plugin-provided descriptions).

    With ``lazy`` its versions are validated and built on first use (packaged indexes only:
    they are checked by the test suite, and every other index is validated eagerly so a bad
    copy is rejected before it replaces a good one).
    """
    if not isinstance(table, dict):
        raise chk.fail(path, "expected a table")
    chk.unknown(table, _TEMPLATE_KEYS, path)
    name = chk.get_str(table, "name", path, required=True)
    if not NAME_RE.match(name):
        raise chk.fail(f"{path}.name", f"{name!r} is not NAME or VENDOR/NAME (letters, digits, '.', '_', '-')")
    description = chk.get_str(table, "description", path, default="")
    platform = chk.get_str(table, "platform", path, required=True)
    tables = chk.get_tables(table, "version", path)
    if not tables:
        raise chk.fail(f"{path}.version", "missing: give at least one [[template.version]]")

    def load() -> List[TemplateVersion]:
        from packaging.version import Version

        versions = [
            _parse_version(
                chk, v, f"{path}.version[{n}]", name=name, description=description, platform=platform,
                origin=origin, base=base, allow_packaged=allow_packaged, allow_folder=allow_folder,
            )
            for n, v in enumerate(tables)
        ]
        seen: Dict[Any, str] = {}
        for n, v in enumerate(versions):
            key = Version(v.version)
            if key in seen:
                raise chk.fail(f"{path}.version[{n}].version", f"{v.version} is listed twice")
            seen[key] = v.version
        versions.sort(key=lambda v: Version(v.version), reverse=True)
        return versions

    template = Template(name=name, description=description, platform=platform, loader=load)
    if not lazy:
        template.versions  # noqa: B018 - validate now
    return template


def parse_index(
    data: Union[str, bytes, Dict[str, Any]],
    label: str,
    origin: Origin,
    *,
    base: Optional[str] = None,
    allow_packaged: bool = False,
    allow_folder: bool = False,
    lazy: bool = False,
) -> Index:
    """Parse and validate index text (or an already-parsed dict); errors name ``label`` and the key."""
    chk = _Checker(label)
    if isinstance(data, (str, bytes)):
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            doc = load_toml_bytes(raw)
        except UnicodeDecodeError:
            raise IndexFormatError(f"{label}: not UTF-8 text") from None
        except toml_decode_error() as err:
            raise IndexFormatError(f"{label}: not valid TOML: {err}") from None
    else:
        doc = data
    chk.unknown(doc, _TOP_KEYS, "")
    if "schema" not in doc:
        raise chk.fail("schema", "missing (required): add `schema = 1` at the top")
    schema = doc["schema"]
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise chk.fail("schema", f"expected an integer, got {type(schema).__name__}")
    if schema != SCHEMA:
        raise chk.fail("schema", f"schema {schema} is not understood by this microtvm-registry (it reads schema {SCHEMA}); upgrade microtvm-registry")
    templates = [
        parse_template_table(
            chk, t, f"template[{n}]", origin=origin, base=base,
            allow_packaged=allow_packaged, allow_folder=allow_folder, lazy=lazy,
        )
        for n, t in enumerate(chk.get_tables(doc, "template", ""))
    ]
    names = [t.name for t in templates]
    for n, name in enumerate(names):
        if name in names[:n]:
            raise chk.fail(f"template[{n}].name", f"{name!r} is listed twice")
    return Index(name=origin.name, origin=origin, templates=templates)


def load_index_file(path: Path, origin: Origin, **kw: Any) -> Index:
    """Read and parse an index file from disk."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise IndexFormatError(f"{path}: cannot read index: {err.strerror or err}") from None
    return parse_index(data, str(path), origin, base=str(path), **kw)


def packaged_indexes() -> List[Index]:
    """Every index shipped with the package; its pins are trusted."""
    from .packaged import get_packaged_resource

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


# ----------------------------------------------------------------------------------------------
# extra indexes (config + last good copy in the cache)

CONFIG_FILE = "indexes.toml"
COPY_DIR = "index-copies"
HTTP_TIMEOUT = (5.0, 30.0)  # connect, read (seconds)
HTTP_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class ExtraIndex:
    """An index the user added: a name and where it lives (http(s) URL or a local path)."""

    name: str
    location: str

    @property
    def remote(self) -> bool:
        return bool(re.match(r"^https?://", self.location))

    def origin(self) -> Origin:
        return Origin("index", self.name, self.location, trusted=False, remote=self.remote)


def _config_path() -> Path:
    from . import dirs

    return dirs.config_dir() / CONFIG_FILE


def _copy_paths(name: str) -> Tuple[Path, Path]:
    from . import dirs

    folder = dirs.cache_dir() / COPY_DIR
    return folder / f"{name}.toml", folder / f"{name}.meta.json"


def list_extra_indexes() -> List[ExtraIndex]:
    """The extra indexes recorded in the config file, in the order they were added."""
    path = _config_path()
    doc = read_toml_config(path, IndexFormatError, "the extra-index list")
    if doc is None:
        return []
    chk = _Checker(str(path))
    result = []
    for n, table in enumerate(chk.get_tables(doc, "index", "")):
        name = chk.get_str(table, "name", f"index[{n}]", required=True)
        location = chk.get_str(table, "location", f"index[{n}]", required=True)
        result.append(ExtraIndex(name, location))
    return result


def _write_extra_indexes(entries: Sequence[ExtraIndex]) -> None:
    import tomli_w

    doc = {"index": [{"name": e.name, "location": e.location} for e in entries]}
    header = b"# Extra template indexes, managed by `microtvm index add/remove`.\n"
    atomic_write_bytes(_config_path(), header + tomli_w.dumps(doc).encode("utf-8"))


def _normalise_location(location: str) -> str:
    if re.match(r"^https?://", location):
        return location
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    if _has_scheme(location):
        raise MicrotvmError(f"index location {location!r}: only http(s) URLs and local paths are supported")
    return str(Path(location).expanduser().resolve())


def add_extra_index(name: str, location: str, *, offline: bool = False) -> Index:
    """Record an extra index after checking that it can be read and parsed."""
    if not INDEX_NAME_RE.match(name):
        raise MicrotvmError(f"index name {name!r}: use letters, digits, '.', '_' or '-'")
    packaged = {i.name for i in packaged_indexes()}
    if name in packaged:
        raise MicrotvmError(f"index name {name!r} is taken by a packaged index; choose another name")
    entries = list_extra_indexes()
    if any(e.name == name for e in entries):
        raise MicrotvmError(f"an index named {name!r} already exists; run `microtvm index remove {name}` first")
    entry = ExtraIndex(name, _normalise_location(location))
    if entry.remote and offline:
        raise OfflineError(f"cannot add index {name!r} from {entry.location} while offline; retry without --offline")
    index = _refresh_one(entry)
    _write_extra_indexes(entries + [entry])
    return index


def remove_extra_index(name: str) -> None:
    """Forget an extra index and its cached copy."""
    entries = list_extra_indexes()
    if not any(e.name == name for e in entries):
        known = ", ".join(e.name for e in entries) or "none"
        raise TemplateNotFoundError(f"no extra index named {name!r} (extra indexes: {known})")
    _write_extra_indexes([e for e in entries if e.name != name])
    for p in _copy_paths(name):
        if p.exists():
            p.unlink()


def _read_meta(name: str) -> Dict[str, Any]:
    import json

    meta = _copy_paths(name)[1]
    try:
        return json.loads(meta.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def _store_copy(entry: ExtraIndex, data: bytes, etag: Optional[str]) -> None:
    import json

    copy, meta = _copy_paths(entry.name)
    atomic_write_bytes(copy, data)
    atomic_write_bytes(
        meta,
        json.dumps({"location": entry.location, "etag": etag, "fetched": time.time()}).encode("utf-8"),
    )


def _http_get(url: str, etag: Optional[str], label: str):
    """GET with timeouts and retries (backoff on connection errors and 5xx/429).

    urllib3 logs each retry as a WARNING; the caller reports the outcome in one line instead, so
    that logger is quietened for the duration of the request.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=HTTP_RETRIES,
        connect=HTTP_RETRIES,
        read=HTTP_RETRIES,
        status=HTTP_RETRIES,
        backoff_factor=0.2,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    headers = {"Accept": "application/toml, text/plain, */*"}
    if etag:
        headers["If-None-Match"] = etag
    import logging

    pool_log = logging.getLogger("urllib3.connectionpool")
    old_level = pool_log.level
    pool_log.setLevel(logging.ERROR)
    try:
        with session:
            return session.get(url, headers=headers, timeout=HTTP_TIMEOUT)
    except requests.RequestException as err:
        reason = type(err).__name__
        inner = getattr(err, "args", None)
        if inner and isinstance(inner[0], Exception) and getattr(inner[0], "reason", None) is not None:
            reason = f"{reason} ({type(inner[0].reason).__name__})"
        raise FetchError(f"{label} could not be fetched: {reason}") from None
    finally:
        pool_log.setLevel(old_level)


def _refresh_one(entry: ExtraIndex) -> Index:
    """Fetch or read ``entry``, validate it, keep it as the last good copy, return it.

    A bad new copy never replaces the last good one: it is validated before it is stored.
    """
    copy, _meta = _copy_paths(entry.name)
    origin = entry.origin()
    if not entry.remote:
        path = Path(entry.location)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FetchError(f"index {entry.name!r}: cannot read {path}: {err.strerror or err}") from None
        copy_path = _copy_paths(entry.name)[0]
        try:
            unchanged = copy_path.read_bytes() == data and _read_meta(entry.name).get("location") == entry.location
        except OSError:
            unchanged = False
        # Local indexes are read on every command. Text identical to the last good copy was
        # fully validated when it was stored, so its versions are checked only when used (as
        # for packaged indexes); a changed file is validated whole before it is stored.
        index = parse_index(data, str(path), origin, base=str(path), lazy=unchanged)
        if not unchanged:
            _store_copy(entry, data, None)
        return index
    meta = _read_meta(entry.name)
    etag = meta.get("etag") if copy.exists() and meta.get("location") == entry.location else None
    response = _http_get(entry.location, etag, f"index {entry.name!r} ({entry.location})")
    if response.status_code == 304 and etag:
        index = parse_index(copy.read_bytes(), entry.location, origin, base=entry.location)
        _store_copy(entry, copy.read_bytes(), etag)  # refresh the timestamp
        return index
    if response.status_code != 200:
        raise FetchError(f"index {entry.name!r}: {entry.location} answered HTTP {response.status_code}")
    data = response.content
    index = parse_index(data, entry.location, origin, base=entry.location)
    _store_copy(entry, data, response.headers.get("ETag"))
    return index


def _load_copy(entry: ExtraIndex) -> Optional[Index]:
    copy, _ = _copy_paths(entry.name)
    meta = _read_meta(entry.name)
    if not copy.exists() or meta.get("location") != entry.location:
        return None
    return parse_index(copy.read_bytes(), entry.location, entry.origin(), base=entry.location)


def _copy_age(entry: ExtraIndex) -> str:
    fetched = _read_meta(entry.name).get("fetched")
    if not fetched:
        return "an earlier copy"
    return "the copy from " + time.strftime("%Y-%m-%d %H:%M", time.localtime(fetched))


def load_extra_indexes(*, offline: bool = False, refresh: bool = False) -> List[Index]:
    """Every extra index that can be read; a broken one is one warning line, never an error.

    Remote indexes are read from the last good copy unless ``refresh`` (``microtvm index
    update``) or there is no copy yet; local files are re-read each time. Offline never fetches.
    """
    result = []
    try:
        entries = list_extra_indexes()
    except MicrotvmError as err:
        warn(str(err))
        return []
    for entry in entries:
        index = None
        fresh_needed = refresh or not entry.remote or _load_copy_safe(entry) is None
        if fresh_needed and not (offline and entry.remote):
            try:
                index = _refresh_one(entry)
            except MicrotvmError as err:
                fallback = _load_copy_safe(entry)
                tail = f"; using {_copy_age(entry)}" if fallback else "; skipped"
                warn(f"{first_line(err)}{tail}")
                index = fallback
        else:
            index = _load_copy_safe(entry)
            if index is None:
                warn(f"index {entry.name!r} ({entry.location}) has no cached copy and --offline is set; skipped")
        if index is not None:
            result.append(index)
    return result


def update_extra_indexes() -> List[Tuple[str, bool, str]]:
    """Re-fetch every extra index now; (name, ok, one-line message) each. Failures keep the old copy."""
    report = []
    for entry in list_extra_indexes():
        try:
            index = _refresh_one(entry)
            report.append((entry.name, True, f"ok ({len(index.templates)} template(s))"))
        except MicrotvmError as err:
            fallback = _load_copy_safe(entry)
            tail = f"; keeping {_copy_age(entry)}" if fallback else "; no copy kept"
            report.append((entry.name, False, f"failed: {first_line(err)}{tail}"))
    return report


def _load_copy_safe(entry: ExtraIndex) -> Optional[Index]:
    try:
        return _load_copy(entry)
    except MicrotvmError:
        return None


# ----------------------------------------------------------------------------------------------
# the catalog: every template from every source, merged


class Catalog:
    """All known templates by full name; versions merged across sources, first source wins.

    Names defined by a packaged index are reserved for it: extra indexes and plugins cannot add
    versions to them.
    """

    def __init__(self, indexes: Sequence[Index]) -> None:
        self.indexes = list(indexes)
        self.templates: Dict[str, Template] = {}
        groups: Dict[str, List[Template]] = {}
        reserved = set()
        for index in self.indexes:
            for template in index.templates:
                if template.name in reserved and not index.origin.trusted:
                    # A name a packaged index defines cannot gain versions from elsewhere, so
                    # `apache-tvm/zephyr` always means the reviewed pins (mirrors: use insteadOf).
                    _log().info("%s from %s ignored: the name belongs to a packaged index", template.name, index.origin.describe())
                    continue
                if index.origin.trusted:
                    reserved.add(template.name)
                groups.setdefault(template.name, []).append(template)
        for name, group in groups.items():
            first = group[0]
            if len(group) == 1:
                self.templates[name] = first
            else:
                self.templates[name] = Template(
                    name, first.description, first.platform, loader=lambda group=group: _merge_versions(group)
                )

    def names(self) -> List[str]:
        return sorted(self.templates)

    def get(self, name: str) -> Optional[Template]:
        return self.templates.get(name)

    def __iter__(self):
        return iter(self.templates[n] for n in self.names())


def _merge_versions(group: Sequence[Template]) -> List[TemplateVersion]:
    """Versions of one name from several sources; the first source wins a version they share."""
    from packaging.version import Version

    merged: List[TemplateVersion] = []
    known = set()
    for template in group:
        for v in template.versions:
            key = Version(v.version)
            if key in known:
                _log().info("%s %s from %s is shadowed by an earlier source", v.name, v.version, v.origin.describe())
                continue
            known.add(key)
            merged.append(v)
    merged.sort(key=lambda v: Version(v.version), reverse=True)
    return merged


def load_catalog(*, offline: bool = False, extras: bool = True, plugins: bool = True, refresh: bool = False) -> Catalog:
    """Packaged indexes, then extra indexes, then plugins (see the module docstring)."""
    indexes = packaged_indexes()
    if extras:
        indexes += load_extra_indexes(offline=offline, refresh=refresh)
    if plugins:
        from .plugins import plugin_indexes

        indexes += plugin_indexes()
    return Catalog(indexes)
