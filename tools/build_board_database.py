#!/usr/bin/env python3
"""Regenerates boards/boards.json, the board database shipped in the wheel, from its sources:

- templates/cortex-m/boards.json: our template's boards (memory map, core, UART, USB ids);
- tools/data/tvm-boards.json: what Apache TVM's zephyr and arduino templates list in their
  boards.json at every release tag v0.8.0-v0.18.0 (a copy of shared/data/tvm-boards.json);
- tools/data/board-facts.json: vendors' facts for the boards TVM lists and our template does not
  describe (core, memory, clock, USB ids and kinds), name aliases, and debug-probe USB ids.

One entry per physical board, with every template that supports it and the options to give.
Sources that disagree (a USB id TVM lists that the facts do not have, a board with no facts)
stop the build with the reason. Run it after editing any source; a test fails while the
committed database is stale.

    python tools/build_board_database.py [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

REPO = Path(__file__).resolve().parent.parent
CORTEX_M = REPO / "templates" / "cortex-m" / "boards.json"
TVM_BOARDS = REPO / "tools" / "data" / "tvm-boards.json"
FACTS = REPO / "tools" / "data" / "board-facts.json"
OUTPUT = REPO / "boards" / "boards.json"

#: The option that names the board in TVM's templates: v0.8 used a per-platform name, v0.9 on
#: "board" (the v0.12+ servers are checked facts; v0.9-v0.11 follow TVM's v0.9 tutorials).
BOARD_OPTION_V08 = {"zephyr": "zephyr_board", "arduino": "arduino_board"}


def _version_key(tag: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in tag.lstrip("v").split("."))


def _usb_key(entry: Dict[str, Any]) -> Tuple[str, str]:
    return entry["vid"].lower(), entry["pid"].lower()


def cortex_m_boards() -> Dict[str, Dict[str, Any]]:
    boards = {}
    for b in json.loads(CORTEX_M.read_text())["boards"]:
        code = sum(int(r["length"]) for r in b["memory"] if r["kind"] == "code")
        data = sum(int(r["length"]) for r in b["memory"] if r["kind"] == "data")
        qemu = b.get("qemu") or None
        boards[b["name"]] = {
            "name": b["name"],
            "aliases": [],
            "vendor": b["vendor"],
            "description": b["description"],
            "core": b["core"],
            "fpu": b.get("fpu") is not None,
            "flash_bytes": code,
            "ram_bytes": data,
            "clock_hz": int(b.get("max_clock_hz") or b["clock_hz"]),
            "emulated": qemu is not None,
            "qemu_machine": qemu["machine"] if qemu else None,
            "usb": [dict(u, vid=u["vid"].lower(), pid=u["pid"].lower()) for u in b.get("usb", [])],
            "templates": [
                {
                    "template": "cortex-m",
                    "versions": None,
                    "options": {"board": b["name"]},
                    "use": f"cortex-m -o board={b['name']}",
                }
            ],
        }
    return boards


def build() -> Dict[str, Any]:
    facts = json.loads(FACTS.read_text())
    aliases: Dict[str, str] = facts["aliases"]
    tvm = json.loads(TVM_BOARDS.read_text())["tags"]
    boards = cortex_m_boards()

    # Every (platform, TVM board name) -> the tags that list it, and its latest entry.
    seen: Dict[Tuple[str, str], List[str]] = {}
    latest: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for tag in sorted(tvm, key=_version_key):
        for platform, listed in tvm[tag].items():
            for name, entry in listed.items():
                seen.setdefault((platform, name), []).append(tag)
                latest[(platform, name)] = entry

    problems: List[str] = []
    for (platform, tvm_name), tags in sorted(seen.items()):
        name = aliases.get(tvm_name, tvm_name)
        entry = latest[(platform, tvm_name)]
        if name not in boards:
            fact = facts["boards"].get(tvm_name)
            if fact is None:
                problems.append(f"{platform} board {tvm_name!r} (TVM {tags[-1]}) has no entry in {FACTS.name}")
                continue
            boards[name] = {
                "name": name,
                "aliases": [],
                "vendor": fact["vendor"],
                "description": fact["description"],
                "core": fact["core"],
                "fpu": bool(fact["fpu"]),
                "flash_bytes": fact["flash_bytes"],
                "ram_bytes": fact["ram_bytes"],
                "clock_hz": fact["clock_hz"],
                "emulated": bool(entry.get("is_qemu", False)),
                "qemu_machine": fact.get("qemu_machine"),
                "usb": [dict(u, vid=u["vid"].lower(), pid=u["pid"].lower()) for u in fact["usb"]],
                "templates": [],
            }
        board = boards[name]
        if tvm_name != name and tvm_name not in board["aliases"]:
            board["aliases"].append(tvm_name)
        if entry.get("is_qemu") is not None and bool(entry["is_qemu"]) != board["emulated"]:
            problems.append(f"{name}: TVM says is_qemu={entry['is_qemu']}, the facts say emulated={board['emulated']}")
        vid, pid = (entry.get("vid_hex") or "").lower(), (entry.get("pid_hex") or "").lower()
        if vid and (vid, pid) not in {_usb_key(u) for u in board["usb"]}:
            problems.append(f"{name}: TVM {tags[-1]} lists USB id {vid}:{pid}, which the facts do not have")
        last = tags[-1]
        option = "board" if _version_key(last) >= (0, 9, 0) else BOARD_OPTION_V08[platform]
        value = entry["board"] if platform == "zephyr" else tvm_name
        template = f"apache-tvm/{platform}"
        # What TVM's own boards.json says of the board, as that template sees it.
        said = {k: entry[k] for k in ("model", "fpu", "is_qemu", "vid_hex", "pid_hex", "architecture", "package") if k in entry}
        board["templates"].append(
            {
                "template": template,
                "versions": [tags[0].lstrip("v"), last.lstrip("v")],
                "options": {option: value},
                "use": f"{template}@{last.lstrip('v')} -o {option}={value}",
                "tvm_boards_json": said,
            }
        )
    if problems:
        raise SystemExit("build_board_database: " + "; ".join(problems))
    ordered = sorted(boards.values(), key=lambda b: (b["emulated"], b["vendor"].lower(), b["name"]))
    return {
        "schema": 1,
        "about": (
            "The microtvm-registry board database: one entry per board, with every template that supports it. "
            "Generated by tools/build_board_database.py from templates/cortex-m/boards.json, TVM's boards.json "
            "(v0.8.0-v0.18.0) and vendors' facts (tools/data/board-facts.json); do not edit by hand."
        ),
        "boards": ordered,
        "probes": facts["probes"],
    }


def render(database: Dict[str, Any]) -> str:
    return json.dumps(database, indent=1, sort_keys=False) + "\n"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed database is stale")
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run python tools/build_board_database.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)}: {len(json.loads(text)['boards'])} boards")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
