"""The ONNX frontend: the file, its input shapes, its operators, then TVM's importer, and for a
QDQ model (onnxruntime's ``quantize_static``) the integer rewrite with onnxruntime's arithmetic
(:mod:`.onnx_qdq`). Everything a user can get wrong is found here, before TVM runs, and said in
one line (a corrupt file, a dynamic shape with no ``--input``, operators the importer lacks).

onnx and tvm are imported inside the functions: ``microtvm`` without the extras still starts.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import ModelError, first_line
from ...formats.names import c_name_map
from . import ARITHMETIC_FLOAT, ARITHMETIC_ONNXRUNTIME, ImportedModel, TensorFacts, TensorLimit, fix_shapes, require_tvm

FORMAT = "onnx"

ONNX_MISSING = "onnx is not installed; pip install 'microtvm-registry[onnx]' (or pip install onnx)"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ModelError(ONNX_MISSING) from None
    return onnx


def load_onnx(path: Path) -> Any:
    """The checked ModelProto at ``path`` (a corrupt or truncated file is one ModelError)."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError, others; all mean "not ONNX"
        raise ModelError(f"{path} is not a readable ONNX model ({type(err).__name__}: {first_line(err)}); re-export it") from None
    external = _external_tensors(model)
    if external:
        folder = path.resolve().parent
        for tensor in external:
            _check_external_location(path, folder, tensor)
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(folder))
        except Exception as err:  # noqa: BLE001 - a missing or short data file
            raise ModelError(f"{path}: its external data could not be read ({type(err).__name__}: {first_line(err)}); "
                             "keep the data files next to the model") from None
    if not model.graph.node:
        raise ModelError(f"{path} holds no graph (not an ONNX model, or an empty one); re-export it")
    try:
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 - onnx.checker.ValidationError and friends
        raise ModelError(f"{path} fails ONNX's checker: {first_line(err)}") from None
    return model


def _external_tensors(model: Any) -> List[Any]:
    """Every tensor whose bytes live in another file: initializers and attribute tensors, in
    subgraphs too (If/Loop bodies)."""
    onnx = _onnx()
    found: List[Any] = []

    def visit(graph: Any) -> None:
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    tensors.append(attribute.t)
                tensors.extend(attribute.tensors)
                if attribute.HasField("g"):
                    visit(attribute.g)
                for sub in attribute.graphs:
                    visit(sub)
        found.extend(t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL)

    visit(model.graph)
    return found


def _check_external_location(path: Path, folder: Path, tensor: Any) -> None:
    """External data must be a plain file inside the model's folder, reached through no symlink:
    a downloaded model must not read the user's other files into its weights (and so into the
    firmware). onnx 1.21+ refuses these too; checking here first keeps that true whatever onnx is
    installed, and says it in our words."""
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    where = f"tensor {tensor.name!r} of {path} keeps its data at {location!r}"
    fix = "keep the model's data files as plain files in its own folder and re-export it"
    relative = Path(location)
    if not location or relative.is_absolute() or ".." in relative.parts:
        raise ModelError(f"{where}, which is outside the model's folder; {fix}")
    step = folder
    for part in relative.parts:
        step = step / part
        if step.is_symlink():
            raise ModelError(f"{where}, reached through the symlink {step}; {fix}")
    if not step.is_file():
        raise ModelError(f"{where}, which is not a file in {folder}; {fix}")


def graph_inputs(model: Any) -> List[Tuple[str, List[Any], str]]:
    """(name, dims, dtype) of every real input (initializers listed as inputs are weights)."""
    onnx = _onnx()
    initializers = {i.name for i in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        ttype = value.type.tensor_type
        dims: List[Any] = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or "?")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "float32"
        found.append((value.name, dims, dtype))
    return found


def operator_counts(model: Any) -> Dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


def unsupported_operators(model: Any) -> List[str]:
    """Operators of the model that apache-tvm's ONNX importer has no converter for."""
    from tvm.relax.frontend.onnx import onnx_frontend

    known = set(onnx_frontend._get_convert_map())
    return sorted({n.op_type for n in model.graph.node if n.op_type not in known})


