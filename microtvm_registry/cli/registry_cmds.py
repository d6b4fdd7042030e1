"""Registry commands: list, show, fetch, path, lock, sync, cache, index, trust.

Data goes to stdout (``--json`` where a command prints data); progress and warnings go to
stderr. ``path`` is on the warm path of shell use (``cd "$(microtvm path host)"``): it imports
nothing heavy and hashes nothing when the cache already has the template.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from ..formats.names import printable
from ._common import SPEC_HELP, add_json_flag, human_size, note, print_json, print_table

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path
    
    from ..registry.lockfile import LockEntry
    from ..cache.store import Materialized
    from ..registry.models import TemplateVersion



def register(subparsers) -> None:
    """Add this group's subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "list",
        help="list known templates (packaged, indexes, plugins)",
        description="List every template microtvm knows: the packaged ones, the curated apache-tvm index, "
        "extra indexes (`microtvm index add`) and installed plugins, with each one's newest version.",
    )
    add_json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = subparsers.add_parser(
        "show",
        help="versions, sources, requirements and trust of one template",
        description="Show one template: the version this project would use (its lockfile pin wins), its exact "
        "source and content id, whether it is cached and trusted, the tools and pip packages it needs (and whether "
        "they are here), and every version the indexes list.",
    )
    p.add_argument("name", metavar="SPEC", help=SPEC_HELP)
    add_json_flag(p)
    p.set_defaults(handler=cmd_show)

    p = subparsers.add_parser(
        "fetch",
        help="put templates in the cache (verified)",
        description="Fetch each template into the per-user cache and verify its content id (a lockfile pin, or "
        "the index's tree id). A template already cached is reported as `cached` and not fetched again.",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help=SPEC_HELP)
    add_json_flag(p)
    p.set_defaults(handler=cmd_fetch)

    p = subparsers.add_parser(
        "path",
        help="print a template's local folder (fetching it first unless offline)",
        description="Print the local folder of a template, for shells: cd \"$(microtvm path host)\". The folder "
        "is read-only shared data (the wheel's, or a cache entry): copy it before editing.",
    )
    p.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    add_json_flag(p)
    p.set_defaults(handler=cmd_path)

    p = subparsers.add_parser(
        "lock",
        help="pin templates in this project's microtvm.lock",
        description="Pin each SPEC in the microtvm.lock found from the current folder (a new one here if there is none). "
        "The specifier is recorded with the pin; a name already pinned keeps its pin while the pin satisfies the SPEC "
        "(re-resolved otherwise, and the replacement is reported). --upgrade re-resolves pins within their specifiers.",
    )
    p.add_argument("specs", nargs="*", metavar="SPEC", help=SPEC_HELP)
    p.add_argument(
        "-U",
        "--upgrade",
        nargs="?",
        action="append",
        const="*",
        default=[],
        metavar="NAME",
        help="re-resolve every pin (or only NAME, repeatable) to the newest version its specifier allows",
    )
    add_json_flag(p)
    p.set_defaults(handler=cmd_lock)

    p = subparsers.add_parser("unlock", help="remove pins from this project's microtvm.lock",
                              description="Remove the pins of the named templates from the project's microtvm.lock.")
    p.add_argument("names", nargs="+", metavar="NAME", help="a pinned template's name (vendor part optional)")
    add_json_flag(p)
    p.set_defaults(handler=cmd_unlock)

    p = subparsers.add_parser(
        "sync",
        help="fetch and verify everything microtvm.lock pins",
        description="Fetch and verify every pin of the project's microtvm.lock. Plain sync re-resolves entries that are "
        "hand-written or outside their recorded specifier and rewrites the file; --locked fails instead of changing "
        "the file; --frozen uses the pins exactly as written and never changes the file. In every mode a content id "
        "that differs from its pin is refused.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--frozen", action="store_const", dest="mode", const="frozen",
                      help="use the pins as written, never change microtvm.lock (fails on anything unpinned)")
    mode.add_argument("--locked", action="store_const", dest="mode", const="locked",
                      help="fail if microtvm.lock would change (it is out of date with its specifiers)")
    p.set_defaults(mode="sync")
    add_json_flag(p)
    p.set_defaults(handler=cmd_sync)

    p = subparsers.add_parser(
        "trust",
        help="allow a template's server to run (records its content id)",
        description="Record the content id of each template so that its Project API server may run. Packaged and "
        "curated templates are trusted already; a template whose content changes must be trusted again.",
    )
    p.add_argument("specs", nargs="+", metavar="SPEC", help=SPEC_HELP)
    add_json_flag(p)
    p.set_defaults(handler=cmd_trust)

    cache = subparsers.add_parser(
        "cache", help="inspect or clean the template cache",
        description="The per-user template cache: list its entries, re-verify them, or remove them.",
    )
    csub = cache.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True
    c = csub.add_parser("list", help="cached templates", description="List cached templates: name, version, size and source.")
    add_json_flag(c)
    c.set_defaults(handler=cmd_cache_list)
    c = csub.add_parser("verify", help="re-hash every entry",
                        description="Re-hash every cache entry and compare it with its content id; exit 1 if any is damaged.")
    c.add_argument("--repair", action="store_true", help="remove entries that do not match their id")
    add_json_flag(c)
    c.set_defaults(handler=cmd_cache_verify)
    c = csub.add_parser("clean", help="remove cached templates",
                        description="Remove cached templates (they are fetched again when next needed).")
    c.add_argument("--keep-locked", action="store_true", help="keep what this project's microtvm.lock pins")
    c.set_defaults(handler=cmd_cache_clean)

    index = subparsers.add_parser(
        "index", help="manage extra template indexes",
        description="Extra template indexes (TOML files by URL or path) add templates beside the packaged and curated ones.",
    )
    isub = index.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    i = isub.add_parser("list", help="packaged and extra indexes", description="List the packaged indexes and the extra ones you added.")
    add_json_flag(i)
    i.set_defaults(handler=cmd_index_list)
    i = isub.add_parser("add", help="add an index by URL or path",
                        description="Add an extra index after checking that it can be read and parsed.")
    i.add_argument("name", metavar="NAME", help="a short name for the index (letters, digits, '.', '_', '-')")
    i.add_argument("location", metavar="URL_OR_PATH", help="an http(s) URL or a local path of the index's TOML file")
    i.set_defaults(handler=cmd_index_add)
    i = isub.add_parser("remove", help="forget an extra index", description="Forget an extra index and its cached copy.")
    i.add_argument("name", metavar="NAME", help="the index's name, as `microtvm index list` shows it")
    i.set_defaults(handler=cmd_index_remove)
    i = isub.add_parser("update", help="re-fetch extra indexes (conditional GET)",
                        description="Re-fetch every extra index given by URL (a conditional GET: unchanged ones cost one request).")
    i.set_defaults(handler=cmd_index_update)


