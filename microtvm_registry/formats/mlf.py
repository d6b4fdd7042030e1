"""Model Library Format (MLF): what a compiled model or kernel library says about itself, read
back by templates, sessions and tools, and unpacked safely.

An MLF is an uncompressed tar in the version 7 layout templates consume (``codegen/host/src/*.c``,
``codegen/host/include``, ``metadata.json``); ours adds what a host or board needs to *call* each
function (argument names, shapes, dtypes, which are outputs, the workspace the C asks for). This
module is the data model and the reader, standard library only; writing one from apache-tvm is
``microtvm_registry.compile.mlf``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ProjectError, UnsafeSourceError, first_line
from ..limits import DEFAULT_MAX_EXTRACTED_BYTES, DEFAULT_MAX_JSON_BYTES, MAX_EXTRACTED_ENV, MAX_JSON_ENV, MAX_MEMBERS, byte_limit

MLF_VERSION = 7
SYMBOL_PREFIX = "__tvm_ffi_"
WORKSPACE_ALIGN = 64
#: What a member's path parts may hold: Makefiles and shells see these names, so nothing they
#: would read as syntax (quotes, backticks, $, spaces, ;) and no leading '-' (an option).
SAFE_MEMBER_PART = re.compile(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]*")

PathLike = Union[str, "os.PathLike[str]"]

class ModelLibraryError(ProjectError):
    """A Model Library Format archive is missing, malformed, or cannot be made from a module."""


class UnsafeArchiveError(UnsafeSourceError):
    """An MLF member would land outside the extraction folder, or is a link or a device."""


@dataclass(frozen=True)
class ArgInfo:
    """One tensor argument of a generated function."""

    name: str
    shape: Tuple[int, ...]
    dtype: str
    role: str = "input"  # "input" or "output" (an output may also be read: TVM's in/out)

    @property
    def nbytes(self) -> int:
        from .dtypes import parse_dtype

        _code, bits, lanes = parse_dtype(self.dtype)
        count = 1
        for dim in self.shape:
            count *= int(dim)
        return count * ((bits * lanes + 7) // 8)

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "role": self.role}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ArgInfo":
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]), str(data.get("role", "input")))


@dataclass(frozen=True)
class FunctionInfo:
    """A function the device program can call: its C symbol and its tensor arguments."""

    name: str
    args: Tuple[ArgInfo, ...]
    workspace_size_bytes: Optional[int] = None  # an upper bound from the C source; None if unknown
    symbol: str = ""

    def __post_init__(self) -> None:
        if not self.symbol:
            object.__setattr__(self, "symbol", SYMBOL_PREFIX + self.name)

    @property
    def inputs(self) -> Tuple[ArgInfo, ...]:
        return tuple(a for a in self.args if a.role != "output")

    @property
    def outputs(self) -> Tuple[ArgInfo, ...]:
        return tuple(a for a in self.args if a.role == "output")

    def to_json(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "symbol": self.symbol,
            "args": [a.to_json() for a in self.args],
            "workspace_size_bytes": self.workspace_size_bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "FunctionInfo":
        ws = data.get("workspace_size_bytes")
        return cls(
            name=str(data["name"]),
            args=tuple(ArgInfo.from_json(a) for a in data.get("args", [])),
            workspace_size_bytes=None if ws is None else int(ws),
            symbol=str(data.get("symbol") or SYMBOL_PREFIX + str(data["name"])),
        )


@dataclass
class ModelLibrary:
    """What a loaded MLF says: its model name, functions and the raw metadata."""

    path: Path
    model_name: str
    functions: List[FunctionInfo]
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> Optional[Dict[str, Any]]:
        """For a compiled whole model (``microtvm compile``): its summary, with ``function`` (the
        model's own function name) and ``call_kernels`` (the kernel of each call); None for kernels only."""
        modules = self.metadata.get("modules")
        module = modules.get(self.model_name, {}) if isinstance(modules, dict) else {}
        info = module.get("model") if isinstance(module, dict) else None
        return dict(info, function=self.model_name) if isinstance(info, dict) else None

    def function(self, name: str) -> FunctionInfo:
        for fn in self.functions:
            if fn.name == name:
                return fn
        known = ", ".join(f.name for f in self.functions) or "none"
        raise ModelLibraryError(f"model {self.model_name!r} has no function {name!r}; it has: {known}")


# ------------------------------------------------------------------------- function table


_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def function_table_source(functions: Sequence[FunctionInfo]) -> str:
    """C source of the table the device runtime dispatches calls through (every template's)."""
    lines = [
        "/* Generated by microtvm-registry from the model's function list. */",
        '#include "mtvm_runtime.h"',
        "",
    ]
    for fn in functions:
        if not _C_IDENT.fullmatch(fn.symbol) or not _C_IDENT.fullmatch(fn.name):
            raise ModelLibraryError(f"function {fn.name!r} (symbol {fn.symbol!r}) is not a C identifier; re-export the model")
        lines.append(f"extern int32_t {fn.symbol}(void* self_handle, void* args, int32_t num_args, void* result);")
    lines += ["", "const mtvm_function_entry mtvm_functions[] = {"]
    for fn in functions:
        lines.append(f'  {{"{fn.name}", {fn.symbol}, {len(fn.args)}}},')
    lines += [
        "  {0, 0, 0},",
        "};",
        f"const uint32_t mtvm_num_functions = {len(functions)}u;",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------- C source analysis

_DEF_RE = re.compile(
    r"int32_t\s+" + SYMBOL_PREFIX + r"(\w+)\s*\(\s*void\*\s*\w+\s*,\s*void\*\s*\w+\s*,\s*int32_t\s+\w+\s*,\s*void\*\s*\w+\s*\)\s*\{"
)
_ALLOC_RE = re.compile(r"TVMBackendAllocWorkspace\(([^;]*?)\)\)*;")
_ALLOC_CONST_RE = re.compile(r"^\s*\d+\s*,\s*[^,]+,\s*\(uint64_t\)\s*(\d+)ULL\s*,")
_SIGNATURE_RE = re.compile(r'"(\w+)\(((?:\w+: Tensor\(\[[0-9, ]*\], \w+\)(?:, )?)*)\)"')
_SIG_ARG_RE = re.compile(r"(\w+): Tensor\(\[([0-9, ]*)\], (\w+)\)")


def defined_functions(c_source: str) -> List[str]:
    """Names of the packed functions a C source defines (``__tvm_ffi_<name>`` with a body)."""
    names: List[str] = []
    for match in _DEF_RE.finditer(c_source):
        if match.group(1) not in names:
            names.append(match.group(1))
    return names


def _function_bodies(c_source: str) -> Dict[str, str]:
    matches = list(_DEF_RE.finditer(c_source))
    bodies: Dict[str, str] = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(c_source)
        bodies.setdefault(match.group(1), c_source[match.end() : end])
    return bodies


def workspace_needs(c_source: str) -> Dict[str, Optional[int]]:
    """Per function, the bytes its TVMBackendAllocWorkspace calls may hold at once (upper bound).

    Sums constant-size requests, each rounded to the runtime's alignment; None when a request's
    size is computed at run time. Only a hint for users: the device enforces the real limit.
    """
    needs: Dict[str, Optional[int]] = {}
    for name, body in _function_bodies(c_source).items():
        total = 0
        known = True
        for call in _ALLOC_RE.finditer(body):
            const = _ALLOC_CONST_RE.match(call.group(1))
            if const is None:
                known = False
                break
            size = int(const.group(1))
            total += (size + WORKSPACE_ALIGN - 1) // WORKSPACE_ALIGN * WORKSPACE_ALIGN
        needs[name] = total if known else None
    return needs


def signatures_from_source(c_source: str) -> Dict[str, List[ArgInfo]]:
    """Argument lists recovered from the signature text TVM puts in its argument checks.

    Used when only a built module (not its IRModule) is available; roles are unknown there.
    """
    sigs: Dict[str, List[ArgInfo]] = {}
    for match in _SIGNATURE_RE.finditer(c_source):
        name = match.group(1)
        if name in sigs:
            continue
        args = []
        for arg in _SIG_ARG_RE.finditer(match.group(2)):
            shape = tuple(int(d) for d in arg.group(2).replace(" ", "").split(",") if d)
            args.append(ArgInfo(arg.group(1), shape, arg.group(3)))
        sigs[name] = args
    return sigs


# --------------------------------------------------------------------------------- reading


def parse_json(data: bytes, what: str, error: type = ModelLibraryError) -> Any:
    """JSON we were handed (an MLF's metadata.json or plan.json): one line for anything that is
    not UTF-8 JSON of sane depth, never a traceback."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8 text; re-export the model") from None
    except RecursionError:
        raise error(f"{what} is nested too deeply to be a real one; re-export the model") from None
    except ValueError as err:
        raise error(f"{what} is not valid JSON ({first_line(err)}); re-export the model") from None


def read_limited(path: Path, what: str, limit: int, error: type = ModelLibraryError) -> bytes:
    """A small file's bytes, refusing one larger than ``limit`` (a sparse 1 GiB file is refused
    by its size, before any byte is read)."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"{what} is {size:,} bytes, more than {limit:,}; refused (set {MAX_JSON_ENV} to allow more)")
        with open(path, "rb") as fh:
            return fh.read(limit + 1)
    except IsADirectoryError:
        raise error(f"{what} is a folder, not a file; re-export the model") from None
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror or err}") from None


