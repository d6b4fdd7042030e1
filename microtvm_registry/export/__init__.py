"""``microtvm export MODEL_TAR --format cmake|platformio|arduino -o DIR``: a compiled model as a
self-contained library folder for the user's own firmware, as Edge Impulse and TFLite Micro ship
theirs: the model's C and header, the runtime it needs, the kernel libraries it was compiled with
(copied from the verified cache, with their licenses), the build system's glue and a short example.

One layout serves the three build systems: every source and header under ``src/`` (Arduino
compiles a library's ``src/`` recursively and puts it, and only it, on the include path, so a
kernel library's headers sit at ``src/``'s top), the glue beside it. The folder is filled in a
staging folder and renamed into place: a failed export leaves nothing behind.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from ..errors import MicrotvmError

FORMATS = ("cmake", "platformio", "arduino")


@dataclass
class Export:
    path: Path
    format: str
    model: str
    target: str
    sources: List[str] = field(default_factory=list)  # relative to path
    libraries: List[Dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> Dict[str, Any]:
        return {"path": str(self.path), "format": self.format, "model": self.model, "target": self.target,
                "sources": self.sources, "libraries": self.libraries}


def export_model(mlf_path: Path, fmt: str, out: Path) -> Export:
    """Writes the export of the compiled model ``mlf_path`` for build system ``fmt`` into ``out``
    (a folder that must not exist yet)."""
    from ..formats import mlf
    from ..template_kit.project_files import model_libraries, staged_project, TemplateKitError

    if fmt not in FORMATS:
        raise MicrotvmError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    mlf_path, out = Path(mlf_path), Path(out)
    if not mlf_path.is_file():
        raise MicrotvmError(f"{mlf_path} does not exist; compile a model first (microtvm compile MODEL -o {mlf_path.name})")
    library = mlf.load_model_library_format(mlf_path)
    model = library.model
    if model is None:
        raise MicrotvmError(f"{mlf_path.name} holds kernels, not a compiled model; export takes what microtvm compile writes")
    name = library.model_name
    try:
        with staged_project(out) as stage, tempfile.TemporaryDirectory(prefix="microtvm-export-") as tmp:
            mlf.safe_extract(mlf_path, Path(tmp))
            result = Export(out, fmt, name, str(model.get("target", "")))
            src = stage / "src"
            src.mkdir()
            _copy_tree(Path(tmp) / "codegen" / "host" / "include", src)
            for c_file in sorted((Path(tmp) / "codegen" / "host" / "src").glob("*.c")):
                shutil.copy2(c_file, src / c_file.name)
            for f in ("mtvm_runtime.c", "mtvm_runtime.h"):
                shutil.copy2(Path(tmp) / "runtime" / f, src / f)
            result.libraries = _add_libraries(src, stage, model_libraries(library.metadata))
            result.sources = sorted(p.relative_to(stage).as_posix() for p in src.rglob("*.c"))
            facts = {"inputs": list(model.get("inputs") or []), "outputs": list(model.get("outputs") or [])}
            _write_glue(stage, fmt, name, result, facts)
    except TemplateKitError as err:
        raise MicrotvmError(str(err)) from None
    except mlf.ModelLibraryError as err:
        raise MicrotvmError(str(err)) from None
    return result


def _copy_tree(source: Path, dest: Path) -> None:
    for path in sorted(source.rglob("*")):
        target = dest / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def _add_libraries(src: Path, stage: Path, libraries: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Each kernel library's sources the model calls, from its verified cache entry (the content
    id the model was compiled with): headers at src/'s top, sources under src/<library>/, its
    license in LICENSES/."""
    from ..template_kit.project_files import copy_library, library_folder_name

    done = []
    for entry in libraries:
        folder_name = library_folder_name(entry["name"])
        with tempfile.TemporaryDirectory(prefix="microtvm-export-lib-") as tmp:
            content_id = copy_library(entry, Path(tmp))
            _copy_tree(Path(tmp) / "Include", src)
            for rel in entry["sources"]:
                target = src / folder_name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(tmp) / rel, target)
            licenses = stage / "LICENSES"
            for extra in ("LICENSE", "LICENSE.txt"):
                if (Path(tmp) / extra).is_file():
                    licenses.mkdir(exist_ok=True)
                    shutil.copy2(Path(tmp) / extra, licenses / f"{folder_name}.txt")
        done.append({"name": entry["name"], "version": entry["version"], "content_id": content_id, "license": entry["license"]})
    return done


