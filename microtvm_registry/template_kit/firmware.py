"""Bare-metal firmware from a board's description: the linker script made from its memory
regions, the size report read from the built ELF per region, and the one line a region overflow
deserves. Nothing here knows an architecture: a board is its ``memory`` list (name, kind
"code" or "data", origin, length), as boards.json files describe them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

_OVERFLOW_RE = re.compile(r"region [`'](\w+)' overflowed by (\d+) bytes")


def region(board: Mapping[str, Any], kind: str) -> Dict[str, Any]:
    """The board's first memory region of ``kind`` ("code" or "data")."""
    return next(r for r in board["memory"] if r["kind"] == kind)


def linker_script(template_text: str, board: Mapping[str, Any], stack_bytes: int, min_heap_bytes: int) -> str:
    """A linker script template (``@REGIONS@``, ``@CODE@``, ``@DATA@``, ``@BOARD@``,
    ``@STACK_SIZE@``, ``@MIN_HEAP_SIZE@``) filled in from the board's memory regions."""
    regions = []
    for r in board["memory"]:
        attrs = "rx" if r["kind"] == "code" else "rwx"
        regions.append(f"  {r['name']} ({attrs}) : ORIGIN = {r['origin']}, LENGTH = {int(r['length'])}")
    return (
        template_text.replace("@BOARD@", board["name"])
        .replace("@REGIONS@", "\n".join(regions))
        .replace("@CODE@", region(board, "code")["name"])
        .replace("@DATA@", region(board, "data")["name"])
        .replace("@STACK_SIZE@", str(stack_bytes))
        .replace("@MIN_HEAP_SIZE@", str(min_heap_bytes))
    )


def explain_overflow(output: str, board: Mapping[str, Any]) -> Optional[str]:
    """The linker's "region X overflowed" as one line naming what the board has, or None."""
    overflow = _OVERFLOW_RE.search(output)
    if not overflow:
        return None
    name, extra = overflow.group(1), int(overflow.group(2))
    have = int(next(r for r in board["memory"] if r["name"] == name)["length"])
    kind = next((r["kind"] for r in board["memory"] if r["name"] == name), "data")
    advice = ("the model's weights and code: a smaller or int8 model, or a board with more flash" if kind == "code" else
              "the model's plan (arena and workspace) and the firmware's own RAM: an int8 model, --kernels cmsis-nn or "
              "microtvm tune (smaller plans), a workspace_size_bytes no larger than the plan needs, or a board with more RAM")
    return (
        f"the firmware does not fit {board['name']}: region {name} needs {have + extra} bytes, "
        f"the board has {have} (over by {extra}); what takes it is {advice}"
    )