def _json_limit() -> int:
    return byte_limit(MAX_JSON_ENV, DEFAULT_MAX_JSON_BYTES, ModelLibraryError)


def _parse_metadata(metadata: Any, sources: Mapping[str, str], where: str) -> Tuple[str, List[FunctionInfo]]:
    if not isinstance(metadata, dict):
        raise ModelLibraryError(f"{where}: metadata.json holds a {type(metadata).__name__}, not an object; re-export the model")
    if "modules" in metadata:
        modules = metadata["modules"]
        if not isinstance(modules, dict) or not modules:
            raise ModelLibraryError(f"{where}: metadata.json has no modules")
        model_name, module = next(iter(modules.items()))
        if not isinstance(module, dict):
            raise ModelLibraryError(f"{where}: metadata.json's module {str(model_name)[:40]!r} is not an object; re-export the model")
    else:  # version 5 and operator exports kept a flat layout
        model_name, module = str(metadata.get("model_name", "default")), metadata
    if "functions" in module:
        listed = module["functions"]
        if not isinstance(listed, list):
            raise ModelLibraryError(f"{where}: metadata.json's functions is not a list; re-export the model")
        functions = []
        for n, entry in enumerate(listed):
            try:
                functions.append(FunctionInfo.from_json(entry))
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
                raise ModelLibraryError(
                    f"{where}: metadata.json's function {n} is malformed ({type(err).__name__}: {first_line(err)}); re-export the model"
                ) from None
        return str(model_name), functions
    # Not ours: recover the argument lists from the C sources.
    functions = []
    for text in sources.values():
        sigs = signatures_from_source(text)
        needs = workspace_needs(text)
        for name in defined_functions(text):
            if name not in sigs:
                continue
            args = list(sigs[name])
            if args:
                last = args[-1]
                args[-1] = ArgInfo(last.name, last.shape, last.dtype, "output")
            functions.append(FunctionInfo(name, tuple(args), needs.get(name)))
    return str(model_name), functions


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    data = tar.extractfile(member)
    if data is None:  # pragma: no cover - only regular files are read
        raise ModelLibraryError(f"member {member.name!r} cannot be read")
    return data.read()