# ----------------------------------------------------------------------------------------------


def _offline(args: argparse.Namespace) -> bool:
    from ..dirs import is_offline

    return is_offline(getattr(args, "offline", False))


_err = note


def cmd_list(args: argparse.Namespace) -> int:
    from ..registry.catalog import load_catalog
    from ..registry.source_kinds import kind_of

    catalog = load_catalog(offline=_offline(args))
    rows = []
    for t in catalog:
        latest = t.latest
        rows.append(
            {
                "name": t.name,
                "kind": t.kind,
                "latest": latest.version,
                "platform": t.platform,
                "source": kind_of(latest.source).name,
                "from": latest.origin.name,
                "description": t.description,
                "versions": [v.version for v in t.versions],
            }
        )
    if args.json:
        print_json(rows)
        return 0
    print_table(
        ["NAME", "LATEST", "PLATFORM", "SOURCE", "FROM", "KIND", "DESCRIPTION"],
        [[r["name"], r["latest"], r["platform"] or "-", r["source"], r["from"], r["kind"], r["description"]] for r in rows],
    )
    return 0


def _tool_status(tool: str) -> Dict[str, Any]:
    """A tool requirement ("a|b" = any one) with where it was found on PATH."""
    from ..template_paths import find_tool

    found = find_tool(tool)
    return {"tool": tool, "found": found is not None, "path": found}