def _example(name: str, facts: Mapping[str, List[Mapping[str, Any]]]) -> str:
    """About ten lines: static buffers sized by the header, one call."""
    m = name.upper()
    lines = [f'#include "{name}_model.h"', "", "#include <stdint.h>", ""]
    for role in ("inputs", "outputs"):
        for t in facts[role]:
            lines.append(f"static uint8_t {role[:-1]}_{t['c_name']}[{m}_{role[:-1].upper()}_{str(t['c_name']).upper()}_BYTES];")
    ins = ", ".join(f"input_{t['c_name']}" for t in facts["inputs"]) or "0"
    outs = ", ".join(f"output_{t['c_name']}" for t in facts["outputs"]) or "0"
    lines += [
        "",
        f"/* Fill the inputs (quantized with {m}_INPUT_..._SCALE and _ZERO_POINT), run, read the outputs. */",
        f"int run_{name}(void) {{",
        f"  const void* inputs[] = {{{ins}}};",
        f"  void* outputs[] = {{{outs}}};",
        f"  return {name}_run(inputs, outputs); /* 0: done */",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _write_glue(stage: Path, fmt: str, name: str, result: Export, facts: Mapping[str, List[Mapping[str, Any]]]) -> None:
    example = _example(name, facts)
    libs = ", ".join(f"{lib['name']} {lib['version']} ({lib['license']}, LICENSES/)" for lib in result.libraries) or "none"
    readme = [
        f"# {name}: a model compiled by microtvm-registry, as a {fmt} library",
        "",
        f"Compiled for `{result.target}`: build it with that core's flags (for example `-mcpu=cortex-m4 -mthumb`).",
        f"The API is `src/{name}_model.h`: `{name}_run(inputs, outputs)` and a define for each input and output",
        "(its bytes, shape, dtype, and a quantized one's scale and zero point). Everything runs from static",
        "memory: no heap, no libtvm. Kernel libraries compiled in: " + libs + ".",
        "",
    ]
    if fmt == "cmake":
        sources = "\n".join(f"  {s}" for s in result.sources)
        (stage / "CMakeLists.txt").write_text(
            "# The model as a static library: add_subdirectory() this folder and link the target.\n"
            "cmake_minimum_required(VERSION 3.13)\n"
            f"project({name} C)\n"
            f"add_library({name} STATIC\n{sources}\n)\n"
            f"target_include_directories({name} PUBLIC ${{CMAKE_CURRENT_SOURCE_DIR}}/src)\n"
            f"target_link_libraries({name} PUBLIC m)\n"
        )
        (stage / "examples").mkdir()
        (stage / "examples" / "example.c").write_text(example)
        readme.append(f"Use: `add_subdirectory(path/to/this {name})` and `target_link_libraries(app PRIVATE {name})`; see examples/example.c.")
    elif fmt == "platformio":
        manifest = {
            "name": name, "version": "1.0.0", "description": f"{name}: a model compiled by microtvm-registry for {result.target}",
            "keywords": ["tinyml", "microtvm"], "frameworks": "*", "platforms": "*",
            "build": {"srcDir": "src", "includeDir": "src", "flags": ["-Isrc"]},
            "export": {"include": ["src", "examples", "LICENSES", "README.md", "library.json"]},
        }
        (stage / "library.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (stage / "examples").mkdir()
        (stage / "examples" / "example.c").write_text(example)
        readme.append("Use: put this folder in your project's lib/ (or lib_deps = file://path/to/this); see examples/example.c.")
    else:
        (stage / "library.properties").write_text("\n".join([
            f"name={name}", "version=1.0.0", "author=microtvm-registry", "maintainer=microtvm-registry",
            f"sentence={name}: a model compiled by microtvm-registry for {result.target}",
            "paragraph=Static memory, no heap: fill the inputs, call run, read the outputs.",
            "category=Data Processing", "url=https://github.com/", "architectures=*", f"includes={name}_model.h", "",
        ]))
        sketch = stage / "examples" / f"{name}_example"
        sketch.mkdir(parents=True)
        body = example.replace(f"int run_{name}(void) {{", f"int run_{name}() {{")
        (sketch / f"{name}_example.ino").write_text(
            body + "\nvoid setup() {}\n\nvoid loop() {\n  run_" + name + "();\n}\n")
        readme.append("Use: Sketch > Include Library > Add .ZIP Library (zip this folder), or copy it into your libraries folder.")
    (stage / "README.md").write_text("\n".join(readme) + "\n")


__all__ = ["Export", "FORMATS", "export_model"]
