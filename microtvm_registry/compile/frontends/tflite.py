"""The TFLite frontend: a .tflite flatbuffer (the ``TFL3`` identifier at bytes 4..8) read with
the ``tflite`` package's schema (tflite_graph.py), each operator emitted as one TVM kernel that
computes what TFLite Micro's reference kernel computes (tflite_ops.py), int8 bit for bit.

Why a reader of our own instead of apache-tvm's ``relax.frontend.tflite``: that importer brings
int8 models in as dequantize -> float -> quantize, whose rounding is not TFLite's; equal answers
need TFLite's integer arithmetic per operator, so we build the integer kernels from the model's
own quantization parameters. Float models use the same kernels on float32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ...formats.names import c_name_map
from ...formats.plan import TensorFacts
from typing import TYPE_CHECKING

from . import ARITHMETIC_FLOAT, ARITHMETIC_TFLITE, TFLITE_IDENTIFIER, ImportedModel, TensorLimit, fix_shapes, require_tvm

if TYPE_CHECKING:  # pragma: no cover
    from .tflite_graph import Tensor

FORMAT = "tflite"


def sniff(head: bytes, suffix: str) -> bool:
    return head[4:8] == TFLITE_IDENTIFIER


def import_model(path: Path, given: Mapping[str, Sequence[int]], reserved: Sequence[str],
                 limit: Optional[TensorLimit] = None, library: Optional[Any] = None) -> ImportedModel:
    from .tflite_graph import check_graph, read_graph  # numpy and the schema: only when a model is read

    graph = read_graph(path)
    check_graph(graph, path.name)
    if limit is not None:
        for t in graph.tensors:
            limit.check(t.name, t.shape, t.dtype, path.name)
    declared = [(graph.tensors[i].name, list(graph.tensors[i].shape)) for i in graph.inputs]
    fix_shapes(declared, given, path.name)  # a TFLite model's shapes are static: --input may only repeat them
    require_tvm()
    from tvm import relax

    from .tflite_ops import lower_graph

    ins = [graph.tensors[i] for i in graph.inputs]
    outs = [graph.tensors[i] for i in graph.outputs]
    c_names = c_name_map([t.name for t in ins + outs], reserved)
    bb = relax.BlockBuilder()
    params = [relax.Var(c_names[t.name], relax.TensorType(shape=t.shape, dtype=t.dtype)) for t in ins]
    with bb.function("main", params):
        with bb.dataflow():
            lowering = lower_graph(graph, bb, path.name, dict(zip(graph.inputs, params)), library)
            results = [bb.emit_output(lowering.value(i)) for i in graph.outputs]
        bb.emit_func_output(results[0] if len(results) == 1 else relax.Tuple(results))
    mod = bb.get()

    def facts(t: "Tensor") -> TensorFacts:
        quantized = t.quantized and t.dtype == "int8"
        return TensorFacts(t.name, c_names[t.name], t.dtype, tuple(t.shape),
                           t.one_scale() if quantized else None, t.one_zero_point() if quantized else None)

    integer = sorted({op.name for op in graph.operators if graph.tensors[op.outputs[0]].dtype == "int8"})
    return ImportedModel(
        FORMAT, mod, [facts(t) for t in ins], [facts(t) for t in outs], graph.operator_counts(),
        arithmetic=ARITHMETIC_TFLITE if integer else ARITHMETIC_FLOAT, integer_ops=integer,
    )