def _pip_status(req: str) -> Dict[str, Any]:
    """A pip requirement and whether this Python has a matching distribution."""
    from importlib import metadata

    from packaging.requirements import Requirement

    parsed = Requirement(req)
    try:
        version = metadata.version(parsed.name)
    except metadata.PackageNotFoundError:
        return {"package": req, "installed": None, "ok": False}
    ok = not parsed.specifier or parsed.specifier.contains(version, prereleases=True)
    return {"package": req, "installed": version, "ok": ok}


def _known_content_id(tv: "TemplateVersion", pin: Optional["LockEntry"]) -> Optional[str]:
    """The content id as far as it is known without fetching or hashing."""
    from ..registry.source_kinds import kind_of

    if pin is not None and pin.content_id:
        return pin.content_id
    if kind_of(tv.source).in_place:
        return None
    hit = _cache_hit(tv)
    return hit.content_id if hit is not None else kind_of(tv.source).direct_content_id(tv.source)


def _cache_hit(tv: "TemplateVersion", expected: Optional[str] = None) -> Optional["Materialized"]:
    """The cache's entry for the version's source (None for a kind used in place, or none yet)."""
    from ..registry.source_kinds import cached_source

    source = cached_source(tv.source)
    if source is None:
        return None
    from ..cache.store import Cache

    return Cache().lookup(source, expected)


def _entry_point(tv: "TemplateVersion", folder: Optional["Path"]) -> str:
    """What the client will start, from the folder when it is local, else from the index."""
    if folder is not None:
        if (folder / "launch_microtvm_api_server.sh").is_file():
            return "launch_microtvm_api_server.sh"
        if (folder / "microtvm_api_server.py").is_file():
            return "microtvm_api_server.py"
        return "(none: the folder has no microtvm_api_server.py)"
    return tv.entry or "microtvm_api_server.py"


def _local_folder(tv: "TemplateVersion") -> Optional["Path"]:
    """The folder as it is on disk now (used in place, or in the cache), without fetching."""
    from ..registry.source_kinds import kind_of

    kind = kind_of(tv.source)
    if kind.in_place:
        return kind.local_folder(tv.source)
    hit = _cache_hit(tv)
    return hit.path if hit is not None else None


