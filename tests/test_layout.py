"""The package follows the data flow: the layering contract in pyproject.toml (import-linter's
``[tool.importlinter]``) is kept, it names every module, and its stages come in DESIGN.md's order.

import-linter reads every import, inside functions too (they are how the warm paths stay light,
but they still tie modules together), and checks the layers and that no package's modules import
each other in a circle. What it cannot know is that the contract is the one DESIGN.md describes:
that is checked here, against ../shared/DESIGN.md's sentence "Packages follow these stages".
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "microtvm_registry"
DESIGN = REPO.parent / "shared" / "DESIGN.md"
HANG_STOP = 300


def _config() -> Dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]


def stage_layers() -> List[List[str]]:
    """The main contract's layers, lowest first, each a list of module names (without the package)."""
    contract = next(c for c in _config()["contracts"] if c["id"] == "stages")
    return [[m.strip()[len(PACKAGE) + 1 :] for m in re.split(r"[:|]", layer)] for layer in reversed(contract["layers"])]


def module_names() -> List[str]:
    names = []
    for path in sorted((REPO / PACKAGE).rglob("*.py")):
        rel = path.relative_to(REPO / PACKAGE).with_suffix("")
        if "_tvm_shim" in rel.parts:  # copied onto a template server's path; imports nothing of ours
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if parts:
            names.append(".".join(parts))
    return names


def test_the_layering_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")  # import-linter's command, beside this Python
    out = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=HANG_STOP)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and ", 0 broken" in out.stdout


def test_every_module_is_in_a_layer():
    layered = [m for layer in stage_layers() for m in layer]
    # a module is placed by its layer, or a package's __init__ by the layers of its modules
    placed = {name for name in module_names()
              if any(name == m or name.startswith(m + ".") or m.startswith(name + ".") for m in layered)}
    assert sorted(set(module_names()) - placed) == [], "add new top-level modules to [tool.importlinter]'s layers"
    assert sorted(m for m in layered if m not in module_names()) == [], "a layer names a module that does not exist"


def test_the_stages_come_in_designs_order():
    """DESIGN.md: "Packages follow these stages, arrows one way: registry (...), fetch (...), ...;
    shared data types (...) sit below all of them". Each stage named there is a layer of the
    contract, in that order, with the shared data below the first."""
    if not DESIGN.is_file():
        pytest.skip(f"{DESIGN} is absent (the shared design folder beside the checkout)")
    text = " ".join(DESIGN.read_text().split())
    sentence = re.search(r"Packages follow these stages, arrows one way: (.*?); shared data types", text)
    assert sentence, "DESIGN.md's stage sentence was not found"
    stages = [re.sub(r"\s*\(.*", "", part).strip() for part in re.split(r",\s*(?![^()]*\))", sentence.group(1))]
    stages = [s for s in stages if s]
    assert stages[:3] == ["registry", "fetch", "cache"] and stages[-1] == "cli"
    position = {m: n for n, layer in enumerate(stage_layers()) for m in layer}
    # a stage split over layers (project_api: its server is in the base, its client higher) is
    # where its highest part is
    found = [max(n for m, n in position.items() if m == s or m.startswith(s + ".")) for s in stages]
    assert found == sorted(found) and len(set(found)) == len(found), dict(zip(stages, found))
    assert position["formats"] < position["registry"] and position["targets"] < position["registry"]
    assert position["device"] < position["compile"]  # "so device never imports compile"


def test_every_module_imports_in_dependency_order():
    """One fresh interpreter imports every module, lowest layer first: each works on its own."""
    order = [f"{PACKAGE}.{m}" for layer in stage_layers() for m in layer if m != "__main__"]  # __main__ runs the CLI
    order += [f"{PACKAGE}.{m}" for m in module_names() if f"{PACKAGE}.{m}" not in order and m != "__main__"]
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok')" % order
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
