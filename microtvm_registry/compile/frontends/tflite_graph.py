"""A .tflite file as plain data: its tensors (shape, type, constant data, quantization) and its
operators in order (builtin name, inputs, outputs, options), read with the ``tflite`` package's
generated schema, then checked for what we compile.

Every way a model can fall outside what we compile is found here, before TVM runs, and said in
one line that names what is wrong and what to do: operators we lack (all of them at once), more
than one subgraph, a hybrid model (int8 weights, float activations), int16 or uint8
activations, float16 weights, weights with a non-zero zero point.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ...errors import ModelError, first_line

#: Operators we compile, int8 and float32 (anything else is named in one line).
SUPPORTED = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "ADD", "MUL",
    "RESHAPE", "SOFTMAX", "PAD", "CONCATENATION", "MEAN", "QUANTIZE", "DEQUANTIZE", "LOGISTIC", "RELU", "RELU6",
)
#: Operators whose second (and third) inputs are weights: where a hybrid model shows itself.
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
#: The schema's TensorType values we read, by number.
TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
         8: "complex64", 9: "int8", 10: "float64", 17: "int4"}
#: Options fields read per options table, in the schema's snake_case.
OPTION_FIELDS = {
    "Conv2DOptions": ("padding", "stride_w", "stride_h", "fused_activation_function", "dilation_w_factor", "dilation_h_factor"),
    "DepthwiseConv2DOptions": ("padding", "stride_w", "stride_h", "depth_multiplier", "fused_activation_function",
                               "dilation_w_factor", "dilation_h_factor"),
    "FullyConnectedOptions": ("fused_activation_function", "weights_format", "keep_num_dims"),
    "Pool2DOptions": ("padding", "stride_w", "stride_h", "filter_width", "filter_height", "fused_activation_function"),
    "AddOptions": ("fused_activation_function",),
    "MulOptions": ("fused_activation_function",),
    "SoftmaxOptions": ("beta",),
    "ConcatenationOptions": ("axis", "fused_activation_function"),
    "ReducerOptions": ("keep_dims",),
}
PADDING = {0: "SAME", 1: "VALID"}
ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
SCHEMA_MISSING = "the tflite package is not installed; pip install 'microtvm-registry[tvm]' (or pip install tflite)"


@dataclass
class Tensor:
    index: int
    name: str
    shape: List[int]
    dtype: str
    data: Optional[np.ndarray] = None  # a constant's values
    scale: Optional[np.ndarray] = None  # float32, one per channel or one in all
    zero_point: Optional[np.ndarray] = None  # int64
    axis: int = 0  # the quantized dimension of per-channel parameters

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale.size > 0

    @property
    def constant(self) -> bool:
        return self.data is not None

    def values(self) -> np.ndarray:
        """A constant's values (one line when the tensor is computed, not constant)."""
        if self.data is None:
            raise ModelError(f"tensor {self.name!r} is computed at run time where a constant is needed; re-export the model")
        return self.data

    def scales(self) -> np.ndarray:
        """The quantization scales (one line when the tensor is not quantized)."""
        if self.scale is None or self.scale.size == 0:
            raise ModelError(f"tensor {self.name!r} has no quantization parameters where int8 needs them; re-export the model")
        return self.scale

    def one_scale(self) -> float:
        """The per-tensor scale (as the double TFLite computes with: the float32 widened)."""
        return float(self.scales()[0])

    def one_zero_point(self) -> int:
        return int(self.zero_point[0]) if self.zero_point is not None and self.zero_point.size else 0


@dataclass
class Operator:
    index: int
    name: str
    inputs: List[int]
    outputs: List[int]
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    tensors: List[Tensor]
    operators: List[Operator]
    inputs: List[int]
    outputs: List[int]

    def operator_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


def _schema(name: str) -> Any:
    try:
        return importlib.import_module(f"tflite.{name}")
    except ImportError:
        raise ModelError(SCHEMA_MISSING) from None


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def read_graph(path: Path) -> Graph:
    """The model at ``path`` as a :class:`Graph` (a damaged file is one line)."""
    data = Path(path).read_bytes()
    model_mod = _schema("Model")
    try:
        model = model_mod.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() != 1:
            raise ModelError(
                f"{path.name} has {model.SubgraphsLength()} subgraphs; only single-subgraph models (no control flow "
                "operators such as WHILE or IF) compile: export the model without them"
            )
        return _read_subgraph(model, model.Subgraphs(0))
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged flatbuffer raises anything from struct to IndexError
        raise ModelError(f"{path} is not a readable TFLite model ({type(err).__name__}: {first_line(err)}); re-export it") from None


