"""Spec in, local template folder out: resolve, then packaged path or cache materialization.

``get_template`` is what ``microtvm path`` and the Python API use: it must stay fast on a warm
cache (no hashing of packaged or plugin folders, no GitPython/requests imports when the cache
already has the entry). ``get_template_for_run`` adds what running a server needs: pinned
content ids verified for every kind of source, and the trust check.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, cast

from .errors import TemplateNotFoundError, UnsafeSourceError

TVM_PLATFORMS = ("crt", "zephyr", "arduino")
CURATED_INDEX = "apache-tvm"

if TYPE_CHECKING:  # pragma: no cover
    from .registry.models import TemplateVersion
    from .registry.resolve import Resolved
    from .registry.sources import Source



def _offline(flag: bool) -> bool:
    from .dirs import is_offline

    return is_offline(flag)


def materialize_version(
    tv: "TemplateVersion",
    *,
    offline: bool = False,
    expected: Optional[str] = None,
    need_content_id: bool = False,
    progress: Optional[bool] = None,
) -> Tuple[Path, Optional[str]]:
    """The local folder of template version ``tv`` and, when known or needed, its content id.

    Cached sources are materialized (and verified against ``expected``) by the cache. Packaged
    and plugin folders are used in place; they are hashed only when ``expected`` or
    ``need_content_id`` asks for it, since hashing is the one slow thing on a warm path.
    """
    from .registry.lockfile import check_content_id
    from .registry.source_kinds import kind_of

    source = tv.source
    kind = kind_of(source)
    label = f"{tv.name} {tv.version}"
    if kind.in_place:
        path = kind.local_folder(source)
        if path is None:
            raise TemplateNotFoundError(
                f"{label}: its folder ({kind.describe(source)}) does not exist; reinstall the package that provides it "
                f"({tv.origin.name!r})"
            )
        content_id = None
        if expected or need_content_id:
            content_id = kind.content_id(source, path)
            check_content_id(f"{label} ({kind.describe(source)})", expected, content_id)
        return path, content_id
    if tv.origin.remote and kind.is_local(source):
        raise UnsafeSourceError(
            f"{label} from {tv.origin.describe()} names the local source {kind.describe(source)!r}; a remote index may "
            "only name network sources, so it was refused (ask the index's owner to fix it)"
        )
    from .cache.store import Cache

    result = Cache().materialize(
        cast("Source", source),  # not in place: a kind the cache holds
        offline=offline,
        progress=progress,
        expected_content_id=expected,
        allow_file_urls=not tv.origin.remote,
        label=f"{tv.name}@{tv.version}",
    )
    return Path(result.path), result.content_id


def materialize_with_id(
    tv: "TemplateVersion", *, offline: bool = False, expected: Optional[str] = None, progress: Optional[bool] = None
) -> Tuple[Path, str]:
    """:func:`materialize_version` when the content id is needed: the folder and its id."""
    path, content_id = materialize_version(tv, offline=offline, expected=expected, need_content_id=True, progress=progress)
    if content_id is None:  # pragma: no cover - need_content_id always hashes
        raise UnsafeSourceError(f"{tv.name} {tv.version}: its content id could not be computed")
    return path, content_id


def get_template(spec: str, offline: bool = False, *, progress: Optional[bool] = None) -> Path:
    """The local folder of the template ``spec`` names (fetched into the cache unless offline)."""
    return locate_template(spec, offline, progress=progress)[1]


def locate_template(spec: str, offline: bool = False, *, progress: Optional[bool] = None) -> Tuple[Any, Path]:
    """The version ``spec`` resolves to (lockfile pins honoured) and its local folder."""
    from .registry.resolve import resolve

    offline = _offline(offline)
    resolved = resolve(spec, offline=offline)
    path, _ = materialize_version(resolved.version, offline=offline, expected=_cached_expected(resolved), progress=progress)
    return resolved.version, path


def _cached_expected(resolved: "Resolved") -> Optional[str]:
    """The content id a lockfile pins, verified for every kind of source (a packaged or plugin
    folder that no longer matches its pin is refused as the cache's entries are)."""
    return resolved.content_id


#: How to get a tool a template declares (``requires.tools``), for the error that names it missing.
TOOL_HINTS = {
    "west": "pip install west, then set up a Zephyr workspace (west init; west update) as Zephyr's guide says",
    "cmake": "apt-get install cmake (or pip install cmake)",
    "make": "apt-get install make",
    "cc|gcc|clang": "apt-get install gcc",
    "arm-none-eabi-gcc": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi",
    "arduino-cli": "install arduino-cli as its documentation says, and put it on PATH",
    "qemu-system-arm": "apt-get install qemu-system-arm",
}


def find_tool(tool: str) -> Optional[str]:
    """Where a declared tool is on PATH (``"a|b"``: the first of them found), or None."""
    import shutil

    return next((found for found in map(shutil.which, tool.split("|")) if found), None)


def missing_tools(tv: "TemplateVersion") -> list:
    """The declared tools that are not on PATH."""
    return missing_of(tv.requires.tools)


def missing_of(tools: Sequence[str]) -> List[str]:
    return [t for t in tools if find_tool(t) is None]


def tool_hint(tool: str) -> str:
    return TOOL_HINTS.get(tool, f"install {tool.split('|')[0]} and put it on PATH")


def _missing_sentence(who: str, missing: Sequence[str], purpose: str = "") -> str:
    names = ", ".join(f"`{t}`" for t in missing)
    verb = "is" if len(missing) == 1 else "are"
    return f"{who} needs {names} on PATH{purpose}, which {verb} missing: {tool_hint(missing[0])}"


def missing_tools_note(tv: "TemplateVersion") -> Optional[str]:
    """A sentence naming the declared tools that are missing (None when all are found), for
    ``info`` and ``create-project``: they answer without the tools, building will not."""
    missing = missing_tools(tv)
    if not missing:
        return None
    return _missing_sentence(f"{tv.name} {tv.version}", missing, " to build and flash")


def check_tools(tv: "TemplateVersion") -> None:
    """Refuse, naming the missing tools and how to get them, where a template's tools are needed
    (the server would fail later with something far less clear: zephyr's launcher without
    ``west`` ends in "Permission denied ... status 126")."""
    from .errors import MissingToolError

    missing = missing_tools(tv)
    if missing:
        raise MissingToolError(f"{_missing_sentence(f'{tv.name} {tv.version}', missing)} (`microtvm show {tv.label}` lists what it needs)")


#: Written into a project generated from a template named in the registry: which template made
#: it and the tools it declares, so ``build`` and ``flash`` can name a missing tool before the
#: project's server runs (the generated folder is the template's; it carries no such facts).
TEMPLATE_RECORD = ".microtvm-template.json"


def record_template(project_dir: Path, tv: "TemplateVersion") -> None:
    import json

    from .files import atomic_write_bytes

    record = {"template": tv.label, "tools": list(tv.requires.tools)}
    atomic_write_bytes(Path(project_dir) / TEMPLATE_RECORD, (json.dumps(record, indent=2) + "\n").encode(), follow_symlinks=False)


def check_project_tools(project_dir: Path, operation: str) -> None:
    """Before ``operation`` (build, flash) on a generated project: the tools its template declared
    are on PATH, or one MissingToolError naming them. A project without the record (made by
    hand, or from a folder) is not checked: its server's own error stands."""
    import json

    from .errors import MissingToolError

    try:
        with open(Path(project_dir) / TEMPLATE_RECORD, "rb") as fh:
            record = json.loads(fh.read(65536))
        label = str(record["template"])
        tools = [str(t) for t in record["tools"]]
    except (OSError, ValueError, KeyError, TypeError):
        return
    missing = missing_of(tools)
    if missing:
        raise MissingToolError(f"{_missing_sentence(f'{Path(project_dir).name} (from {label})', missing, f' to {operation}')} "
                               f"(`microtvm show {label}` lists what it needs)")


def get_template_for_run(
    spec: str, offline: bool = False, trust: bool = False, *, progress: Optional[bool] = None, tools: bool = True
) -> Path:
    """Like :func:`get_template`, for starting the template's server: pins verified, trust checked,
    and (with ``tools``) the tools it declares found on PATH.

    Raises TrustError (with the command to run) when the template's content id is not trusted,
    MissingToolError when a declared tool is not on PATH.
    """
    path, tv = template_for_run(spec, offline, trust, progress=progress)
    if tools:
        check_tools(tv)
    return path


def template_for_run(
    spec: str, offline: bool = False, trust: bool = False, *, progress: Optional[bool] = None
) -> Tuple[Path, "TemplateVersion"]:
    """The verified, trusted folder of ``spec`` and the version it is, tools not checked: asking
    a template for its options, or generating a project, does not need its build tools
    (PlatformIO lists boards without toolchains); build and flash check them."""
    from .registry.resolve import resolve
    from .cache.trust import check_trust

    offline = _offline(offline)
    resolved = resolve(spec, offline=offline)
    tv = resolved.version
    if tv.is_library:
        from .errors import ProjectError

        raise ProjectError(
            f"{tv.name} is a kernel library (C compiled into a model's firmware), not a template with a server to run; "
            "use it with `microtvm compile MODEL --kernels cmsis-nn`"
        )
    path, content_id = materialize_version(
        tv,
        offline=offline,
        expected=resolved.content_id,
        need_content_id=not tv.origin.trusted or _has_recorded_id(tv),
        progress=progress,
    )
    check_trust(tv, content_id, allow=trust)
    return path, tv


def library_for_build(
    spec: str, offline: bool = False, *, progress: Optional[bool] = None, content_id: Optional[str] = None
) -> Tuple[Path, "TemplateVersion", str]:
    """The verified folder of the kernel library ``spec`` names (the project's microtvm.lock pin
    first), the version it is and its content id. ``content_id``: the one a compiled model
    recorded, which the folder must have (a template building that model asks for it).

    A library's C runs on the host only inside a host-target build of a model; its trust is
    checked as a template's is (the curated index's pins are trusted)."""
    from .cache.trust import check_trust
    from .errors import TemplateNotFoundError
    from .registry.resolve import resolve

    offline = _offline(offline)
    resolved = resolve(spec, offline=offline)
    tv = resolved.version
    if not tv.is_library:
        raise TemplateNotFoundError(f"{tv.name} is a template, not a kernel library; name a library (microtvm list shows KIND)")
    expected = content_id or resolved.content_id
    path, found = materialize_version(tv, offline=offline, expected=expected, need_content_id=True, progress=progress)
    if found is None:  # pragma: no cover - need_content_id always yields one
        raise TemplateNotFoundError(f"{tv.label}: its content id is unknown")
    check_trust(tv, found, allow=False)
    return path, tv, found


def _has_recorded_id(tv: "TemplateVersion") -> bool:
    """A packaged template of an installed wheel: hash it, to notice an edit since install."""
    from .registry.source_kinds import kind_of

    return kind_of(tv.source).installed_content_id(tv.source) is not None


def get_microtvm_template_projects(platform: str) -> Path:
    """TVM's function: the template folder for "crt", "zephyr" or "arduino".

    The newest version in the curated apache-tvm index, or the project's lockfile pin; fetched
    into the cache on first use (set MICROTVM_REGISTRY_OFFLINE=1 to use only what is cached).
    """
    if platform not in TVM_PLATFORMS:
        raise ValueError(f"platform {platform!r} is not one of {', '.join(TVM_PLATFORMS)}")
    from .registry.catalog import Catalog
    from .registry.packaged_indexes import packaged_indexes
    from .registry.resolve import resolve

    offline = _offline(False)
    curated = Catalog([i for i in packaged_indexes() if i.name == CURATED_INDEX])
    resolved = resolve(f"{CURATED_INDEX}/{platform}", catalog=curated, offline=offline)
    path, _ = materialize_version(resolved.version, offline=offline, expected=_cached_expected(resolved))
    return path
