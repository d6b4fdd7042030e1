"""Templates contributed by installed packages (``pip install acme-microtvm`` adds ``acme/...``).

A vendor package declares entry points in the group ``microtvm_registry.templates``. The entry
point's *name* is the template name for the single-folder form; the *object* it loads may be:

- a path (``str`` or ``os.PathLike``), absolute or relative to the folder of the module that
  defines the entry point:
  - a folder: one template, named by the entry point, at the distribution's version;
  - a ``.toml`` file: an index in the usual format (see :mod:`microtvm_registry.registry.index_format`); its
    versions may also say ``path = "folder"`` (relative to the TOML file) for folders shipped
    inside the package;
- a dict, or a list of dicts, each shaped like one ``[[template]]`` table of an index;
- a callable taking no arguments and returning any of the above.

Examples, in a vendor's ``pyproject.toml``::

    [project.entry-points."microtvm_registry.templates"]
    "acme/blinky" = "acme_microtvm:TEMPLATE_DIR"     # TEMPLATE_DIR = "template" (a folder)
    acme = "acme_microtvm:INDEX"                     # INDEX = "templates.toml"

Plugin templates are never trusted automatically: starting their server needs ``--trust`` or
``microtvm trust NAME`` (see :mod:`microtvm_registry.cache.trust`). A plugin that fails to load is one
warning line, never an error, so one broken vendor package cannot hide the others.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, List, Optional

from ..errors import IndexFormatError, MicrotvmError, first_line
from .models import FolderSource, Index, Origin, Template, TemplateVersion
from .index_format import NAME_RE, _Checker, load_index_file, parse_template_table
from ..files import warn

GROUP = "microtvm_registry.templates"


def _any_plugin_installed() -> bool:
    """Cheap pre-check: does any installed distribution declare our entry-point group?

    importlib.metadata costs more to import than the rest of ``microtvm path`` together, and
    almost nobody has plugins; reading the small entry_points.txt files directly tells us
    whether it is needed at all. A false positive only costs the slow path.
    """
    needle = GROUP.encode("ascii")
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                names = [e.name for e in it if e.name.endswith((".dist-info", ".egg-info"))]
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(entry or ".", name, "entry_points.txt"), "rb") as fh:
                    if needle in fh.read():
                        return True
            except OSError:
                continue
    return False


def _entry_points() -> List[Any]:
    if not _any_plugin_installed():
        return []
    from importlib import metadata

    # deduplicated (a shadowed copy of a distribution is left out, as import would), and each
    # entry point knows the distribution that declares it
    return list(metadata.entry_points().select(group=GROUP))


def _dist_info(ep: Any) -> tuple:
    """(distribution name, version, summary) of the package declaring ``ep``, as far as known."""
    dist = getattr(ep, "dist", None)
    if dist is None:  # pragma: no cover - every entry point from _entry_points has its dist
        return ("unknown", "0", "")
    meta = dist.metadata
    return (meta.get("Name") or "unknown", dist.version or "0", meta.get("Summary") or "")


def _module_dir(ep: Any) -> Optional[Path]:
    import importlib

    module_name = ep.value.split(":", 1)[0].strip()
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - load() will report it properly
        return None
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent if file else None


def _from_object(obj: Any, ep: Any, origin: Origin, depth: int = 0) -> List[Template]:
    dist_name, dist_version, summary = _dist_info(ep)
    label = f"plugin {dist_name!r} entry point {ep.name!r}"
    if callable(obj) and depth == 0:
        return _from_object(obj(), ep, origin, depth + 1)
    if isinstance(obj, (str, os.PathLike)):
        path = Path(obj)
        if not path.is_absolute():
            base = _module_dir(ep)
            if base is None:
                raise MicrotvmError(f"{label}: relative path {str(obj)!r} but its module has no folder")
            path = base / path
        if path.is_file() and path.suffix == ".toml":
            index = load_index_file(path, origin, allow_folder=True)
            return index.templates
        if path.is_dir():
            if not NAME_RE.match(ep.name):
                raise MicrotvmError(f"{label}: {ep.name!r} is not a template name (NAME or VENDOR/NAME)")
            version = TemplateVersion(
                name=ep.name,
                version=dist_version,
                source=FolderSource(str(path.resolve())),
                origin=origin,
                description=summary,
                platform="",
            )
            return [Template(ep.name, summary, "", [version])]
        raise MicrotvmError(f"{label}: {str(path)!r} is neither a template folder nor a .toml index")
    if isinstance(obj, dict):
        obj = [obj]
    if isinstance(obj, (list, tuple)):
        chk = _Checker(label)
        return [
            parse_template_table(chk, table, f"template[{n}]", origin=origin, allow_folder=True)
            for n, table in enumerate(obj)
        ]
    raise MicrotvmError(f"{label}: loaded a {type(obj).__name__}; expected a path, dict, list or callable")


def plugin_indexes() -> List[Index]:
    """One pseudo-index per plugin entry point; a failing plugin is a warning and is skipped."""
    result = []
    for ep in _entry_points():
        dist_name, _version, _summary = _dist_info(ep)
        origin = Origin("plugin", dist_name, f"{ep.name} = {ep.value}", trusted=False, remote=False)
        try:
            templates = _from_object(ep.load(), ep, origin)
        except (MicrotvmError, IndexFormatError) as err:
            warn(first_line(err))
            continue
        except Exception as err:  # noqa: BLE001 - a vendor's bug must not break the listing
            warn(f"plugin {dist_name!r} entry point {ep.name!r} failed to load: {type(err).__name__}: {err}")
            continue
        result.append(Index(name=dist_name, origin=origin, templates=templates))
    return result
