"""From a spec (``host``, ``zephyr@0.18``, ``apache-tvm/zephyr@>=0.12,<0.19``) to one exact version.

Rules, in order:
1. The project's lockfile (``microtvm.lock``, found by walking up from the current folder) wins
   for any name it pins: the pinned entry is used, and a spec whose version does not match the
   pin is an error (re-pin with ``microtvm lock``), never a silent override.
2. Otherwise the catalog (packaged indexes, extra indexes, plugins): an exact full name, or a
   name without its vendor part when exactly one vendor has it; ambiguity lists the candidates,
   an unknown name suggests the closest known ones.
3. The newest version matching the spec wins (pre-releases only when nothing else matches, as
   pip does).
"""
from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..errors import LockfileError, SpecError, TemplateNotFoundError
from .index_format import NAME_RE
from .catalog import Catalog
from .models import Origin, Requirements, Template, TemplateVersion

if TYPE_CHECKING:  # pragma: no cover
    from .lockfile import LockEntry, Lockfile

_SPEC_RE = re.compile(r"^\s*(?P<name>[^@\s]+)\s*(?:@(?P<version>.*))?$")


class ExactVersion:
    """The specifier ``==X`` without importing packaging.specifiers: compiling its regexes costs
    more than a warm ``microtvm path NAME@VERSION`` takes otherwise. Same meaning as
    ``SpecifierSet("==X")`` (PEP 440 equality, so ``0.11`` matches ``0.11.0``)."""

    def __init__(self, version: Any) -> None:
        self.version = version  # a packaging.version.Version

    def contains(self, item: str, prereleases: bool = True) -> bool:
        from packaging.version import InvalidVersion

        from .models import parse_version

        try:
            return parse_version(str(item)) == self.version
        except InvalidVersion:
            return False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExactVersion) and other.version == self.version

    def __hash__(self) -> int:
        return hash(self.version)

    def __str__(self) -> str:
        return f"=={self.version}"

    def __repr__(self) -> str:
        return f"<ExactVersion('{self}')>"


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed spec. ``specifier`` is None when any version will do."""

    text: str
    name: str
    specifier: Any = None  # ExactVersion, or a packaging.specifiers.SpecifierSet

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def matches(self, version: str) -> bool:
        if self.specifier is None:
            return True
        return self.specifier.contains(version, prereleases=True)

    @classmethod
    def exact(cls, name: str, version: str) -> "Spec":
        from .models import parse_version

        return cls(f"{name}@{version}", name, ExactVersion(parse_version(version)))

    def __str__(self) -> str:
        return self.text


def parse_spec(text: str) -> Spec:
    """``NAME``, ``VENDOR/NAME``, ``NAME@VERSION`` or ``NAME@SPECIFIER`` (PEP 440)."""
    if not isinstance(text, str):
        raise SpecError(f"template spec {text!r} must be a string like 'host' or 'apache-tvm/zephyr@0.18.0'")
    m = _SPEC_RE.match(text)
    if not m or not NAME_RE.match(m.group("name")):
        raise SpecError(
            f"template spec {text!r} is malformed: use NAME, VENDOR/NAME, NAME@VERSION or NAME@SPECIFIER "
            "(e.g. host, apache-tvm/zephyr@0.18.0, zephyr@>=0.12,<0.19)"
        )
    name, version = m.group("name"), m.group("version")
    if version is None:
        return Spec(text, name)
    from packaging.version import InvalidVersion

    from .models import parse_version

    version = version.strip()
    if not version:
        raise SpecError(f"template spec {text!r} has nothing after '@': give a version like {name}@0.18.0")
    if len(version) > 200:
        raise SpecError(f"template spec {text[:60]!r}...: the version part is {len(version)} characters; give a version like {name}@0.18.0")
    try:
        return Spec(text, name, ExactVersion(parse_version(version)))
    except InvalidVersion:
        pass
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        specifier = SpecifierSet(version)
    except InvalidSpecifier:
        raise SpecError(
            f"template spec {text!r}: {version!r} is not a version or a PEP 440 specifier "
            f"(e.g. {name}@0.18.0 or {name}@>=0.12,<0.19)"
        ) from None
    return Spec(text, name, specifier)


@dataclasses.dataclass(frozen=True)
class Resolved:
    """The chosen version; ``pin`` is the lockfile entry when the lockfile decided it."""

    version: TemplateVersion
    pin: Optional["LockEntry"] = None

    @property
    def content_id(self) -> Optional[str]:
        return self.pin.content_id if self.pin is not None else None


def find_template(catalog: Catalog, name: str) -> Template:
    """The template ``name`` names: exact, or vendor left out when only one vendor has it."""
    exact = catalog.get(name)
    if exact is not None:
        return exact
    if "/" not in name:
        hits = [t for t in catalog if t.short_name == name]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise TemplateNotFoundError(
                f"template name {name!r} is ambiguous: it could be {', '.join(t.name for t in hits)}; "
                "give the vendor part"
            )
    raise TemplateNotFoundError(_unknown_message(catalog, name))


def _unknown_message(catalog: Catalog, name: str) -> str:
    names = catalog.names()
    choices = set(names) | {n.rsplit("/", 1)[-1] for n in names}
    import difflib

    close = difflib.get_close_matches(name, sorted(choices), n=3, cutoff=0.5)
    if not close and "/" in name:
        close = difflib.get_close_matches(name.rsplit("/", 1)[-1], sorted(choices), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `microtvm list` to see what exists"
    return f"no template named {name!r}; {hint}"


def choose_version(template: Template, spec: Spec) -> TemplateVersion:
    """Newest version matching ``spec``; final releases before pre-releases."""
    matching = [v for v in template.versions if spec.matches(v.version)]
    final = [v for v in matching if not v.parsed_version.is_prerelease]
    pick = final or matching
    if not pick:
        available = ", ".join(v.version for v in reversed(template.versions))
        raise TemplateNotFoundError(
            f"{template.name} has no version matching {spec.specifier}; available: {available}"
        )
    return pick[0]  # versions are sorted newest first


class LockChoice(enum.Enum):
    """``resolve(lock=LockChoice.FIND)``: the project's lockfile, found by walking up from the
    current folder."""

    FIND = "find"


def resolve(
    spec: Union[str, Spec],
    *,
    catalog: Optional[Catalog] = None,
    lock: Union["Lockfile", None, LockChoice] = LockChoice.FIND,
    use_lock: bool = True,
    offline: bool = False,
) -> Resolved:
    """Resolve ``spec`` (a string or a :class:`Spec`) to one version, honouring the lockfile.

    ``lock`` is a :class:`~microtvm_registry.registry.lockfile.Lockfile`, None for none, or
    :attr:`LockChoice.FIND` to walk up from the current folder.
    """
    from .catalog import load_catalog

    if not isinstance(spec, Spec):
        spec = parse_spec(spec)
    if use_lock:
        if lock is LockChoice.FIND:
            from .lockfile import load_project_lock

            lock = load_project_lock()
        if lock is not None:
            entry = lock.find(spec.name)
            if entry is not None:
                return _resolve_pin(spec, entry, lock.path, catalog, offline)
    if catalog is None:
        # A full name that a packaged index defines cannot be changed by extra indexes or plugins
        # (see Catalog), so the warm path skips reading them.
        packaged = load_catalog(offline=offline, extras=False, plugins=False)
        if packaged.get(spec.name) is not None:
            catalog = packaged
        else:
            catalog = load_catalog(offline=offline)
    template = find_template(catalog, spec.name)
    return Resolved(choose_version(template, spec))


def _resolve_pin(spec: Spec, entry: "LockEntry", lock_path: Path, catalog: Optional[Catalog], offline: bool) -> Resolved:
    """The lockfile's pin as a TemplateVersion (its exact source, or the index's for bare pins)."""
    from .catalog import load_catalog
    from .packaged_indexes import packaged_indexes
    from .models import same_source
    from .lockfile import PluginPin
    from .source_kinds import kind_of

    if not spec.matches(entry.version):
        raise LockfileError(
            f"{lock_path} pins {entry.name} {entry.version}, which does not match {spec.text!r}; "
            f"run `microtvm lock {entry.name}@{spec.specifier}` to change the pin"
        )
    source = entry.source
    if isinstance(source, PluginPin):
        from .models import parse_version
        from .plugins import plugin_indexes

        pinned = parse_version(entry.version)  # PEP 440 equality: "1.0" pins "1.0.0"
        for index in plugin_indexes():
            if index.origin.name != source.dist:
                continue
            for template in index.templates:
                if template.name == entry.name:
                    for v in template.versions:
                        if parse_version(v.version) == pinned:
                            return Resolved(v, entry)
        raise LockfileError(
            f"{lock_path} pins {entry.name} {entry.version} from plugin {source.dist!r}, which is not installed at "
            f"that version (pip install {source.dist}, or re-pin with `microtvm lock {entry.name}`)"
        )
    if source is None:
        # A bare name+version pin (written by hand): find it in the catalog at that version.
        if catalog is None:
            catalog = load_catalog(offline=offline)
        template = find_template(catalog, entry.name)
        return Resolved(choose_version(template, Spec.exact(entry.name, entry.version)), entry)
    trusted = False
    known: Optional[TemplateVersion] = None
    for index in packaged_indexes():
        for template in index.templates:
            if template.name != entry.name:
                continue
            for v in template.versions:
                if same_source(v.source, source):
                    # Trust follows what will run: the pin's content id must be the one this
                    # source yields where that is known without fetching (otherwise the cache
                    # verifies the fetched folder against the pin before anything runs).
                    direct = kind_of(v.source).direct_content_id(v.source)
                    trusted, known = (direct is None or direct == entry.content_id), v
    origin = Origin("lockfile", "microtvm.lock", str(lock_path), trusted=trusted, remote=False)
    version = TemplateVersion(
        name=entry.name,
        version=entry.version,
        source=source,
        origin=origin,
        requires=known.requires if known else Requirements(),
        description=known.description if known else "",
        platform=known.platform if known else "",
        entry=known.entry if known else None,
        note=known.note if known else None,
        kind=known.kind if known else entry.kind,
        license=known.license if known else "",
    )
    return Resolved(version, entry)
