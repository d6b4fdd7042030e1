"""Writing .tflite files from Python, without TensorFlow: tensors and operators as plain values,
serialized with the flatbuffer builders of the ``tflite`` package (TFLite's own schema).

What it is for: models built in code for the demo and the tests (every operator we compile, each
edge case of TFLite's arithmetic), checked against TFLite Micro's interpreter. It writes what
TensorFlow's converter writes for the same graph: schema version 3, one subgraph, an empty buffer
0, weights in buffers of their own, per-channel quantization along ``quantized_dimension``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

#: Operator name -> its builtin options table (None, or a name not listed: it has none we set).
OPTIONS = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "ADD": "AddOptions",
    "MUL": "MulOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "PAD": "PadOptions",
    "CONCATENATION": "ConcatenationOptions",
    "MEAN": "ReducerOptions",
    "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "LOGISTIC": None,
    "RELU": None,
    "RELU6": None,
}

#: numpy dtype name -> TensorType name of the schema.
TENSOR_TYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32", "uint8": "UINT8", "int64": "INT64",
                "int16": "INT16", "int8": "INT8", "bool": "BOOL"}


@dataclass
class _Tensor:
    name: str
    shape: List[int]
    dtype: str
    buffer: int
    scale: Optional[List[float]] = None
    zero_point: Optional[List[int]] = None
    quantized_dimension: int = 0


@dataclass
class _Op:
    name: str
    inputs: List[int]
    outputs: List[int]
    options: Dict[str, Any] = field(default_factory=dict)


class _Schema:
    """The ``tflite`` package's generated modules by name (its package namespace holds the
    classes of the same names, which lack the builder functions)."""

    def __getattr__(self, name: str) -> Any:
        import importlib

        return importlib.import_module(f"tflite.{name}")


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


class TfliteWriter:
    """A model under construction: ``tensor(...)`` returns an index for ``op(...)``; ``to_bytes``
    serializes it with the graph's inputs and outputs."""

    def __init__(self, description: str = "microtvm-registry") -> None:
        self.description = description
        self.tensors: List[_Tensor] = []
        self.ops: List[_Op] = []
        self.buffers: List[bytes] = [b""]  # buffer 0 is the empty one, as the converter writes

    def tensor(
        self,
        name: str,
        shape: Sequence[int],
        dtype: str = "int8",
        data: Optional[np.ndarray] = None,
        scale: Any = None,
        zero_point: Any = None,
        quantized_dimension: int = 0,
    ) -> int:
        """A tensor; with ``data`` a constant (its bytes little-endian, as the schema stores them)."""
        buffer = 0
        if data is not None:
            array = np.ascontiguousarray(np.asarray(data, dtype=dtype).reshape(shape))
            self.buffers.append(array.astype(array.dtype.newbyteorder("<")).tobytes())
            buffer = len(self.buffers) - 1
        scales = None if scale is None else [float(s) for s in np.atleast_1d(scale)]
        zeros = None
        if scale is not None:
            zp = np.atleast_1d(0 if zero_point is None else zero_point)
            zeros = [int(z) for z in (zp if zp.size == len(scales or []) else np.repeat(zp, len(scales or [])))]
        self.tensors.append(_Tensor(name, [int(d) for d in shape], str(np.dtype(dtype)), buffer, scales, zeros, quantized_dimension))
        return len(self.tensors) - 1

    def op(self, name: str, inputs: Sequence[int], outputs: Sequence[int], **options: Any) -> None:
        """An operator by its builtin name (``CONV_2D``); ``options`` are its options table's fields
        in the schema's snake_case (``stride_w=2``, ``padding="SAME"``, ``fused_activation_function="RELU6"``);
        an unused optional input is -1. Operators we do not compile are written without options
        (models that must be refused)."""
        if options and OPTIONS.get(name) is None:
            raise ValueError(f"the writer knows no options of operator {name}")
        self.ops.append(_Op(name, list(inputs), list(outputs), dict(options)))

    # ------------------------------------------------------------------ serialization

    def to_bytes(self, inputs: Sequence[int], outputs: Sequence[int], extra_subgraphs: int = 0) -> bytes:
        """The model's bytes; ``extra_subgraphs`` adds empty subgraphs (what control flow brings)."""
        import flatbuffers

        tflite = _Schema()
        b = flatbuffers.Builder(1024)

        def int_vector(start: Any, values: Sequence[int], width: int = 4) -> int:
            start(b, len(values))
            for v in reversed(list(values)):
                (b.PrependInt32 if width == 4 else b.PrependInt64)(int(v))
            return b.EndVector()

        buffers = []
        for data in self.buffers:
            vec = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            tflite.Buffer.BufferStart(b)
            if vec is not None:
                tflite.Buffer.BufferAddData(b, vec)
            buffers.append(tflite.Buffer.BufferEnd(b))

        tensors = []
        for t in self.tensors:
            name = b.CreateString(t.name)
            shape = int_vector(tflite.Tensor.TensorStartShapeVector, t.shape)
            quant = None
            if t.scale is not None:
                scales = b.CreateNumpyVector(np.asarray(t.scale, np.float32))
                zeros = b.CreateNumpyVector(np.asarray(t.zero_point, np.int64))
                tflite.QuantizationParameters.QuantizationParametersStart(b)
                tflite.QuantizationParameters.QuantizationParametersAddScale(b, scales)
                tflite.QuantizationParameters.QuantizationParametersAddZeroPoint(b, zeros)
                tflite.QuantizationParameters.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
                quant = tflite.QuantizationParameters.QuantizationParametersEnd(b)
            tflite.Tensor.TensorStart(b)
            tflite.Tensor.TensorAddShape(b, shape)
            tflite.Tensor.TensorAddType(b, getattr(tflite.TensorType.TensorType, TENSOR_TYPES[t.dtype]))
            tflite.Tensor.TensorAddBuffer(b, t.buffer)
            tflite.Tensor.TensorAddName(b, name)
            if quant is not None:
                tflite.Tensor.TensorAddQuantization(b, quant)
            tensors.append(tflite.Tensor.TensorEnd(b))

        codes = sorted({op.name for op in self.ops}, key=lambda n: [o.name for o in self.ops].index(n))
        code_offsets = []
        for name in codes:
            value = getattr(tflite.BuiltinOperator.BuiltinOperator, name)
            tflite.OperatorCode.OperatorCodeStart(b)
            tflite.OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, min(value, 127))
            tflite.OperatorCode.OperatorCodeAddBuiltinCode(b, value)
            tflite.OperatorCode.OperatorCodeAddVersion(b, 1)
            code_offsets.append(tflite.OperatorCode.OperatorCodeEnd(b))

        ops = []
        for op in self.ops:
            options = self._options(b, op)
            ins = int_vector(tflite.Operator.OperatorStartInputsVector, op.inputs)
            outs = int_vector(tflite.Operator.OperatorStartOutputsVector, op.outputs)
            tflite.Operator.OperatorStart(b)
            tflite.Operator.OperatorAddOpcodeIndex(b, codes.index(op.name))
            tflite.Operator.OperatorAddInputs(b, ins)
            tflite.Operator.OperatorAddOutputs(b, outs)
            table = OPTIONS.get(op.name)
            if options is not None and table is not None:
                tflite.Operator.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions.BuiltinOptions, table))
                tflite.Operator.OperatorAddBuiltinOptions(b, options)
            ops.append(tflite.Operator.OperatorEnd(b))

        def offsets_vector(start: Any, offsets: List[int]) -> int:
            start(b, len(offsets))
            for o in reversed(offsets):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        tensors_vec = offsets_vector(tflite.SubGraph.SubGraphStartTensorsVector, tensors)
        ops_vec = offsets_vector(tflite.SubGraph.SubGraphStartOperatorsVector, ops)
        in_vec = int_vector(tflite.SubGraph.SubGraphStartInputsVector, inputs)
        out_vec = int_vector(tflite.SubGraph.SubGraphStartOutputsVector, outputs)
        sg_name = b.CreateString("main")
        tflite.SubGraph.SubGraphStart(b)
        tflite.SubGraph.SubGraphAddTensors(b, tensors_vec)
        tflite.SubGraph.SubGraphAddInputs(b, in_vec)
        tflite.SubGraph.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraph.SubGraphAddOperators(b, ops_vec)
        tflite.SubGraph.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraph.SubGraphEnd(b)
        extra = []
        for _ in range(extra_subgraphs):
            tflite.SubGraph.SubGraphStart(b)
            extra.append(tflite.SubGraph.SubGraphEnd(b))

        subgraphs = offsets_vector(tflite.Model.ModelStartSubgraphsVector, [subgraph] + extra)
        codes_vec = offsets_vector(tflite.Model.ModelStartOperatorCodesVector, code_offsets)
        buffers_vec = offsets_vector(tflite.Model.ModelStartBuffersVector, buffers)
        description = b.CreateString(self.description)
        tflite.Model.ModelStart(b)
        tflite.Model.ModelAddVersion(b, 3)
        tflite.Model.ModelAddOperatorCodes(b, codes_vec)
        tflite.Model.ModelAddSubgraphs(b, subgraphs)
        tflite.Model.ModelAddDescription(b, description)
        tflite.Model.ModelAddBuffers(b, buffers_vec)
        b.Finish(tflite.Model.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _options(self, b: Any, op: _Op) -> Optional[int]:
        tflite = _Schema()
        table = OPTIONS.get(op.name)
        if table is None:
            return None
        module = getattr(tflite, table)
        vectors = {}
        for key, value in op.options.items():  # vectors are built before the table starts
            if isinstance(value, (list, tuple)):
                getattr(module, f"{table}Start{_camel(key)}Vector")(b, len(value))
                for v in reversed(value):
                    b.PrependInt32(int(v))
                vectors[key] = b.EndVector()
        getattr(module, f"{table}Start")(b)
        for key, value in op.options.items():
            adder = getattr(module, f"{table}Add{_camel(key)}")
            if key in vectors:
                adder(b, vectors[key])
            elif key == "padding":
                adder(b, getattr(tflite.Padding.Padding, str(value)))
            elif key == "fused_activation_function":
                adder(b, getattr(tflite.ActivationFunctionType.ActivationFunctionType, str(value)))
            else:
                adder(b, value)
        return int(getattr(module, f"{table}End")(b))

