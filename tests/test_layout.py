"""The package follows the data flow: every import points down a floor, and nothing imports in a circle.

Imports inside functions count too (they are how the warm paths stay light, but they still tie
modules together). One exception: ``from microtvm_registry import __version__`` reads a constant
from the package root, whose public functions only forward to lower modules.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = "microtvm_registry"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Floors, lowest first. A module may import modules of its own floor or lower ones.
FLOORS: List[List[str]] = [
    # the base every stage may use
    ["errors", "dirs", "files", "contentid", "packaged", "procs", "progress", "http", "project_api", "project_api.server"],
    # shared data: the MLF model, the plan, dtypes, names, target families
    ["formats", "formats.dtypes", "formats.names", "formats.plan", "formats.mlf", "targets"],
    # registry, plain data and formats: no I/O beyond reading the file it is given
    ["registry", "registry.models", "registry.sources", "registry.index_format", "registry.lockfile"],
    # registry, where indexes come from and what a spec means
    ["registry.packaged_indexes", "registry.extra_indexes", "registry.plugins", "registry.catalog",
     "registry.resolve"],
    ["fetch", "fetch.staging", "fetch.git", "fetch.archive", "fetch.mirrors"],
    ["cache", "cache.store", "cache.trust"],
    ["templates", "locking"],
    ["project_api.client", "project_api.tvm_compat"],
    ["project"],
    ["device", "device.protocol", "device.session", "device.serial_transport", "device.qemu"],
    # the board database (shipped data) and what is plugged in (pyserial, pyusb, running QEMUs)
    ["boards", "boards.database", "boards.discovery"],
    ["compile", "compile.mlf", "compile.frontends", "compile.frontends.onnx", "compile.frontends.onnx_qdq",
     "compile.frontends.tflite", "compile.kernels", "compile.kernels.tvm", "compile.lower",
     "compile.model_c", "compile.model", "compile.sample_models", "compile.schedules", "compile.tuning_records"],
    # tuning: compiles kernels, builds and flashes them on a board, measures them
    ["tuning", "tuning.tuner"],
    # what template servers are written against
    ["template_kit", "template_kit.project_files", "template_kit.server_base", "template_kit.firmware",
     "template_kit.emulated"],
    ["host", "host.mlf", "host.protocol", "host.session", "cli", "cli._common", "cli.registry_cmds",
     "cli.project_cmds", "cli.host_cmds", "cli.board_cmds", "cli.compile_cmds", "__main__"],
]
FLOOR: Dict[str, int] = {name: n for n, names in enumerate(FLOORS) for name in names}


def module_files() -> Dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "_tvm_shim" in rel.parts:  # copied onto a template server's path; imports nothing of ours
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """Every module of ours that ``name`` imports, at any depth of its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                target = node.module[len(PACKAGE) + 1 :]
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}" if target else alias.name
                if target == "" and alias.name == "__version__":
                    continue  # the root's version constant (see the module docstring)
                if sub in known:
                    out.add(sub)
                elif target in known and target:
                    out.add(target)
                else:
                    raise AssertionError(f"{name}: cannot place import of {sub!r}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    out.add(alias.name[len(PACKAGE) + 1 :])
    out.discard(name)
    return out


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items() if name}


def test_every_module_has_a_floor(graph):
    assert sorted(set(graph) - set(FLOOR)) == [], "add new modules to FLOORS"
    assert sorted(set(FLOOR) - set(graph)) == [], "FLOORS names a module that does not exist"


def test_imports_point_down(graph):
    upward = [
        f"{mod} (floor {FLOOR[mod]}) imports {dep} (floor {FLOOR[dep]})"
        for mod, deps in sorted(graph.items())
        for dep in sorted(deps)
        if FLOOR[dep] > FLOOR[mod]
    ]
    assert upward == []


def test_no_import_circle(graph):
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    circles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_lower_stages_import_no_higher_stage(graph):
    """The formats and ids are read by everything, so they must stay free of what reads them."""
    for low_module in ("registry.models", "registry.index_format", "registry.lockfile", "contentid"):
        higher = {dep for dep in graph[low_module] if FLOOR[dep] > FLOOR["registry.lockfile"]}
        assert higher == set(), low_module


def test_every_module_imports_in_dependency_order():
    """One fresh interpreter imports every module, lowest floor first: each works on its own."""
    order = [f"{PACKAGE}.{m}" for names in FLOORS for m in names if m != "__main__"]  # __main__ runs the CLI
    code = "import importlib\nfor m in %r:\n    importlib.import_module(m)\nprint('ok')" % order
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