def renamed(model: Any, names: Mapping[str, str]) -> Any:
    """A copy of ``model`` whose tensors are renamed by ``names`` (model name -> C name), so
    TVM's importer, which puts input names into the C it generates, sees only C identifiers."""
    if all(k == v for k, v in names.items()):
        return model
    copy = type(model)()
    copy.CopyFrom(model)
    graph = copy.graph

    def fix(values: Any) -> None:
        for i, value in enumerate(values):
            if value in names:
                values[i] = names[value]

    for node in graph.node:
        fix(node.input)
        fix(node.output)
    for holder in list(graph.input) + list(graph.output) + list(graph.value_info) + list(graph.initializer):
        if holder.name in names:
            holder.name = names[holder.name]
    return copy


def import_onnx(model: Any, shapes: Mapping[str, Sequence[int]], path: Path) -> Any:
    """TVM's Relax module for ``model`` (raises ModelError naming what the importer lacks)."""
    missing = unsupported_operators(model)
    if missing:
        import tvm

        raise ModelError(
            f"{path.name} uses operators apache-tvm {tvm.__version__}'s ONNX importer does not support: "
            f"{', '.join(missing)}; replace them in the model or export it at another opset"
        )
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(model, shape_dict={k: list(v) for k, v in shapes.items()})
    except Exception as err:  # noqa: BLE001 - the importer raises many kinds; all mean "cannot import"
        message = f"apache-tvm could not import {path.name}: {type(err).__name__}: {first_line(err)}"
        _free_quietly(err)
    raise ModelError(message)


def _free_quietly(err: BaseException) -> None:
    """Frees what a failed import left half-built, with the native stderr muted meanwhile: TVM's
    C++ logs a warning as it destroys an unfinished BlockBuilder, which would otherwise follow
    our one-line error out."""
    import gc
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            err.__traceback__ = None
            err.__context__ = None
            gc.collect()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def quantized_operators(model: Any) -> List[str]:
    """The operators of a QDQ model (onnxruntime's ``quantize_static``) that take dequantized
    inputs: the ones an int8 kernel would run. Empty for a float model."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = {n.op_type for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized & set(n.input)}
    return sorted(ops)


def check_inferred_sizes(model: Any, shapes: Mapping[str, Sequence[int]], limit: TensorLimit, source: str) -> None:
    """Every tensor's size as ONNX's shape inference sees it (no data made), against ``limit``:
    the importer would otherwise build a folded constant before anything could say no."""
    onnx = _onnx()
    copy = type(model)()
    copy.CopyFrom(model)
    for value in copy.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for d, size in zip(dims, shapes[value.name]):
                d.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(copy, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a pre-check; the importer reports real errors
        return
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.elem_type or not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if any(d is None for d in dims):
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        limit.check(value.name, dims, dtype, source)


def sniff(head: bytes, suffix: str) -> bool:
    """An ONNX file is a protobuf ModelProto: by its suffix, or by its usual first field
    (``ir_version``, field 1 as a varint: tag byte 0x08)."""
    return suffix == ".onnx" or head[:1] == b"\x08"


def import_model(path: Path, given: Mapping[str, Sequence[int]], reserved: Sequence[str],
                 limit: Optional[TensorLimit] = None) -> ImportedModel:
    """The ONNX model at ``path`` as Relax, inputs and outputs under C names (see the package)."""
    model = load_onnx(path)
    declared = graph_inputs(model)
    shapes = fix_shapes([(n, dims) for n, dims, _ in declared], given, path.name)
    if limit is not None:
        check_inferred_sizes(model, shapes, limit, path.name)
    require_tvm()
    dtypes = {n: dtype for n, _, dtype in declared}
    input_names, output_names = list(shapes), [o.name for o in model.graph.output]
    c_names = c_name_map(input_names + output_names, reserved)
    mod = import_onnx(renamed(model, c_names), {c_names[k]: v for k, v in shapes.items()}, path)
    inputs = [TensorFacts(n, c_names[n], dtypes[n], tuple(shapes[n])) for n in input_names]
    outputs = [TensorFacts(n, c_names[n], "", ()) for n in output_names]  # dtype and shape: the plan's
    imported = ImportedModel(FORMAT, mod, inputs, outputs, operator_counts(model))
    if quantized_operators(model):
        # A QDQ model: dequantize -> op -> quantize becomes integer arithmetic where a pattern
        # matches (int8 weights and activations, int32 accumulation); the rest stays float32.
        from .onnx_qdq import rewrite_qdq

        imported.mod, integer_ops, imported.float_ops = rewrite_qdq(imported.mod)
        imported.integer_ops = sorted(set(integer_ops))
        imported.arithmetic = ARITHMETIC_ONNXRUNTIME
    else:
        imported.arithmetic = ARITHMETIC_FLOAT
    return imported
