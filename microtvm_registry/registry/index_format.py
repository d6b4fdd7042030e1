"""One index document: TOML text -> validated models.

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

    [[library]]                         # C sources a build compiles in (compile --kernels)
    name = "arm/cmsis-nn"
    description = "..."
    license = "Apache-2.0"
    [[library.version]]
    version = "7.0.0"
    git = "https://github.com/ARM-software/CMSIS-NN.git"
    commit = "<40 hex>"
    paths = ["Include", "Source", "LICENSE"]  # top-level files and folders, side by side
    tree = "<40 hex>"                   # the tree id of that folder as materialized

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

import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ..errors import IndexFormatError, MicrotvmError
from ..files import load_toml_bytes, toml_decode_error
from .models import LIBRARY, TEMPLATE, Index, Origin, Requirements, Template, TemplateVersion, parse_version
from .source_kinds import kind_named_in, kind_of


def _log():
    """This module's logger, imported on first use: `microtvm path` never logs, so never pays."""
    import logging

    return logging.getLogger(__name__)


SCHEMA = 1

HEX40 = re.compile(r"^[0-9a-f]{40}$")

HEX64 = re.compile(r"^[0-9a-f]{64}$")

NAME_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")

INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # it names files in the cache


# Keys this version understands; anything else is logged and ignored.
_TOP_KEYS = {"schema", "template", "library"}


_TEMPLATE_KEYS = {"name", "description", "platform", "version"}
_LIBRARY_KEYS = {"name", "description", "license", "version"}


_VERSION_KEYS = {
    "version", "git", "commit", "subdir", "ref", "tree", "url", "sha256", "extra", "requires",
    "entry", "note", "packaged", "path", "include", "paths",
}


_EXTRA_KEYS = {"path", "dest", "blob"}

_REQUIRES_KEYS = {"tools", "pip", "python"}


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
    from ..errors import UnsafeSourceError

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
    kinds = kind_named_in(table)
    if len(kinds) > 1:
        raise chk.fail(path, f"give one source, not {' and '.join(k.key for k in kinds)}")
    if not kinds:
        if not required:
            return None
        raise chk.fail(path, "no source: give git + commit + subdir + tree, or url + sha256 + tree")
    kind = kinds[0]
    if "include" in table and kind.key != "packaged":
        raise chk.fail(f"{path}.include", "include is only for packaged templates")
    if "extra" in table and kind.key != "git":
        raise chk.fail(f"{path}.extra", "extra files are only supported for git sources")
    if kind.key == "packaged" and not allow_packaged:
        raise chk.fail(f"{path}.packaged", "only indexes shipped with microtvm-registry may name packaged templates")
    if kind.key == "path" and not allow_folder:
        raise chk.fail(f"{path}.path", "a local folder source is only allowed from a plugin")
    return kind.from_table(chk, table, path, base)


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
    kind: str = TEMPLATE,
    license: str = "",
) -> TemplateVersion:
    from packaging.version import InvalidVersion

    chk.unknown(table, _VERSION_KEYS, path)
    source = parse_source(chk, table, path, base=base, allow_packaged=allow_packaged, allow_folder=allow_folder)
    default = kind_of(source).default_version()
    version: str = chk.get_str(table, "version", path, required=default is None) or default or ""
    try:
        parse_version(version)
    except InvalidVersion:
        raise chk.fail(f"{path}.version", f"{version[:40]!r} is not a PEP 440 version like '1.2.0'") from None
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
        kind=kind,
        license=license,
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
    kind: str = TEMPLATE,
) -> Template:
    """Validate one ``[[template]]`` table (also used for plugin-provided descriptions), or with
    ``kind="library"`` one ``[[library]]`` table (a license instead of a platform).

    With ``lazy`` its versions are validated and built on first use (packaged indexes only:
    they are checked by the test suite, and every other index is validated eagerly so a bad
    copy is rejected before it replaces a good one).
    """
    if not isinstance(table, dict):
        raise chk.fail(path, "expected a table")
    library = kind == LIBRARY
    chk.unknown(table, _LIBRARY_KEYS if library else _TEMPLATE_KEYS, path)
    name = chk.get_str(table, "name", path, required=True)
    if not NAME_RE.match(name):
        raise chk.fail(f"{path}.name", f"{name!r} is not NAME or VENDOR/NAME (letters, digits, '.', '_', '-')")
    description = chk.get_str(table, "description", path, default="")
    platform = "" if library else chk.get_str(table, "platform", path, required=True)
    license = chk.get_str(table, "license", path, default="") if library else ""
    tables = chk.get_tables(table, "version", path)
    if not tables:
        raise chk.fail(f"{path}.version", f"missing: give at least one [[{kind}.version]]")

    def load() -> List[TemplateVersion]:
        versions = [
            _parse_version(
                chk, v, f"{path}.version[{n}]", name=name, description=description, platform=platform,
                origin=origin, base=base, allow_packaged=allow_packaged and not library, allow_folder=allow_folder,
                kind=kind, license=license,
            )
            for n, v in enumerate(tables)
        ]
        seen: Dict[Any, str] = {}
        for n, v in enumerate(versions):
            key = parse_version(v.version)
            if key in seen:
                raise chk.fail(f"{path}.version[{n}].version", f"{v.version} is listed twice")
            seen[key] = v.version
        versions.sort(key=lambda v: parse_version(v.version), reverse=True)
        return versions

    template = Template(name=name, description=description, platform=platform, loader=load, kind=kind, license=license)
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
    memo: bool = False,
) -> Index:
    """Parse and validate index text (or an already-parsed dict); errors name ``label`` and the key.
    ``memo=True`` only for text kept in the cache (see :func:`~microtvm_registry.files.load_toml_bytes`)."""
    chk = _Checker(label)
    if isinstance(data, (str, bytes)):
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            doc = load_toml_bytes(raw, memo=memo)
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
            chk, t, f"{kind}[{n}]", origin=origin, base=base,
            allow_packaged=allow_packaged, allow_folder=allow_folder, lazy=lazy, kind=kind,
        )
        for kind in (TEMPLATE, LIBRARY)
        for n, t in enumerate(chk.get_tables(doc, kind, ""))
    ]
    seen = set()
    counts = {TEMPLATE: 0, LIBRARY: 0}
    for template in templates:
        n = counts[template.kind]
        counts[template.kind] += 1
        if template.name in seen:
            raise chk.fail(f"{template.kind}[{n}].name", f"{template.name!r} is listed twice")
        seen.add(template.name)
    return Index(name=origin.name, origin=origin, templates=templates)


def load_index_file(path: Path, origin: Origin, *, parsed: Optional[Dict[str, Any]] = None, **kw: Any) -> Index:
    """Read and parse an index file from disk. ``parsed`` is a trusted parse of the same bytes
    (the wheel's, checked by hash by the caller), used instead of parsing the TOML again."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise IndexFormatError(f"{path}: cannot read index: {err.strerror or err}") from None
    if parsed is not None:
        import hashlib

        if parsed.get("sha256") == hashlib.sha256(data).hexdigest() and isinstance(parsed.get("doc"), dict):
            return parse_index(parsed["doc"], str(path), origin, base=str(path), **kw)
    return parse_index(data, str(path), origin, base=str(path), **kw)