def cmd_show(args: argparse.Namespace) -> int:
    from ..registry.models import describe_source, source_to_table
    from ..registry.source_kinds import kind_of
    from ..registry.catalog import load_catalog
    from ..registry.resolve import find_template, parse_spec, resolve
    from ..cache.trust import trust_state

    offline = _offline(args)
    spec = parse_spec(args.name)
    catalog = load_catalog(offline=offline)
    resolved = resolve(spec, catalog=catalog, offline=offline)
    tv = resolved.version
    try:
        template = find_template(catalog, tv.name)
        versions = template.versions
    except Exception:  # noqa: BLE001 - a lockfile pin of something no index lists any more
        versions = [tv]
    folder = _local_folder(tv)
    content_id = _known_content_id(tv, resolved.pin)
    kind = kind_of(tv.source)
    if content_id is None and folder is not None and kind.in_place:
        content_id = kind.content_id(tv.source, folder)
    state = trust_state(tv, content_id)
    data: Dict[str, Any] = {
        "name": tv.name,
        "kind": tv.kind,
        "license": tv.license or None,
        "description": tv.description,
        "platform": tv.platform,
        "selected": tv.version,
        "pinned_by": _lock_path() if resolved.pin is not None else None,
        "from": tv.origin.describe(),
        "source": {"kind": kind.name, **source_to_table(tv.source)},
        "content_id": content_id,
        "cached": folder is not None,
        "folder": str(folder) if folder is not None else None,
        "runs": None if tv.is_library else _entry_point(tv, folder),
        "trust": state,
        "requires": {
            "tools": [_tool_status(t) for t in tv.requires.tools],
            "pip": [_pip_status(p) for p in tv.requires.pip],
            "python": tv.requires.python,
        },
        "note": tv.note,
        "versions": [
            {
                "version": v.version,
                "source": describe_source(v.source),
                "content_id": _known_content_id(v, resolved.pin if v.version == tv.version else None),
                "from": v.origin.name,
            }
            for v in versions
        ],
    }
    if args.json:
        print_json(data)
        return 0
    print(f"{tv.name} {tv.version}" + (f"  ({printable(tv.platform)})" if tv.platform else ""))
    if tv.description:
        print(f"  {printable(tv.description)}")
    print(f"  from:       {data['from']}" + ("  [pinned by microtvm.lock]" if resolved.pin is not None else ""))
    print(f"  source:     {describe_source(tv.source)}")
    print(f"  content id: {content_id or 'unknown until fetched'}")
    print(f"  local:      {folder if folder is not None else 'not cached (microtvm fetch ' + tv.label + ')'}")
    if tv.is_library:
        print("  kind:       library (C compiled into a model's firmware: microtvm compile --kernels cmsis-nn)")
        if tv.license:
            print(f"  license:    {printable(tv.license)}")
    else:
        print(f"  runs:       {data['runs']}")
    trust_text = {
        "packaged": "yes (pinned by a packaged index)",
        "trusted": "yes (you trusted this content id)",
        "untrusted": f"no: run `microtvm trust {tv.label}` or pass --trust",
        "modified": "no: its files changed since microtvm-registry was installed (reinstall it)",
    }[state]
    print(f"  trusted:    {trust_text}")
    if tv.requires.tools:
        print("  tools on PATH:")
        for t in data["requires"]["tools"]:
            print(f"    {t['tool']:<20} {'found ' + t['path'] if t['found'] else 'MISSING'}")
    if tv.requires.pip:
        print("  pip packages (in this Python):")
        for p in data["requires"]["pip"]:
            state_text = f"installed {p['installed']}" if p["ok"] else ("MISSING" if p["installed"] is None else f"installed {p['installed']} (does not match)")
            print(f"    {p['package']:<20} {state_text}")
    if tv.requires.python:
        print(f"  python:     {tv.requires.python}")
    if tv.note:
        print(f"  note:       {printable(tv.note)}")
    print("  versions:")
    print_rows = [[v["version"], v["content_id"] or "-", v["source"]] for v in data["versions"]]
    for row in print_rows:
        print(f"    {row[0]:<10} {row[1]:<40} {row[2]}")
    return 0


def _lock_path() -> Optional[str]:
    from ..registry.lockfile import find_lockfile

    found = find_lockfile()
    return str(found) if found else None


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..registry.resolve import parse_spec, resolve
    from ..template_paths import materialize_with_id

    offline = _offline(args)
    specs = [parse_spec(s) for s in args.specs]  # every spec checked before anything is fetched
    results = []
    for spec in specs:
        resolved = resolve(spec, offline=offline)
        tv = resolved.version
        status = _fetch_status(tv, resolved.content_id)
        _err(f"{status} {tv.name} {tv.version}" + (" ..." if status == "fetching" else ""))
        path, content_id = materialize_with_id(tv, offline=offline, expected=resolved.content_id)
        results.append({"name": tv.name, "version": tv.version, "content_id": content_id, "path": str(path), "status": status})
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(f"{r['name']} {r['version']} {r['content_id']} {r['path']}")
    return 0


