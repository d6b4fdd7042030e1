"""Model formats: one module per format behind one small interface, chosen by the file's content.

A frontend turns a model file into an :class:`ImportedModel`: TVM's Relax module (inputs and
outputs already under the C-safe names of :mod:`microtvm_registry.formats.names`), the facts an
application needs about each input and output (the model's name, the C name, dtype, shape and,
for quantized tensors, scale and zero point), the operators it holds, and which arithmetic its
integer operators follow (onnxruntime's for ONNX QDQ models, TFLite Micro's for .tflite).

The format is read from the bytes, not the suffix: a TFLite flatbuffer carries ``TFL3`` at bytes
4..8; an ONNX file is a protobuf whose first field is ``ir_version``. A file that is neither is
one line naming both. The frontends import onnx / tflite / tvm inside their functions, so this
package costs nothing to import.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence

from ...errors import ModelError
from ...formats.plan import TensorFacts

if TYPE_CHECKING:  # pragma: no cover
    import tvm

#: format -> the module that reads it (each has ``sniff(head, suffix)`` and ``import_model(...)``).
FRONTENDS: Dict[str, str] = {"tflite": f"{__name__}.tflite", "onnx": f"{__name__}.onnx"}

#: Arithmetic an integer operator follows, recorded in the model's facts.
ARITHMETIC_FLOAT = "float32"
ARITHMETIC_ONNXRUNTIME = "onnxruntime"  # ONNX QDQ: dequantize -> float op -> quantize, rounded as onnxruntime does
ARITHMETIC_TFLITE = "tflite-micro"  # TFLite's integer kernels, bit for bit

TFLITE_IDENTIFIER = b"TFL3"


@dataclass
class ImportedModel:
    """What every frontend hands the compiler (see the module docstring)."""

    format: str
    mod: "tvm.IRModule"
    inputs: List[TensorFacts]
    outputs: List[TensorFacts]
    operators: Dict[str, int]
    arithmetic: str = ARITHMETIC_FLOAT
    integer_ops: List[str] = field(default_factory=list)  # operators computed in integers
    float_ops: List[str] = field(default_factory=list)  # quantized operators left in float32
    warnings: List[str] = field(default_factory=list)

    @property
    def input_names(self) -> List[str]:
        return [t.c_name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.c_name for t in self.outputs]



@dataclass(frozen=True)
class TensorLimit:
    """The largest tensor a model may hold for its target, checked before anything is
    materialized: a file of a few hundred bytes can ask for a constant of gigabytes (an Expand or
    ConstantOfShape), and folding it would cost that much memory and write that much C."""

    bytes: int
    where: str  # what the limit is, for the message ("the flash of mps2-an386 ...")

    def check(self, name: str, shape: Sequence[int], dtype: str, source: str) -> None:
        import numpy as np

        try:
            size = int(np.prod([int(d) for d in shape], dtype=object)) * np.dtype(dtype).itemsize
        except (TypeError, ValueError):
            return  # a dynamic or unknown dimension: its static shape is checked once it has one
        if size > self.bytes:
            raise ModelError(
                f"tensor {name[:60]!r} of {source} would be {size:,} bytes ({'x'.join(str(d) for d in shape)} {dtype}), "
                f"more than {self.where} ({self.bytes:,} bytes); the model cannot fit the target"
            )


def detect_format(path: Path) -> str:
    """"tflite" or "onnx", from the file's first bytes (the suffix only breaks a tie)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise ModelError(f"cannot read model file {path}: {err.strerror or err}") from None
    for name in FRONTENDS:
        if _frontend(name).sniff(head, path.suffix.lower()):
            return name
    raise ModelError(
        f"{path} is neither a TFLite model (no '{TFLITE_IDENTIFIER.decode()}' identifier at bytes 4..8) nor an ONNX model; "
        "export it as .tflite or .onnx"
    )


def _frontend(name: str) -> Any:
    return importlib.import_module(FRONTENDS[name])


#: Formats whose frontend can hand layers to a kernel library (its arithmetic is TFLite's).
LIBRARY_FORMATS = ("tflite",)


