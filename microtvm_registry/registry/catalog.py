"""The catalog: every template from every index, merged, in this priority.

Three kinds feed the catalog, in this priority:

1. packaged indexes, the ``*.toml`` files shipped in the wheel's ``index/`` folder (the curated
   ``apache-tvm.toml`` and ``packaged.toml`` for templates inside the wheel). Their pins are
   trusted: they were reviewed when this package was released.
2. extra indexes the user added with ``microtvm index add NAME URL_OR_PATH`` (see
   :mod:`microtvm_registry.registry.extra_indexes`), read from the last good copy in the cache.
3. plugins: installed packages that declare the entry-point group ``microtvm_registry.templates``
   (see :mod:`microtvm_registry.registry.plugins`).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from .extra_indexes import load_extra_indexes
from .index_format import _log
from .models import Index, Template, TemplateVersion, parse_version
from .packaged_indexes import packaged_indexes


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
                self.templates[name] = Template(name, first.description, first.platform, loader=_merged(group))

    def names(self) -> List[str]:
        return sorted(self.templates)

    def get(self, name: str) -> Optional[Template]:
        return self.templates.get(name)

    def __iter__(self):
        return iter(self.templates[n] for n in self.names())


def _merge_versions(group: Sequence[Template]) -> List[TemplateVersion]:
    """Versions of one name from several sources; the first source wins a version they share."""
    merged: List[TemplateVersion] = []
    known = set()
    for template in group:
        for v in template.versions:
            key = parse_version(v.version)
            if key in known:
                _log().info("%s %s from %s is shadowed by an earlier source", v.name, v.version, v.origin.describe())
                continue
            known.add(key)
            merged.append(v)
    merged.sort(key=lambda v: parse_version(v.version), reverse=True)
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


def _merged(group: List[Template]) -> Callable[[], List[TemplateVersion]]:
    """The loader of a name several indexes list: their versions merged on first use."""
    return lambda: _merge_versions(group)