#: An input section in a GNU ld map: " .name  0xADDR  0xSIZE  object" (the name may end the line
#: before, when it is long).
_MAP_SECTION_RE = re.compile(r"^ (\.\S+)?\s+0x[0-9a-fA-F]+\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
_MAP_PARTS = ((".text", "code_bytes"), (".rodata", "constants_bytes"), (".data", "data_bytes"), (".bss", "bss_bytes"))


def library_sizes(map_file: Path, libraries: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """What each kernel library's objects (built from the project's lib/<name>/) put in the
    firmware, from the linker's map: only what the link kept (the map's "Discarded input
    sections" come before its memory map and are skipped)."""
    found = [dict(name=lib["name"], version=lib["version"], content_id=lib["content_id"], code_bytes=0, constants_bytes=0,
                  data_bytes=0, bss_bytes=0) for lib in libraries]
    marks = [f"build/obj/{lib['folder']}/" for lib in libraries]
    if not libraries or not Path(map_file).is_file():
        return found
    kept = False
    pending: Optional[str] = None
    for line in Path(map_file).read_text(errors="replace").splitlines():
        if not kept:
            kept = line.startswith("Linker script and memory map")
            continue
        named = re.match(r"^ (\.\S+)$", line)
        if named:
            pending = named.group(1)
            continue
        match = _MAP_SECTION_RE.match(line)
        section = match.group(1) or pending if match else None
        pending = None
        if not match or section is None:
            continue
        owner = next((i for i, mark in enumerate(marks) if mark in match.group(3)), None)
        part = next((key for prefix, key in _MAP_PARTS if section == prefix or section.startswith(prefix + ".")), None)
        if owner is not None and part is not None:
            found[owner][part] += int(match.group(2), 16)
    return found


def model_symbols(project: Path) -> tuple:
    """The symbols of a project's model the report sizes: its arena (static, so looked up by the
    name the model's C gives it) and the shared workspace."""
    import json

    try:
        names = list(json.loads((Path(project) / "model" / "metadata.json").read_text())["modules"])
    except (OSError, ValueError, KeyError, TypeError):
        names = []
    return ("g_workspace", *(f"{name}_arena" for name in names))


def build_report(elf: Path, board: Mapping[str, Any], stack_bytes: int, min_heap_bytes: int,
                 symbols: tuple = ("g_workspace",), libraries: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """Flash and RAM use read from the ELF, per memory region of the board (pyelftools); what
    each kernel library takes, from the linker's map beside the ELF."""
    from elftools.elf.constants import SH_FLAGS
    from elftools.elf.elffile import ELFFile

    regions = [
        {"name": r["name"], "kind": r["kind"], "origin": int(r["origin"], 16), "length": int(r["length"]), "used": 0}
        for r in board["memory"]
    ]

    def region_of(addr: int) -> Optional[Dict[str, Any]]:
        return next((r for r in regions if r["origin"] <= addr < r["origin"] + r["length"]), None)

    sections: Dict[str, int] = {}
    sizes: Dict[str, int] = {}
    with open(elf, "rb") as fh:
        elffile = ELFFile(fh)
        loads = [s for s in elffile.iter_segments() if s["p_type"] == "PT_LOAD"]
        for sec in elffile.iter_sections():
            size = sec["sh_size"]
            if not sec["sh_flags"] & SH_FLAGS.SHF_ALLOC or size == 0:
                continue
            sections[sec.name] = size
            vma = sec["sh_addr"]
            home = region_of(vma)
            if home is not None:
                home["used"] += size
            if sec["sh_type"] != "SHT_NOBITS":
                seg = next((s for s in loads if s["p_vaddr"] <= vma < s["p_vaddr"] + max(s["p_memsz"], 1)), None)
                if seg is not None:
                    lma_region = region_of(seg["p_paddr"] + (vma - seg["p_vaddr"]))
                    if lma_region is not None and lma_region is not home:
                        lma_region["used"] += size
        from elftools.elf.sections import SymbolTableSection

        symtab = elffile.get_section_by_name(".symtab")
        if isinstance(symtab, SymbolTableSection):
            for name in symbols:
                found = symtab.get_symbol_by_name(name)
                if found:
                    sizes[name] = found[0]["st_size"]
    data_bytes, bss_bytes = sections.get(".data", 0), sections.get(".bss", 0)
    plan_bytes = sizes.get("g_workspace", 0) + sum(v for k, v in sizes.items() if k.endswith("_arena"))
    return {
        "board": board["name"],
        "core": board["core"],
        "emulated": board.get("qemu") is not None,
        "elf": str(elf),
        # Where the RAM goes: the model's plan (its arena and the kernels' workspace), the
        # firmware's own static RAM (runtime, session, port, C library: everything else in
        # .data and .bss) and the stack reserved for it.
        "parts": {"plan_bytes": plan_bytes, "runtime_bytes": data_bytes + bss_bytes - plan_bytes, "stack_bytes": stack_bytes},
        "regions": regions,
        "flash": {
            "region": region(board, "code")["name"],
            "code_bytes": sections.get(".text", 0),
            "constants_bytes": sections.get(".rodata", 0),
            "data_image_bytes": sections.get(".data", 0),
        },
        "ram": {
            "region": region(board, "data")["name"],
            "data_bytes": sections.get(".data", 0),
            "bss_bytes": sections.get(".bss", 0),
            "workspace_bytes": sizes.get("g_workspace", 0),
            "stack_bytes": stack_bytes,
            "min_heap_bytes": min_heap_bytes,
        },
        "libraries": library_sizes(Path(elf).with_suffix(".map"), libraries),
    }


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"build report: {report['board']} ({report['core']})"]
    for r in report["regions"]:
        share = 100.0 * r["used"] / r["length"] if r["length"] else 0.0
        lines.append(f"  {r['name']:<6} {r['used']:>10,} of {r['length']:>10,} bytes ({share:.1f}%)")
    f, parts = report["flash"], report["parts"]
    lines.append(
        f"  flash: code {f['code_bytes']:,}, constants {f['constants_bytes']:,}, initial data {f['data_image_bytes']:,}"
    )
    lines.append(
        f"  ram: plan {parts['plan_bytes']:,} (arena and workspace), runtime {parts['runtime_bytes']:,} (the firmware's own), "
        f"stack {parts['stack_bytes']:,}, heap for tensors: the rest"
    )
    if report.get("emulated"):
        lines.append("  (the emulated board's memory; for the part you will ship on: microtvm size MODEL_TAR --board PART)")
    for lib in report.get("libraries", []):
        lines.append(
            f"  {lib['name']} {lib['version']} ({lib['content_id'][:12]}): code {lib['code_bytes']:,}, "
            f"constants {lib['constants_bytes']:,}, data {lib['data_bytes'] + lib['bss_bytes']:,} (in the figures above)"
        )
    return "\n".join(lines)