def load_model_library_format(path: PathLike) -> ModelLibrary:
    """Reads an MLF tar (or its extracted folder) back into a :class:`ModelLibrary`."""
    path = Path(path)
    sources: Dict[str, str] = {}
    limit = _json_limit()
    if path.is_dir():
        meta_file = path / "metadata.json"
        if not meta_file.exists():
            raise ModelLibraryError(f"{path} has no metadata.json; is it an extracted Model Library Format?")
        metadata = parse_json(read_limited(meta_file, f"{meta_file}", limit), f"{meta_file}")
        for src in sorted((path / "codegen" / "host" / "src").glob("*.c")):
            sources[src.name] = src.read_text(encoding="utf-8", errors="replace")
    elif path.is_file():
        try:
            with tarfile.open(path, "r:") as tar:
                metadata = None
                for member, rel in checked_members(path, tar):
                    if not member.isfile():
                        continue
                    if str(rel) == "metadata.json":
                        if member.size > limit:
                            raise ModelLibraryError(
                                f"{path}: metadata.json is {member.size:,} bytes, more than {limit:,}; refused "
                                f"(set {MAX_JSON_ENV} to allow more)"
                            )
                        metadata = parse_json(_read_member(tar, member), f"{path}: metadata.json")
                    elif rel.parent == PurePosixPath("codegen/host/src") and rel.suffix == ".c":
                        sources[rel.name] = _read_member(tar, member).decode("utf-8", "replace")
        except tarfile.TarError as err:
            raise ModelLibraryError(f"{path} is not an uncompressed tar ({err}); MLF must be a plain tar") from None
        if metadata is None:
            raise ModelLibraryError(f"{path} has no metadata.json; is it a Model Library Format tar?")
    else:
        raise ModelLibraryError(f"model library {path} does not exist")
    model_name, functions = _parse_metadata(metadata, sources, str(path))
    return ModelLibrary(path=path, model_name=model_name, functions=functions, metadata=dict(metadata))


