"""Writing Model Library Format (MLF) from today's apache-tvm (the data model and the reader are
``microtvm_registry.formats.mlf``).

TVM removed microTVM and with it ``tvm.micro.export_model_library_format``; what is left is
``tvm.tirx.build(mod, target="c")``, whose C source needs a few TVM/DLPack headers and three
runtime symbols. This module writes that source into an uncompressed MLF tar in the version 7
layout templates consume, with what a host project needs to *call* each function.

The headers are copied from the user's installed apache-tvm and apache-tvm-ffi at export time,
so the repository never carries TVM sources. ``tvm`` is imported only inside the exporter.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import re
import tarfile
import tempfile
from importlib.util import find_spec
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..files import current_umask
from ..formats.mlf import (
    MLF_VERSION,
    SYMBOL_PREFIX,
    ArgInfo,
    FunctionInfo,
    ModelLibrary,
    ModelLibraryError,
    PathLike,
    UnsafeArchiveError,
    defined_functions,
    function_table_source,
    load_model_library_format,
    safe_extract,
    signatures_from_source,
    workspace_needs,
)

__all__ = [  # the writers, and the reader's names importable from here (and host.mlf) as before the split
    "ArgInfo", "FunctionInfo", "MLF_VERSION", "ModelLibrary", "ModelLibraryError", "SYMBOL_PREFIX", "UnsafeArchiveError",
    "collect_headers", "defined_functions", "export_model_library_format", "function_table_source",
    "load_model_library_format", "safe_extract", "signatures_from_source", "tvm_include_roots", "workspace_needs",
    "write_model_library_format",
]

# Headers the host runtime itself includes, whatever the generated C includes.
RUNTIME_HEADERS = ("dlpack/dlpack.h", "tvm/ffi/c_api.h", "tvm/runtime/c_backend_api.h")

# ------------------------------------------------------------------------------------ headers


def tvm_include_roots() -> List[Path]:
    """Include folders of the installed apache-tvm and apache-tvm-ffi, found without importing them."""
    roots: List[Path] = []
    for package, subdirs in (
        ("tvm", ("include",)),
        ("tvm_ffi", ("include", "3rdparty/dlpack/include")),
    ):
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for location in spec.submodule_search_locations:
            for sub in subdirs:
                candidate = Path(location) / sub
                if candidate.is_dir() and candidate not in roots:
                    roots.append(candidate)
    return roots


_INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.MULTILINE)


def collect_headers(texts: Iterable[str], roots: Sequence[Path], extra: Iterable[str] = RUNTIME_HEADERS) -> Dict[str, Path]:
    """The include closure of ``texts`` resolvable under ``roots``: relative name -> file.

    System headers (``stdint.h``) are not under the roots and are simply left to the compiler.
    """
    found: Dict[str, Path] = {}
    pending = list(extra)
    for text in texts:
        pending.extend(_INCLUDE_RE.findall(text))
    while pending:
        name = pending.pop()
        if name in found:
            continue
        for root in roots:
            candidate = root / name
            if candidate.is_file():
                found[name] = candidate
                pending.extend(_INCLUDE_RE.findall(candidate.read_text(encoding="utf-8", errors="replace")))
                break
    missing = [h for h in extra if h not in found]
    if missing:
        raise ModelLibraryError(
            f"header {missing[0]} not found in the installed apache-tvm/apache-tvm-ffi "
            f"(searched {', '.join(str(r) for r in roots) or 'nothing'}); pip install 'microtvm-registry[tvm]'"
        )
    return found


# --------------------------------------------------------------------------------- writing


def _tar_info(name: str, mode: int, mtime: int) -> tarfile.TarInfo:
    """A member owned by root:root, so the archive does not depend on who exported it."""
    info = tarfile.TarInfo("./" + name if name else ".")
    info.mode = mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = _tar_info(name, 0o644, mtime)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar_add_dir(tar: tarfile.TarFile, name: str, mtime: int) -> None:
    info = _tar_info(name, 0o755, mtime)
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def write_model_library_format(
    path: PathLike,
    *,
    c_sources: Mapping[str, str],
    functions: Sequence[FunctionInfo],
    model_name: str = "default",
    target: str = "c",
    headers: Optional[Mapping[str, Path]] = None,
    ir_text: Optional[str] = None,
    extra_metadata: Optional[Mapping[str, Any]] = None,
    extra_members: Optional[Mapping[str, bytes]] = None,
) -> Path:
    """Writes an uncompressed MLF tar at ``path`` (atomically) and returns its path.

    ``c_sources`` maps file names (``default_lib0.c``) to C text; ``headers`` maps include names
    to files (default: the include closure of the sources in the installed TVM packages);
    ``extra_members`` adds other files by their path in the archive (a model's plan, runtime).
    """
    path = Path(path)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", model_name):
        raise ModelLibraryError(f"model name {model_name!r} is not a C identifier; use letters, digits and _")
    if headers is None:
        headers = collect_headers(c_sources.values(), tvm_include_roots())
    now = datetime.datetime.now(datetime.timezone.utc)
    mtime = int(now.timestamp())
    module_meta: Dict[str, Any] = {
        "model_name": model_name,
        "export_datetime": now.strftime("%Y-%m-%d %H:%M:%SZ"),
        "memory": {
            "functions": {
                "operator_functions": [
                    {
                        "function_name": fn.name,
                        "workspace": [{"device": 1, "workspace_size_bytes": fn.workspace_size_bytes or 0}],
                    }
                    for fn in functions
                ]
            }
        },
        "target": [target],
        "executors": [],
        "style": "operator",
        "functions": [fn.to_json() for fn in functions],
        "generator": _generator_info(),
    }
    if extra_metadata:
        module_meta.update(extra_metadata)
    metadata = {"version": MLF_VERSION, "modules": {model_name: module_meta}}

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:", format=tarfile.GNU_FORMAT) as tar:
            _tar_add_dir(tar, "", mtime)
            _tar_add_bytes(tar, "metadata.json", json.dumps(metadata, indent=2, sort_keys=True).encode(), mtime)
            dirs_done = set()

            def ensure_dirs(rel: str) -> None:
                parts = PurePosixPath(rel).parts[:-1]
                for i in range(1, len(parts) + 1):
                    sub = "/".join(parts[:i])
                    if sub not in dirs_done:
                        dirs_done.add(sub)
                        _tar_add_dir(tar, sub, mtime)

            for fname, text in sorted(c_sources.items()):
                rel = f"codegen/host/src/{fname}"
                ensure_dirs(rel)
                _tar_add_bytes(tar, rel, text.encode("utf-8"), mtime)
            for name, source in sorted(headers.items()):
                rel = f"codegen/host/include/{name}"
                ensure_dirs(rel)
                _tar_add_bytes(tar, rel, Path(source).read_bytes(), mtime)
            if ir_text is not None:
                ensure_dirs("src/tir-1.txt")
                _tar_add_bytes(tar, "src/tir-1.txt", ir_text.encode("utf-8"), mtime)
            for rel, data in sorted((extra_members or {}).items()):
                ensure_dirs(rel)
                _tar_add_bytes(tar, rel, data, mtime)
        os.chmod(tmp_name, 0o666 & ~current_umask())  # mkstemp made it 0600: give it what any new file gets
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def _generator_info() -> Dict[str, Any]:
    from .._version import __version__

    info: Dict[str, Any] = {"name": "microtvm-registry", "version": __version__}
    try:
        from importlib.metadata import version

        for dist in ("apache-tvm", "apache-tvm-ffi"):
            try:
                info[dist] = version(dist)
            except Exception:  # noqa: BLE001 - versions are informational only
                pass
    except ImportError:  # pragma: no cover
        pass
    return info


def _written_buffers(script: str) -> set:
    names = set(re.findall(r"T\.writes\(([^\n]*)\)", script))
    written = set()
    for group in names:
        written.update(re.findall(r"(\w+)\[", group))
    written.update(re.findall(r"^\s*(\w+)\[[^\n]*?\]\s*(?:=|\+=|-=|\*=)(?!=)", script, re.MULTILINE))
    return written


def _prim_func_args(name: str, func: Any, outputs: Optional[Sequence[str]]) -> Tuple[ArgInfo, ...]:
    params = list(func.params)
    written = _written_buffers(func.script()) if outputs is None else set(outputs)
    args: List[ArgInfo] = []
    for param in params:
        shape = getattr(param, "shape", None)
        if shape is None:
            raise ModelLibraryError(
                f"function {name!r} argument {param} is not a tensor; the host template passes tensors only"
            )
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ModelLibraryError(
                f"function {name!r} argument {param.name} has a symbolic shape {list(shape)}; "
                "the host template needs static shapes (specialize the function first)"
            ) from None
        args.append(ArgInfo(str(param.name), dims, str(param.dtype), "output" if str(param.name) in written else "input"))
    if outputs is not None:
        unknown = set(outputs) - {a.name for a in args}
        if unknown:
            raise ModelLibraryError(f"function {name!r} has no argument named {sorted(unknown)[0]!r} (given in outputs)")
    elif args and not any(a.role == "output" for a in args):
        args[-1] = ArgInfo(args[-1].name, args[-1].shape, args[-1].dtype, "output")
    return tuple(args)


def export_model_library_format(
    module: Any,
    path: PathLike,
    *,
    model_name: str = "default",
    outputs: Optional[Mapping[str, Sequence[str]]] = None,
    disable_asserts: bool = False,
) -> Path:
    """Compiles ``module`` for target "c" and writes it as an MLF tar at ``path``.

    ``disable_asserts`` builds without TVM's runtime argument checks, as a compiled model's
    kernels are (the tuner measures kernels the way the model will run them).

    ``module`` is a ``tvm.IRModule`` of PrimFuncs (each is exported under its name in the
    module), a single PrimFunc, or a module already built with target "c" (then arguments are
    read back from the C source). ``outputs`` maps a function name to its output argument
    names; by default outputs are the buffers the function writes (or its last argument).
    """
    try:
        import tvm
    except ImportError:
        raise ModelLibraryError("apache-tvm is not installed; pip install 'microtvm-registry[tvm]'") from None

    outputs = dict(outputs or {})
    if isinstance(module, tvm.runtime.Module):
        source = module.inspect_source()
        sigs = signatures_from_source(source)
        names = [n for n in defined_functions(source) if n in sigs]
        functions = []
        for name in names:
            args = list(sigs[name])
            outs = set(outputs.get(name, [args[-1].name] if args else []))
            args = [ArgInfo(a.name, a.shape, a.dtype, "output" if a.name in outs else "input") for a in args]
            functions.append(FunctionInfo(name, tuple(args)))
        ir_text = None
    else:
        if isinstance(module, tvm.tirx.PrimFunc):
            attrs = module.attrs or {}
            symbol = str(attrs["global_symbol"]) if "global_symbol" in attrs else "func"
            module = tvm.IRModule({symbol: module})
        if not isinstance(module, tvm.IRModule):
            raise ModelLibraryError(
                f"cannot export a {type(module).__name__}; pass a tvm.IRModule of PrimFuncs, a PrimFunc, "
                "or a module built with target 'c'"
            )
        renamed = {}
        functions = []
        for gvar, func in module.functions.items():
            if not isinstance(func, tvm.tirx.PrimFunc):
                raise ModelLibraryError(
                    f"function {gvar.name_hint!r} is a {type(func).__name__}; the host template runs TIR PrimFuncs only"
                )
            name = gvar.name_hint
            if name == "main":
                raise ModelLibraryError("a function named 'main' clashes with TVM's C entry point; rename it")
            renamed[name] = func.with_attr("global_symbol", name)
            functions.append(FunctionInfo(name, _prim_func_args(name, func, outputs.get(name))))
        module = tvm.IRModule(renamed)
        ir_text = module.script()
        config = {"tirx.disable_assert": True} if disable_asserts else {}
        with tvm.transform.PassContext(config=config):
            built = tvm.tirx.build(module, target="c")
        source = built.inspect_source()
    defined = set(defined_functions(source))
    for fn in functions:
        if fn.name not in defined:
            raise ModelLibraryError(f"the generated C does not define {fn.symbol}; is the module built with target 'c'?")
    needs = workspace_needs(source)
    functions = [FunctionInfo(f.name, f.args, needs.get(f.name)) for f in functions]
    if not functions:
        raise ModelLibraryError("the module has no functions to export")
    return write_model_library_format(
        path,
        c_sources={f"{model_name}_lib0.c": source},
        functions=functions,
        model_name=model_name,
        target=str(tvm.target.Target("c")),
        ir_text=ir_text,
    )
