"""Small models built in code, fixed random weights: the demo's networks (an int8 .tflite and an
ONNX one) and the DS-CNN keyword-spotting net of MLPerf Tiny's shape, for the demo, the tests
and the benchmarks.
Nothing is downloaded: the weights are random but fixed by the seed, which is all a compiler
check needs (the outputs are compared with onnxruntime on the same model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Sequence, Tuple


def ds_cnn(
    input_shape: Tuple[int, int, int, int] = (1, 1, 49, 10),
    channels: int = 64,
    blocks: int = 4,
    classes: int = 12,
    first_kernel: Tuple[int, int] = (10, 4),
    seed: int = 0,
    name: str = "ds_cnn",
) -> Any:
    """A DS-CNN: Conv (stride 2) + Relu, ``blocks`` depthwise-separable blocks (depthwise 3x3 +
    Relu, pointwise 1x1 + Relu), GlobalAveragePool, a Gemm and a Softmax. MLPerf Tiny's keyword
    spotting net is the default: input 1x49x10 (MFCC frames x coefficients), 64 channels, 4 blocks."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits: List[Any] = []

    def weight(wname: str, shape: Sequence[int], fan_in: int) -> str:
        data = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(data, wname))
        return wname

    def bias(bname: str, n: int) -> str:
        inits.append(numpy_helper.from_array((rng.standard_normal(n) * 0.05).astype(np.float32), bname))
        return bname

    c_in = input_shape[1]
    kh, kw = first_kernel
    pad_h, pad_w = (kh - 1) // 2, (kw - 1) // 2
    nodes = [
        helper.make_node("Conv", ["input", weight("conv0_w", (channels, c_in, kh, kw), c_in * kh * kw), bias("conv0_b", channels)],
                         ["conv0"], strides=[2, 2], pads=[pad_h, pad_w, kh - 1 - pad_h, kw - 1 - pad_w]),
        helper.make_node("Relu", ["conv0"], ["act0"]),
    ]
    last = "act0"
    for b in range(blocks):
        nodes += [
            helper.make_node("Conv", [last, weight(f"dw{b}_w", (channels, 1, 3, 3), 9), bias(f"dw{b}_b", channels)],
                             [f"dw{b}"], group=channels, pads=[1, 1, 1, 1]),
            helper.make_node("Relu", [f"dw{b}"], [f"dw{b}_act"]),
            helper.make_node("Conv", [f"dw{b}_act", weight(f"pw{b}_w", (channels, channels, 1, 1), channels), bias(f"pw{b}_b", channels)],
                             [f"pw{b}"]),
            helper.make_node("Relu", [f"pw{b}"], [f"pw{b}_act"]),
        ]
        last = f"pw{b}_act"
    nodes += [
        helper.make_node("GlobalAveragePool", [last], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", weight("fc_w", (classes, channels), channels), bias("fc_b", classes)], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [input_shape[0], classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="microtvm-registry")
    model.ir_version = 8  # readable by every onnxruntime we support
    return model


def demo_kws(seed: int = 0) -> Any:
    """The demo's network: a DS-CNN shrunk to run in a blink on an emulated board (input 1x1x10x6,
    8 channels, one block, 4 classes): the same operators as the real one."""
    return ds_cnn(input_shape=(1, 1, 10, 6), channels=8, blocks=1, classes=4, first_kernel=(3, 3), seed=seed, name="kws")


def quantize_qdq(float_path: Path, out_path: Path, input_name: str, shape: Sequence[int], samples: int = 8) -> Path:
    """onnxruntime's static quantization of the model at ``float_path`` (QDQ format, int8 weights
    and activations), calibrated on ``samples`` random inputs of ``shape``: the int8 models the
    tests and benchmarks compile. Needs onnxruntime."""
    import numpy as np
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = [np.random.default_rng(i) for i in range(samples)]
            self.data = iter([{input_name: r.standard_normal(shape).astype(np.float32)} for r in rng])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(float_path), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return Path(out_path)


def demo_kws_tflite(seed: int = 0) -> bytes:
    """The demo's .tflite: an int8 (full-integer, per-channel weights) DS-CNN in TFLite's shape of
    things, NHWC, input 1x10x6x1: QUANTIZE from float, CONV_2D (stride 2, RELU6), DEPTHWISE_CONV_2D,
    a 1x1 CONV_2D, AVERAGE_POOL_2D over the map, RESHAPE, FULLY_CONNECTED, SOFTMAX, DEQUANTIZE."""
    import numpy as np

    from .tflite_writer import TfliteWriter

    rng = np.random.default_rng(seed)
    w = TfliteWriter("microtvm-registry demo")
    ch, classes = 8, 4

    def conv(x: int, in_scale: float, wshape: Sequence[int], out_shape: Sequence[int], out_scale: float, out_zero: int,
             depthwise: bool = False, **options: Any) -> int:
        oc = wshape[3] if depthwise else wshape[0]
        scales = rng.uniform(0.004, 0.012, oc).astype(np.float32)
        weights = w.tensor(f"w{len(w.tensors)}", wshape, "int8", rng.integers(-127, 128, wshape), scales, np.zeros(oc, np.int64),
                           quantized_dimension=3 if depthwise else 0)
        bias = w.tensor(f"b{len(w.tensors)}", [oc], "int32", rng.integers(-300, 300, oc), scales * np.float32(in_scale), np.zeros(oc, np.int64))
        y = w.tensor(f"a{len(w.tensors)}", out_shape, "int8", scale=out_scale, zero_point=out_zero)
        w.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, weights, bias], [y], **options)
        return y

    features = w.tensor("features", [1, 10, 6, 1], "float32")
    x = w.tensor("input", [1, 10, 6, 1], "int8", scale=0.02, zero_point=0)
    w.op("QUANTIZE", [features], [x])
    a = conv(x, 0.02, [ch, 3, 3, 1], [1, 5, 3, ch], 0.03, -128, padding="SAME", stride_w=2, stride_h=2,
             fused_activation_function="RELU6", dilation_w_factor=1, dilation_h_factor=1)
    a = conv(a, 0.03, [1, 3, 3, ch], [1, 5, 3, ch], 0.04, -128, depthwise=True, padding="SAME", stride_w=1, stride_h=1,
             depth_multiplier=1, fused_activation_function="RELU", dilation_w_factor=1, dilation_h_factor=1)
    a = conv(a, 0.04, [ch, 1, 1, ch], [1, 5, 3, ch], 0.05, -128, padding="VALID", stride_w=1, stride_h=1,
             fused_activation_function="RELU", dilation_w_factor=1, dilation_h_factor=1)
    pooled = w.tensor("pooled", [1, 1, 1, ch], "int8", scale=0.05, zero_point=-128)
    w.op("AVERAGE_POOL_2D", [a], [pooled], padding="VALID", stride_w=3, stride_h=5, filter_width=3, filter_height=5,
         fused_activation_function="NONE")
    flat = w.tensor("flat", [1, ch], "int8", scale=0.05, zero_point=-128)
    w.op("RESHAPE", [pooled, w.tensor("shape", [2], "int32", np.array([1, ch], np.int32))], [flat], new_shape=[1, ch])
    fc_w = w.tensor("fc_w", [classes, ch], "int8", rng.integers(-127, 128, (classes, ch)), [0.01], [0])
    fc_b = w.tensor("fc_b", [classes], "int32", rng.integers(-200, 200, classes), [0.05 * 0.01], [0])
    logits = w.tensor("logits", [1, classes], "int8", scale=0.08, zero_point=3)
    w.op("FULLY_CONNECTED", [flat, fc_w, fc_b], [logits], fused_activation_function="NONE")
    probs = w.tensor("probs", [1, classes], "int8", scale=1.0 / 256, zero_point=-128)
    w.op("SOFTMAX", [logits], [probs], beta=1.0)
    out = w.tensor("probabilities", [1, classes], "float32")
    w.op("DEQUANTIZE", [probs], [out])
    return w.to_bytes([features], [out])