class ExtractionBudget:
    """What reading or extracting an archive may still take: bytes and members in all (the same
    limits as template archives), so a bomb stops at the first member past them."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.limit = byte_limit(MAX_EXTRACTED_ENV, DEFAULT_MAX_EXTRACTED_BYTES, ModelLibraryError)
        self.left = self.limit
        self.members = 0

    def take(self, size: int) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise ModelLibraryError(f"{self.what} has more than {MAX_MEMBERS:,} members; refused (no model is that large)")
        self.left -= max(0, size)
        if self.left < 0:
            raise ModelLibraryError(
                f"{self.what} expands to more than {self.limit:,} bytes; refused (set {MAX_EXTRACTED_ENV} to allow more)"
            )


def safe_extract(tar_path: PathLike, dest: PathLike) -> None:
    """Extracts an uncompressed tar into ``dest``, refusing anything that could escape it.

    Every member is checked before anything is written: absolute names, ``..`` parts, links,
    devices and FIFOs, names outside a conservative character set, and sizes past the limits
    (limits.py) are refused. Only regular files and folders are created, with plain permissions.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    try:
        tar = tarfile.open(tar_path, "r:")
    except tarfile.TarError as err:
        raise ModelLibraryError(f"{tar_path} is not an uncompressed tar ({err}); MLF must be a plain tar") from None
    with tar:
        try:
            plan = list(checked_members(tar_path, tar))
        except tarfile.TarError as err:
            raise ModelLibraryError(f"{tar_path} is a damaged tar ({err}); re-export the model") from None
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        for member, rel in plan:
            target = (dest / rel) if str(rel) not in ("", ".") else dest
            resolved = target.resolve()
            if resolved != root and root not in resolved.parents:
                raise UnsafeArchiveError(f"{tar_path}: member {member.name!r} resolves outside {dest}; refusing to extract it")
            try:
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - only regular files get here
                    raise ModelLibraryError(f"{tar_path}: member {member.name!r} cannot be read")
                with open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)
            except OSError as err:
                raise UnsafeArchiveError(
                    f"{tar_path}: member {member.name!r} cannot be written ({err.strerror or err}); refusing to extract the rest"
                ) from None


def checked_members(tar_path: Path, tar: tarfile.TarFile) -> List[Tuple[tarfile.TarInfo, PurePosixPath]]:
    """Every member with its path inside the extraction folder, each checked (see
    :func:`_checked_member`) and within the budget; a path given twice (two files, a file and a
    folder) or lying under a file is refused, since a reader and an extractor could each take a
    different one."""
    budget = ExtractionBudget(str(tar_path))
    json_limit = _json_limit()
    plan: List[Tuple[tarfile.TarInfo, PurePosixPath]] = []
    kinds: Dict[PurePosixPath, bool] = {}  # path -> is a file
    for member in tar:
        budget.take(member.size if member.isfile() else 0)
        rel = _checked_member(tar_path, member)
        if member.isfile() and rel.suffix == ".json" and member.size > json_limit:
            # read whole when parsed: refused before it is written to disk, let alone read
            raise ModelLibraryError(
                f"{tar_path}: {rel} is {member.size:,} bytes, more than {json_limit:,}; refused (set {MAX_JSON_ENV} to allow more)"
            )
        if rel in kinds and (member.isfile() or kinds[rel]):
            raise UnsafeArchiveError(f"{tar_path}: member {member.name!r} is given twice; refusing to extract it, re-export the model")
        kinds[rel] = member.isfile()
        plan.append((member, rel))
    for member, rel in plan:
        under_file = [str(p) for p in rel.parents if kinds.get(p)]
        if under_file:
            raise UnsafeArchiveError(f"{tar_path}: member {member.name!r} lies under the file {under_file[0]!r}; refusing to extract it")
    return plan


def _checked_member(tar_path: Path, member: tarfile.TarInfo) -> PurePosixPath:
    """The member's path inside the extraction folder, or UnsafeArchiveError saying why not."""
    name = member.name
    pure = PurePosixPath(name)
    if name.startswith(("/", "\\")) or pure.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise UnsafeArchiveError(f"{tar_path}: member {name!r} has an absolute path; refusing to extract it")
    if ".." in pure.parts or "\\" in name:
        raise UnsafeArchiveError(f"{tar_path}: member {name!r} escapes the extraction folder; refusing to extract it")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(f"{tar_path}: member {name!r} is a link; refusing to extract it")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{tar_path}: member {name!r} is a device or special file; refusing to extract it")
    if member.isfile() and name.endswith("/"):
        raise UnsafeArchiveError(f"{tar_path}: member {name!r} is a file named like a folder; refusing to extract it")
    odd = [p for p in pure.parts if p not in (".", "") and not SAFE_MEMBER_PART.fullmatch(p)]
    if odd:
        raise UnsafeArchiveError(
            f"{tar_path}: member {name!r} has a name outside letters, digits and . _ + - "
            "(build tools would read it as shell syntax); refusing to extract it, re-export the model"
        )
    return PurePosixPath(*[p for p in pure.parts if p not in (".", "")]) if pure.parts else PurePosixPath()
