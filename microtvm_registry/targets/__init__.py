"""Target families as data (``targets.json``): what ``compile --target`` accepts, how TVM is told
to generate C for it, which packaged template builds it, the toolchain and emulator it needs,
and the per-core facts kernels choose by (DSP, MVE).

Why data: the same facts were read by the compiler, the tuner, the CLI's checks, the QEMU
driver and the templates; one description per family (as Zephyr's boards/ and PlatformIO's
manifests have one per board) means a new family is one entry and a template, not ten edits.
Standard library only, read once per process.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ModelError

TARGETS_FILE = Path(__file__).with_name("targets.json")


@dataclass(frozen=True)
class Tool:
    """A program a family needs on PATH, and the Debian packages that provide it."""

    tools: Tuple[str, ...]
    packages: Tuple[str, ...] = ()

    @property
    def install_hint(self) -> str:
        return f"apt-get install {' '.join(self.packages)} (Debian/Ubuntu)" if self.packages else "install it"


@dataclass(frozen=True)
class Core:
    """One ``--target``: a core of a family."""

    name: str
    family: str
    arch: str
    dsp: bool = False  # the M-profile DSP extension (SMLAD, SXTB16, ...)
    mve: bool = False  # Helium (M-profile vector extension)


@dataclass(frozen=True)
class Family:
    name: str
    description: str
    template: str
    tvm_target: Dict[str, Any]
    toolchain: Tool
    emulator: Optional[Tool]
    cores: Tuple[Core, ...]
    compiler_flags: Tuple[str, ...] = field(default=())

    def tvm_target_for(self, core: Core) -> Dict[str, Any]:
        """TVM 0.27 takes targets as JSON dicts; a family with several cores names the core."""
        target = dict(self.tvm_target)
        if len(self.cores) > 1:
            target["mcpu"] = core.name
        return target


@lru_cache(maxsize=1)
def families() -> Dict[str, Family]:
    with open(TARGETS_FILE, encoding="utf-8") as fh:
        data = json.load(fh)
    found: Dict[str, Family] = {}
    for entry in data["families"]:
        emulator = entry.get("emulator")
        found[entry["name"]] = Family(
            name=entry["name"],
            description=entry["description"],
            template=entry["template"],
            tvm_target=dict(entry["tvm_target"]),
            toolchain=Tool(tuple(entry["toolchain"]["tools"]), tuple(entry["toolchain"].get("packages", ()))),
            emulator=Tool((emulator["tool"],), tuple(emulator.get("packages", ()))) if emulator else None,
            cores=tuple(Core(c["name"], entry["name"], c["arch"], bool(c.get("dsp")), bool(c.get("mve"))) for c in entry["cores"]),
            compiler_flags=tuple(entry.get("compiler_flags", ())),
        )
    return found


def target_names() -> Tuple[str, ...]:
    """Every ``--target``, in the file's order (``host`` first)."""
    return tuple(core.name for family in families().values() for core in family.cores)


def core(name: str) -> Core:
    """The core ``--target NAME`` means (one line naming the choices for an unknown one)."""
    for family in families().values():
        for c in family.cores:
            if c.name == name:
                return c
    raise ModelError(f"unknown target {name!r}; one of: {', '.join(target_names())}")


def family_of(name: str) -> Family:
    """The family of the target (core) ``name``."""
    return families()[core(name).family]


def tvm_target(name: str) -> Dict[str, Any]:
    """The JSON target TVM compiles ``--target NAME`` with."""
    return family_of(name).tvm_target_for(core(name))


def cores_of(family: str) -> List[str]:
    return [c.name for c in families()[family].cores]
