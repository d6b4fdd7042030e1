"""The files of a generated project: option parsing, the shared device runtime, building a
project beside its final place, adding the model (extract, check, function table, workspace from
the plan), the project's own settings (with the microtvm-registry version that made it), and the
one line of a failed build that says why.

Every failure is a ``TemplateKitError``: a server turns it into its own ServerError, so the
message crosses the Project API unchanged.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from ..errors import ProjectError
from ..files import current_umask
from ..formats import mlf


#: Where a generated project keeps the model it was made from (its presence marks a project).
MODEL_TAR_NAME = "model.tar"


class TemplateKitError(ProjectError):
    """A template could not generate or build a project (the message says why and what to do)."""


def bool_option(value: Any, default: bool = False) -> bool:
    """tvmc passes every option as a string, so "false" must not count as true."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def int_option(options: Mapping[str, Any], name: str, default: Optional[int]) -> Optional[int]:
    """A non-negative integer option; ``default`` when not given (None: "not given")."""
    value = options.get(name)
    if value is None or value == "":
        return default
    try:
        result = int(value)
    except (TypeError, ValueError):
        raise TemplateKitError(f"option {name}={value!r} is not an integer; pass a byte count") from None
    if result < 0:
        raise TemplateKitError(f"option {name}={result} is negative; pass a byte count >= 0")
    return result


def shared_runtime(template_dir: Path) -> Path:
    """The device runtime every packaged template builds from (templates/common/runtime), or the
    copy a generated project carries."""
    for candidate in (template_dir / "runtime", template_dir.parent / "common" / "runtime"):
        if (candidate / "mtvm_runtime.h").is_file() and (candidate / "mtvm_port.h").is_file():
            return candidate
    raise TemplateKitError(
        f"the shared device runtime is missing beside {template_dir} (templates/common/runtime); reinstall microtvm-registry"
    )