def _fetch_status(tv: "TemplateVersion", expected: Optional[str]) -> str:
    """"cached", "fetching" or "packaged"/"plugin" (used in place), said before the work starts."""
    from ..registry.source_kinds import kind_of

    kind = kind_of(tv.source)
    if kind.in_place:
        return "packaged" if kind.key == "packaged" else "local"
    return "cached" if _cache_hit(tv, expected) is not None else "fetching"


def cmd_path(args: argparse.Namespace) -> int:
    if getattr(args, "json", False):
        from ..template_paths import locate_template

        tv, path = locate_template(args.spec, offline=_offline(args))
        print_json({"name": tv.name, "version": tv.version, "path": str(path)})
        return 0
    from ..template_paths import get_template

    print(get_template(args.spec, offline=_offline(args)))
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from ..errors import OptionError
    from ..pins import lock_specs

    if not args.specs and not args.upgrade:
        raise OptionError("give templates to pin (microtvm lock SPEC ...), or --upgrade [NAME] to re-resolve pins")
    result = lock_specs(args.specs, upgrade=args.upgrade, offline=_offline(args), progress=_err)
    return _report_changes(args, result.changes, result.lock.path if result.written else None, "wrote")


def cmd_unlock(args: argparse.Namespace) -> int:
    from ..pins import unlock

    result = unlock(args.names)
    return _report_changes(args, result.changes, result.lock.path, "wrote")