def check_library_format(path: Path, kernels: str) -> None:
    """A kernel library computes TFLite's integer arithmetic; an ONNX QDQ model follows
    onnxruntime's, so it is refused in one line (before anything is fetched) rather than given
    answers that differ from its reference."""
    fmt = detect_format(Path(path))
    if fmt not in LIBRARY_FORMATS:
        raise ModelError(
            f"--kernels {kernels} takes .tflite models; {Path(path).name} is {fmt.upper()}: compile it with --kernels tvm, "
            f"or convert it to an int8 .tflite (CMSIS-NN computes TFLite's arithmetic, within one step of onnxruntime's)"
        )


def import_model(
    path: Path,
    shapes: Optional[Mapping[str, Sequence[int]]] = None,
    reserved: Sequence[str] = (),
    limit: Optional[TensorLimit] = None,
    library: Optional[Any] = None,
) -> ImportedModel:
    """The model at ``path`` imported by the frontend of its format; ``shapes`` fixes inputs'
    dynamic dimensions (by the model's names); ``reserved`` are names the C names must avoid;
    ``limit`` bounds every tensor, before the frontend materializes any and again on the
    imported module (before TVM folds constants)."""
    fmt = detect_format(Path(path))
    frontend = _frontend(fmt)
    if library is None:
        imported = frontend.import_model(Path(path), dict(shapes or {}), tuple(reserved), limit)
    else:
        imported = frontend.import_model(Path(path), dict(shapes or {}), tuple(reserved), limit, library=library)
    if limit is not None:
        check_module_tensors(imported.mod, limit, Path(path).name)
    return imported


def check_module_tensors(mod: "tvm.IRModule", limit: TensorLimit, source: str) -> None:
    """Every tensor ``main`` binds, against ``limit`` (their shapes are static by now)."""
    main = mod["main"]
    for block in main.body.blocks:
        for binding in block.bindings:
            ty = getattr(binding.var, "ty", None)
            shape = getattr(ty, "shape", None)
            values = getattr(shape, "values", None)
            if values is None:
                continue
            try:
                dims = [int(v) for v in values]
            except (TypeError, ValueError):
                continue
            limit.check(str(binding.var.name), dims, str(getattr(ty, "dtype", "")), source)


def require_tvm() -> None:
    from importlib.util import find_spec

    if find_spec("tvm") is None:
        raise ModelError("apache-tvm is not installed; pip install 'microtvm-registry[tvm]'")


def parse_input_shapes(pairs: Sequence[str]) -> Dict[str, List[int]]:
    """``["x=1,1,49,10"]`` (also ``1x1x49x10``) -> ``{"x": [1, 1, 49, 10]}``."""
    shapes: Dict[str, List[int]] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        try:
            dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
        except ValueError:
            dims = []
        if not sep or not name or not dims or any(d <= 0 for d in dims):
            raise ModelError(f"--input {pair!r} is not of the form NAME=D0,D1,... with positive sizes")
        shapes[name] = dims
    return shapes


def fix_shapes(declared: Sequence[tuple], given: Mapping[str, Sequence[int]], source: str) -> Dict[str, List[int]]:
    """Every input's static shape from ``declared`` (name, dims with None/str for dynamic ones)
    and the shapes ``given`` by the user; a dynamic dimension left open is an error naming the
    input and the flag that fixes it."""
    names = [n for n, _ in declared]
    unknown = [n for n in given if n not in names]
    if unknown:
        raise ModelError(f"--input {unknown[0]}: {source} has no input of that name; its inputs: {', '.join(names)}")
    shapes: Dict[str, List[int]] = {}
    for name, dims in declared:
        if any(isinstance(d, int) and not isinstance(d, bool) and d == 0 for d in dims) and name not in given:
            raise ModelError(f"input {name} of {source} has a dimension of size 0 {list(dims)}; every size must be 1 or more: fix the model")
        if name in given:
            want = list(given[name])
            if len(want) != len(dims) or any(isinstance(d, int) and d != w for d, w in zip(dims, want)):
                raise ModelError(f"--input {name}={','.join(map(str, want))} does not fit the model's shape {list(dims)}")
            shapes[name] = want
        elif all(isinstance(d, int) and d > 0 for d in dims):
            shapes[name] = [int(d) for d in dims]
        else:
            shown = [d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?") for d in dims]
            example = ",".join(str(d) if isinstance(d, int) and d > 0 else "1" for d in dims)
            raise ModelError(
                f"input {name} of {source} has a dynamic shape {shown}; give it a static one: --input {name}={example}"
            )
    return shapes