@contextlib.contextmanager
def staged_project(project_dir: Path) -> Iterator[Path]:
    """A folder beside ``project_dir`` to fill, renamed into place when the block succeeds: a
    failed generate leaves nothing behind."""
    project_dir = Path(project_dir)
    if project_dir.exists():
        raise TemplateKitError(f"project folder {project_dir} already exists; choose a new folder or remove it")
    project_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{project_dir.name}.", suffix=".tmp", dir=str(project_dir.parent)))
    try:
        yield staging
        # mkdtemp makes its folder 0700 whatever the umask; a project folder gets what any folder
        # the user makes would get.
        os.chmod(staging, 0o777 & ~current_umask())
        os.rename(staging, project_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def add_model(
    out: Path, mlf_path: Path, workspace: Optional[int], default_workspace: int, room: Optional[Tuple[int, str]] = None
) -> Tuple[mlf.ModelLibrary, int]:
    """Copies the MLF into ``out`` (model.tar, extracted to model/), checks it carries the TVM
    headers, writes ``src/function_table.c``, and returns the library and the workspace to give
    generated code (a compiled model's plan sizes it; see compile.model.project_workspace_bytes).

    ``room``: (bytes, what they are) the workspace must fit in, e.g. the board's RAM less its
    stack and heap; a workspace that cannot fit is refused here, at create-project, in the
    board's terms, rather than by the linker at build."""
    from ..errors import ModelError
    from ..formats.plan import project_workspace_bytes

    mlf_path = Path(mlf_path)
    if not mlf_path.is_file():
        raise TemplateKitError(f"model library {mlf_path} does not exist; export one with microtvm_registry.compile.mlf")
    try:
        mlf.safe_extract(mlf_path, out / "model")  # checked before anything is copied; errors name the user's file
        shutil.copy2(mlf_path, out / MODEL_TAR_NAME)
        if not (out / "model" / "codegen" / "host" / "include" / "tvm" / "ffi" / "c_api.h").is_file():
            raise TemplateKitError(
                f"{mlf_path} carries no TVM headers (codegen/host/include/tvm/ffi/c_api.h); "
                "export it with microtvm_registry.compile.mlf.export_model_library_format"
            )
        library = mlf.load_model_library_format(out / "model")
        add_libraries(out, model_libraries(library.metadata))
        (out / "src").mkdir(exist_ok=True)
        (out / "src" / "function_table.c").write_text(mlf.function_table_source(library.functions))
        size = project_workspace_bytes(out / "model", workspace, default_workspace)
        if room is not None and size > room[0]:
            source = "-o workspace_size_bytes" if workspace is not None else "the model's plan"
            raise TemplateKitError(
                f"a workspace of {size:,} bytes ({source}) does not fit {room[1]} ({room[0]:,} bytes); "
                + ("pass a smaller workspace_size_bytes" if workspace is not None else "choose a board with more RAM, or a smaller model")
            )
        return library, size
    except mlf.UnsafeArchiveError as err:
        raise TemplateKitError(f"unsafe model archive: {err}; the project was not created") from None
    except (mlf.ModelLibraryError, ModelError) as err:
        raise TemplateKitError(str(err)) from None


#: What a project's Makefile includes for the kernel libraries its model calls (sources, flags).
LIBRARIES_MAKEFILE = "libraries.mk"
#: What a project's lib/ holds (name, version, content id, license, folder), for its build report.
LIBRARIES_FILE = "lib/libraries.json"


def project_libraries(project: Path) -> List[Dict[str, Any]]:
    """The kernel libraries ``add_libraries`` put into ``project`` (none: an empty list)."""
    path = Path(project) / LIBRARIES_FILE
    return json.loads(path.read_text()) if path.is_file() else []


#: One folder or file name of a library source a Makefile will name: no spaces, no shell syntax.
_SOURCE_PART = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


def model_libraries(metadata: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The kernel libraries a compiled model records (``compile --kernels cmsis-nn``), checked:
    names, versions, content ids and source paths are data from a file a user may have been
    handed, and reach paths and a Makefile."""
    from ..formats.names import printable

    found: List[Dict[str, Any]] = []
    for module in (metadata.get("modules") or {}).values():
        model = module.get("model") if isinstance(module, dict) else None
        listed = model.get("libraries") if isinstance(model, dict) else None
        for entry in listed if isinstance(listed, list) else []:
            if not isinstance(entry, dict):
                raise TemplateKitError("the model's metadata.json lists a library that is not a table; recompile the model")
            name, version, content_id = entry.get("name"), entry.get("version"), entry.get("content_id")
            sources = entry.get("sources")
            if not (isinstance(name, str) and isinstance(version, str) and isinstance(content_id, str)
                    and isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
                raise TemplateKitError(f"the model's library entry {printable(str(name))} is malformed; recompile the model")
            for rel in sources:
                parts = rel.split("/")
                if not rel.endswith(".c") or parts[0] != "Source" or not all(_SOURCE_PART.fullmatch(p) for p in parts):
                    raise TemplateKitError(f"the model's library {printable(name)} names the source {printable(rel)!r}, "
                                           "which is not a library source path; recompile the model")
            found.append({"name": name, "version": version, "content_id": content_id, "sources": list(sources),
                          "license": str(entry.get("license") or "")})
    return found


def library_folder_name(name: str) -> str:
    """``arm/cmsis-nn`` -> ``arm_cmsis-nn``: the library's folder under the project's lib/."""
    return name.replace("/", "_")


def copy_library(entry: Mapping[str, Any], dest: Path) -> str:
    """A library a model records (``model_libraries``): its headers (Include/), the sources it
    lists and its license, copied from the verified cache entry with the content id the model was
    compiled with into ``dest``; returns that content id."""
    from ..compile.kernels.library import KernelLibrary, copy_sources
    from ..errors import MicrotvmError
    from ..template_paths import library_for_build

    try:
        folder, _version, content_id = library_for_build(f"{entry['name']}@=={entry['version']}", content_id=entry["content_id"])
    except MicrotvmError as err:
        raise TemplateKitError(f"the model was compiled with {entry['name']} {entry['version']}: {err}") from None
    copy_sources(KernelLibrary(entry["name"], entry["version"], content_id, Path(folder), entry["license"]), entry["sources"], dest)
    return content_id


def add_libraries(out: Path, libraries: List[Dict[str, Any]]) -> None:
    """Each library's listed sources and its headers, copied from its verified cache entry (the
    content id the model was compiled with) into ``lib/``, and ``libraries.mk`` naming them."""
    srcs: List[str] = []
    flags: List[str] = []
    for entry in libraries:
        dest = Path("lib") / library_folder_name(entry["name"])
        copy_library(entry, out / dest)
        srcs += [f"{dest.as_posix()}/{rel}" for rel in entry["sources"]]
        flags.append(f"-I{dest.as_posix()}/Include")
    if libraries:
        recorded = [{"name": e["name"], "version": e["version"], "content_id": e["content_id"], "license": e["license"],
                     "folder": f"lib/{library_folder_name(e['name'])}"} for e in libraries]
        (out / LIBRARIES_FILE).write_text(json.dumps(recorded, indent=2) + "\n")
    text = ["# The kernel libraries the model calls (written by generate_project from the model's metadata)."]
    text.append("LIB_SRCS := " + " ".join(srcs))
    text.append("LIB_CPPFLAGS := " + " ".join(flags))
    (out / LIBRARIES_MAKEFILE).write_text("\n".join(text) + "\n")


def telling_line(lines: List[str]) -> str:
    """The build output line most likely to say what went wrong (a compiler error first)."""
    useful = [ln.strip() for ln in lines if "directory '" not in ln and ln.strip()]
    for wanted in (
        lambda ln: "error" in ln.lower() and not ln.startswith("make"),
        lambda ln: "No such file" in ln or "not found" in ln,
    ):
        found = [ln for ln in useful if wanted(ln)]
        if found:
            return found[0]
    return useful[-1] if useful else "no output"


#: A generated project's own settings: the template's choices and who generated it.
PROJECT_FILE = "project.json"


def config_of(project_dir: Path, name: str = PROJECT_FILE) -> Dict[str, Any]:
    """A generated project's own settings file (``name``), or {} for a template."""
    path = Path(project_dir) / name
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_config(out: Path, config: Mapping[str, Any], name: str = PROJECT_FILE) -> None:
    """The project's settings, with the microtvm-registry version that generated it (a project
    outlives upgrades: this says which release its files came from)."""
    from .._version import __version__

    data = dict(config, generator={"name": "microtvm-registry", "version": __version__})
    (Path(out) / name).write_text(json.dumps(data, indent=2) + "\n")