def _report_changes(args: argparse.Namespace, changes: List[Any], written: Optional[Any], verb: str) -> int:
    if args.json:
        print_json([
            {"name": c.name, "action": c.action, "old": c.old, "version": c.new, "content_id": c.content_id} for c in changes
        ])
    else:
        for c in changes:
            print(c.describe())
    if written is not None:
        _err(f"{verb} {written}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from ..pins import sync

    result = sync(mode=args.mode, offline=_offline(args), progress=_err)
    if args.json:
        print_json([
            {"name": c.name, "version": c.new, "content_id": c.content_id, "status": "ok" if c.action == "verified" else c.action, "old": c.old}
            for c in result.changes
        ])
    else:
        for c in result.changes:
            print(("ok" if c.action == "verified" else c.action) + f" {c.name} {c.new} {c.content_id}")
    if result.changed:
        _err(f"updated {result.lock.path}")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from ..registry.models import describe_source
    from ..registry.resolve import parse_spec, resolve
    from ..template_paths import materialize_with_id
    from ..cache.trust import record_trust

    offline = _offline(args)
    rows = []
    for spec in [parse_spec(s) for s in args.specs]:
        resolved = resolve(spec, offline=offline)
        tv = resolved.version
        _path, content_id = materialize_with_id(tv, offline=offline, expected=resolved.content_id)
        if tv.origin.trusted:
            status = "packaged"
            text = f"{tv.name} {tv.version} is pinned by a packaged index and already trusted ({content_id})"
        else:
            added = record_trust(tv.name, tv.version, content_id, describe_source(tv.source))
            status = "trusted" if added else "already trusted"
            text = f"{status} {tv.name} {tv.version} {content_id}"
        rows.append({"name": tv.name, "version": tv.version, "content_id": content_id, "status": status})
        if not args.json:
            print(text)
    if args.json:
        print_json(rows)
    return 0


def cmd_cache_list(args: argparse.Namespace) -> int:
    from ..cache.store import Cache

    entries = Cache().list_entries()
    rows: List[Dict[str, Any]] = []
    for e in entries:
        names = [label.rpartition("@") for label in e.labels]
        rows.append({
            "name": ", ".join(sorted({n for n, _, _ in names})) or None,
            "version": ", ".join(sorted({v for _, _, v in names})) or None,
            "content_id": e.content_id,
            "size": e.size,
            "path": str(e.path),
            "sources": list(e.sources),
        })
    if args.json:
        print_json(rows)
        return 0

    def where(sources: List[Any]) -> str:
        if not sources:
            return "-"
        s = sources[0] or {}
        text = s.get("git") or s.get("url") or "?"
        if s.get("commit"):
            text += f" @ {s['commit'][:12]}"
        if s.get("subdir"):
            text += f" {s['subdir']}"
        return text

    if not rows:
        # `lock host` pins a packaged template, which lives in the installed package, not here
        print(f"the cache ({Cache().root}) holds nothing yet: fetched templates and kernel libraries land here "
              "(microtvm fetch NAME); packaged ones (host, cortex-m) live in the installed package and are never cached")
        return 0
    print_table(
        ["NAME", "VERSION", "SIZE", "CONTENT ID", "SOURCE"],
        [[r["name"] or "-", r["version"] or "-", human_size(r["size"]), r["content_id"], where(r["sources"])] for r in rows],
    )
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    from ..cache.store import Cache

    cache = Cache()
    results = cache.verify(repair=args.repair)
    memos, bad_memos = cache.verify_memos(repair=args.repair)
    if bad_memos:
        _err(f"{len(bad_memos)} of {memos} parse memos did not match their text" + (" and were removed" if args.repair else "; run `microtvm cache verify --repair`"))
    bad = [r for r in results if not r.ok]
    if args.json:
        print_json([
            {"content_id": r.content_id, "ok": r.ok, "actual": r.actual, "removed": r.removed} for r in results
        ])
    else:
        for r in results:
            status = "ok" if r.ok else ("REMOVED (damaged)" if r.removed else f"DAMAGED (hashes to {r.actual})")
            print(f"{r.content_id} {status}")
        _err(f"{len(results)} entries, {len(bad)} damaged" + ("" if not bad or args.repair else "; run `microtvm cache verify --repair`"))
    if (bad or bad_memos) and not args.repair:
        return 1
    return 0


def cmd_cache_clean(args: argparse.Namespace) -> int:
    from ..cache.store import Cache

    keep = None
    if args.keep_locked:
        from ..registry.lockfile import load_project_lock

        lock = load_project_lock()
        keep = [e.content_id for e in lock.entries.values() if e.content_id] if lock else []
    removed = Cache().clean(keep=keep)
    _err(f"removed {len(removed)} cached template(s)")
    return 0


def cmd_index_list(args: argparse.Namespace) -> int:
    from ..registry.extra_indexes import list_extra_indexes
    from ..registry.packaged_indexes import packaged_indexes

    rows = [
        {"name": i.name, "kind": "packaged", "location": i.origin.location, "templates": len(i.templates)}
        for i in packaged_indexes()
    ]
    for e in list_extra_indexes():
        rows.append({"name": e.name, "kind": "extra", "location": e.location, "templates": None})
    if args.json:
        print_json(rows)
        return 0
    print_table(["NAME", "KIND", "LOCATION"], [[r["name"], r["kind"], r["location"]] for r in rows])
    return 0


def cmd_index_add(args: argparse.Namespace) -> int:
    from ..registry.extra_indexes import add_extra_index

    index = add_extra_index(args.name, args.location, offline=_offline(args))
    print(f"added index {args.name} ({len(index.templates)} template(s))")
    return 0


def cmd_index_remove(args: argparse.Namespace) -> int:
    from ..registry.extra_indexes import remove_extra_index

    remove_extra_index(args.name)
    print(f"removed index {args.name}")
    return 0


def cmd_index_update(args: argparse.Namespace) -> int:
    from ..errors import OfflineError
    from ..registry.extra_indexes import update_extra_indexes

    if _offline(args):
        raise OfflineError("`microtvm index update` needs the network; run it without --offline")
    failed = 0
    for name, ok, message in update_extra_indexes():
        print(f"{name}: {message}")
        failed += not ok
    return 1 if failed else 0