def _read_subgraph(model: Any, sg: Any) -> Graph:
    names = {v: k for k, v in vars(_schema("BuiltinOperator").BuiltinOperator).items() if not k.startswith("_")}
    tensors = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        dtype = TYPES.get(t.Type(), f"type {t.Type()}")
        shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
        data = None
        buffer = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        if buffer is not None and buffer.DataLength() > 0 and dtype in ("float32", "float16", "int32", "int8", "int64", "int16", "uint8"):
            raw = buffer.DataAsNumpy().tobytes()
            data = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        quant = t.Quantization()
        scale = zero = None
        axis = 0
        if quant is not None and quant.ScaleLength() > 0:
            scale = quant.ScaleAsNumpy().astype(np.float32)
            zero = quant.ZeroPointAsNumpy().astype(np.int64) if quant.ZeroPointLength() else np.zeros(scale.size, np.int64)
            axis = int(quant.QuantizedDimension())
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor{i}"
        tensors.append(Tensor(i, name, shape, dtype, data, scale, zero, axis))
    operators = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        number = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = names.get(number, f"BUILTIN_{number}")
        if name == "CUSTOM":
            name = f"CUSTOM ({code.CustomCode().decode('utf-8', 'replace') if code.CustomCode() else '?'})"
        inputs = [int(v) for v in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(v) for v in op.OutputsAsNumpy()] if op.OutputsLength() else []
        operators.append(Operator(i, name, inputs, outputs, _options(op)))
    graph_inputs = [int(v) for v in sg.InputsAsNumpy()] if sg.InputsLength() else []
    graph_outputs = [int(v) for v in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    return Graph(tensors, operators, graph_inputs, graph_outputs)


def _options(op: Any) -> Dict[str, Any]:
    """The builtin options we read, by field name (padding and activations as their names)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    kinds = {v: k for k, v in vars(_schema("BuiltinOptions").BuiltinOptions).items() if not k.startswith("_")}
    kind = kinds.get(op.BuiltinOptionsType())
    if kind not in OPTION_FIELDS:
        return {}
    options_class = getattr(_schema(kind), kind)
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    out: Dict[str, Any] = {}
    for name in OPTION_FIELDS[kind]:
        value = getattr(options, _camel(name))()
        if name == "padding":
            value = PADDING.get(value, f"padding {value}")
        elif name == "fused_activation_function":
            value = ACTIVATIONS.get(value, f"activation {value}")
        out[name] = value
    return out


# ------------------------------------------------------------------------------ checks


def check_graph(graph: Graph, source: str) -> None:
    """One line for the first thing about ``graph`` we cannot compile (see the module docstring)."""
    unsupported = sorted({op.name for op in graph.operators if op.name not in SUPPORTED})
    if unsupported:
        raise ModelError(
            f"{source} uses operators microtvm-registry does not compile: {', '.join(unsupported)}; "
            f"the supported ones are {', '.join(SUPPORTED)}"
        )
    for op in graph.operators:
        if op.name in WEIGHTED and len(op.inputs) > 1:
            x, w = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            if x.dtype == "float32" and w.dtype in ("int8", "uint8"):
                raise ModelError(
                    f"{source} is a hybrid model (int8 weights such as {w.name!r} with float32 activations: dynamic-range "
                    "quantization), which TFLite Micro refuses too; convert it with full-integer quantization (a "
                    "representative dataset), or export it in float32"
                )
    for op in graph.operators:
        for role, indices in (("input", op.inputs), ("output", op.outputs)):
            for index in indices:
                if index < 0:
                    continue
                t = graph.tensors[index]
                if t.dtype in ("int16", "uint8") and not t.constant:
                    raise ModelError(
                        f"tensor {t.name!r} of {source} holds {t.dtype} activations; only int8 (full-integer) and float32 "
                        "models compile: convert it with int8 activations"
                    )
                if t.dtype == "float16":
                    raise ModelError(
                        f"tensor {t.name!r} of {source} is float16; export the model with float32 weights (no float16 "
                        "quantization), or quantize it to int8"
                    )
                if t.dtype not in ("int8", "float32", "int32", "int64"):
                    raise ModelError(f"tensor {t.name!r} of {source} is {t.dtype}, which no operator we compile takes")
        if op.name in WEIGHTED and len(op.inputs) > 1:
            w = graph.tensors[op.inputs[1]]
            if w.dtype == "int8" and w.zero_point is not None and np.any(w.zero_point != 0):
                raise ModelError(
                    f"weights {w.name!r} of {source} have a non-zero zero point (asymmetric); TFLite Micro's int8 kernels "
                    "need symmetric weights: quantize them per channel, symmetric"
                )
            if not w.constant:
                raise ModelError(f"weights {w.name!r} of {source} are computed at run time; only constant weights compile")
