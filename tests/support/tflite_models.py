"""Small .tflite models built in code (compile/tflite_writer.py: TFLite's own schema, no
TensorFlow) covering every operator we compile, int8 and float32, with the edge cases of TFLite's
arithmetic; and TFLite Micro's answer for them (the ``tflite-micro`` interpreter from PyPI, run
in a subprocess: it aborts the whole process on some models instead of failing)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from microtvm_registry.compile.tflite_writer import TfliteWriter

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models" / "mlperf-tiny"


def _weights(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    return rng.integers(-127, 128, shape).astype(np.int8)


class Net:
    """A model under construction with helpers that pick sensible quantization for each layer."""

    def __init__(self, int8: bool, seed: int = 0) -> None:
        self.w = TfliteWriter("microtvm-registry tests")
        self.int8 = int8
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def act(self, shape: Sequence[int], scale: float = 0.05, zero_point: int = 0, name: str = "") -> int:
        self.count += 1
        name = name or f"t{self.count}"
        if self.int8:
            return self.w.tensor(name, shape, "int8", scale=scale, zero_point=zero_point)
        return self.w.tensor(name, shape, "float32")

    def conv(self, x: int, in_shape: Sequence[int], out_c: int, k: Tuple[int, int], *, stride: int = 1, padding: str = "SAME",
             dilation: int = 1, activation: str = "NONE", depthwise: bool = False, out_scale: float = 0.05,
             out_zero: int = 0, in_scale: float = 0.05, weight_scales: Sequence[float] = (), name: str = "") -> Tuple[int, List[int]]:
        n, h, w, c = in_shape
        eff = [(k[0] - 1) * dilation + 1, (k[1] - 1) * dilation + 1]
        if padding == "SAME":
            oh, ow = -(-h // stride), -(-w // stride)
        else:
            oh, ow = (h - eff[0]) // stride + 1, (w - eff[1]) // stride + 1
        oc = c * (out_c // c) if depthwise else out_c
        wshape = [1, k[0], k[1], oc] if depthwise else [oc, k[0], k[1], c]
        self.count += 1
        if self.int8:
            scales = np.asarray(weight_scales or self.rng.uniform(0.002, 0.02, oc), np.float32)
            weights = self.w.tensor(f"w{self.count}", wshape, "int8", _weights(self.rng, wshape), scales, np.zeros(oc, np.int64),
                                    quantized_dimension=3 if depthwise else 0)
            bias = self.w.tensor(f"b{self.count}", [oc], "int32", self.rng.integers(-2000, 2000, oc),
                                 (scales * np.float32(in_scale)).astype(np.float32), np.zeros(oc, np.int64))
        else:
            weights = self.w.tensor(f"w{self.count}", wshape, "float32", self.rng.standard_normal(wshape).astype(np.float32) * 0.3)
            bias = self.w.tensor(f"b{self.count}", [oc], "float32", self.rng.standard_normal(oc).astype(np.float32) * 0.1)
        out_shape = [n, oh, ow, oc]
        y = self.act(out_shape, out_scale, out_zero, name)
        options = dict(padding=padding, stride_w=stride, stride_h=stride, fused_activation_function=activation,
                       dilation_w_factor=dilation, dilation_h_factor=dilation)
        if depthwise:
            options["depth_multiplier"] = oc // c
        self.w.op("DEPTHWISE_CONV_2D" if depthwise else "CONV_2D", [x, weights, bias], [y], **options)
        return y, out_shape

    def dense(self, x: int, in_features: int, out_features: int, *, per_channel: bool = False, activation: str = "NONE",
              in_scale: float = 0.05, out_scale: float = 0.1) -> int:
        self.count += 1
        shape = [out_features, in_features]
        if self.int8:
            scales = np.asarray(self.rng.uniform(0.002, 0.02, out_features) if per_channel else [0.01], np.float32)
            weights = self.w.tensor(f"w{self.count}", shape, "int8", _weights(self.rng, shape), scales, np.zeros(scales.size, np.int64))
            bias = self.w.tensor(f"b{self.count}", [out_features], "int32", self.rng.integers(-1000, 1000, out_features),
                                 (scales * np.float32(in_scale)).astype(np.float32), np.zeros(scales.size, np.int64))
        else:
            weights = self.w.tensor(f"w{self.count}", shape, "float32", self.rng.standard_normal(shape).astype(np.float32) * 0.2)
            bias = self.w.tensor(f"b{self.count}", [out_features], "float32", self.rng.standard_normal(out_features).astype(np.float32))
        y = self.act([1, out_features], out_scale, 0)
        self.w.op("FULLY_CONNECTED", [x, weights, bias], [y], fused_activation_function=activation)
        return y

    def save(self, path: Path, inputs: List[int], outputs: List[int]) -> Path:
        path.write_bytes(self.w.to_bytes(inputs, outputs))
        return path


def conv_net(path: Path, int8: bool) -> Path:
    """QUANTIZE (int8: a float input) -> CONV_2D (SAME, stride 2, RELU6, per-channel) ->
    DEPTHWISE_CONV_2D (VALID, dilation 2, multiplier 2) -> PAD -> MAX_POOL_2D (SAME, odd) ->
    AVERAGE_POOL_2D (SAME, stride 2, odd: the edge windows are partial) -> RESHAPE ->
    FULLY_CONNECTED -> SOFTMAX -> DEQUANTIZE (int8: a float output)."""
    net = Net(int8, seed=1)
    w = net.w
    x_in = w.tensor("input", [1, 9, 7, 3], "float32")
    if int8:
        x = net.act([1, 9, 7, 3], 0.03, -128, "quantized")
        w.op("QUANTIZE", [x_in], [x])
    else:
        x = x_in
    y, shape = net.conv(x, [1, 9, 7, 3], 6, (3, 3), stride=2, activation="RELU6", in_scale=0.03, out_scale=0.04, out_zero=-128)
    y, shape = net.conv(y, shape, 12, (2, 2), padding="VALID", dilation=2, depthwise=True, in_scale=0.04, out_scale=0.05, out_zero=5)
    pads = w.tensor("pads", [4, 2], "int32", np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))
    padded_shape = [1, shape[1] + 3, shape[2] + 1, shape[3]]
    p = net.act(padded_shape, 0.05, 5)
    w.op("PAD", [y, pads], [p])
    mp = net.act(padded_shape, 0.05, 5)
    w.op("MAX_POOL_2D", [p], [mp], padding="SAME", stride_w=1, stride_h=1, filter_width=3, filter_height=2, fused_activation_function="NONE")
    ap_shape = [1, -(-padded_shape[1] // 2), -(-padded_shape[2] // 2), padded_shape[3]]
    ap = net.act(ap_shape, 0.05, 5)
    w.op("AVERAGE_POOL_2D", [mp], [ap], padding="SAME", stride_w=2, stride_h=2, filter_width=3, filter_height=3,
         fused_activation_function="RELU")
    features = int(np.prod(ap_shape))
    flat = net.act([1, features], 0.05, 5)
    new_shape = w.tensor("shape", [2], "int32", np.array([1, features], np.int32))
    w.op("RESHAPE", [ap, new_shape], [flat], new_shape=[1, features])
    logits = net.dense(flat, features, 10, in_scale=0.05, out_scale=0.15)
    probs = net.act([1, 10], 1.0 / 256, -128)
    w.op("SOFTMAX", [logits], [probs], beta=1.0)
    if int8:
        out = w.tensor("probabilities", [1, 10], "float32")
        w.op("DEQUANTIZE", [probs], [out])
    else:
        out = probs
    return net.save(path, [x_in], [out])


def elementwise_net(path: Path, int8: bool) -> Path:
    """ADD (broadcast over H and W, RELU), MUL (broadcast), RELU, RELU6, CONCATENATION, MEAN
    (over H and W, keep_dims), LOGISTIC, FULLY_CONNECTED (per-channel), with two inputs and two
    outputs."""
    net = Net(int8, seed=2)
    w = net.w
    a = net.act([1, 4, 5, 6], 0.05, 10, "a")
    b = net.act([1, 1, 1, 6], 0.08, -20, "b")
    s = net.act([1, 4, 5, 6], 0.07, -3)
    w.op("ADD", [a, b], [s], fused_activation_function="RELU")
    m = net.act([1, 4, 5, 6], 0.11, 2)
    w.op("MUL", [s, b], [m], fused_activation_function="NONE")
    r = net.act([1, 4, 5, 6], 0.06, -10)
    w.op("RELU", [m], [r])
    r6 = net.act([1, 4, 5, 6], 0.05, 10)  # RELU6 keeps its input's quantization
    w.op("RELU6", [a], [r6])
    cat = net.act([1, 4, 5, 12], 0.05, 10)
    if int8:  # TFLite Micro concatenates int8 without rescaling: the inputs share the output's quantization
        same = w.tensor("requantized", [1, 4, 5, 6], "int8", scale=0.05, zero_point=10)
        w.op("QUANTIZE", [r], [same])  # int8 -> int8: a requantization
        w.op("CONCATENATION", [same, r6], [cat], axis=3, fused_activation_function="NONE")
    else:
        w.op("CONCATENATION", [r, r6], [cat], axis=3, fused_activation_function="NONE")
    axes = w.tensor("axes", [2], "int32", np.array([1, 2], np.int32))
    mean = net.act([1, 1, 1, 12], 0.03, -7)
    w.op("MEAN", [cat, axes], [mean], keep_dims=True)
    flat = net.act([1, 12], 0.03, -7)
    shape = w.tensor("shape", [2], "int32", np.array([1, 12], np.int32))
    w.op("RESHAPE", [mean, shape], [flat], new_shape=[1, 12])
    dense = net.dense(flat, 12, 8, per_channel=True, in_scale=0.03, out_scale=0.2)
    sig = net.act([1, 8], 1.0 / 256, -128, "sigmoid")
    w.op("LOGISTIC", [dense], [sig])
    return net.save(path, [a, b], [sig, r])


def edge_conv(path: Path, *, in_zero: int, out_scale: float, stride: int, padding: str, size: Tuple[int, int]) -> Path:
    """One int8 CONV_2D at an edge of TFLite's arithmetic: an input zero point of -128 or 127,
    channels whose multiplier is > 1 (shift > 0; with a small ``out_scale``) or below 2**-32
    (shift < -31: TFLite flushes it to zero), SAME or VALID padding on odd sizes, stride 2."""
    net = Net(True, seed=3)
    x = net.act([1, size[0], size[1], 2], 0.05, in_zero, "x")
    y, _ = net.conv(x, [1, size[0], size[1], 2], 3, (3, 3), stride=stride, padding=padding, in_scale=0.05,
                    out_scale=out_scale, out_zero=0, weight_scales=[0.02, 1e-14, 0.0005], name="y")
    return net.save(path, [x], [y])


def library_net(path: Path) -> Path:
    """int8 layers in the shapes a kernel library has fast paths for, and the ones it does not
    take: a 1x1 CONV_2D, a 3x3 DEPTHWISE_CONV_2D (multiplier 1, SAME), a CONV_2D with dilation
    2, an ADD of two same-shape tensors (RELU) and one that broadcasts, a grouped CONV_2D, a
    FULLY_CONNECTED without bias and one per-channel, MAX_POOL_2D (VALID) and SOFTMAX."""
    net = Net(True, seed=4)
    w = net.w
    x = net.act([1, 6, 5, 8], 0.04, -3, "x")
    a, shape = net.conv(x, [1, 6, 5, 8], 16, (1, 1), in_scale=0.04, out_scale=0.06, out_zero=7)
    b, _ = net.conv(a, shape, 16, (3, 3), depthwise=True, in_scale=0.06, out_scale=0.05, out_zero=-9, activation="RELU")
    c, _ = net.conv(b, shape, 16, (3, 3), dilation=2, in_scale=0.05, out_scale=0.07, out_zero=2)
    s = net.act(shape, 0.08, -1)
    w.op("ADD", [a, c], [s], fused_activation_function="RELU")
    bias_row = net.act([1, 1, 1, 16], 0.03, 4, "row")
    s2 = net.act(shape, 0.09, 3)
    w.op("ADD", [s, bias_row], [s2], fused_activation_function="NONE")
    # a grouped convolution (2 groups of 8 channels): filters of depth 8 on 16 channels
    net.count += 1
    gw = w.tensor(f"w{net.count}", [8, 3, 3, 8], "int8", _weights(net.rng, [8, 3, 3, 8]), np.full(8, 0.01, np.float32),
                  np.zeros(8, np.int64), quantized_dimension=0)
    g = net.act([1, 6, 5, 8], 0.1, 0)
    w.op("CONV_2D", [s2, gw, -1], [g], padding="SAME", stride_w=1, stride_h=1, fused_activation_function="NONE",
         dilation_w_factor=1, dilation_h_factor=1)
    mp = net.act([1, 5, 4, 8], 0.1, 0)
    w.op("MAX_POOL_2D", [g], [mp], padding="VALID", stride_w=1, stride_h=1, filter_width=2, filter_height=2,
         fused_activation_function="NONE")
    flat = net.act([1, 160], 0.1, 0)
    new_shape = w.tensor("shape", [2], "int32", np.array([1, 160], np.int32))
    w.op("RESHAPE", [mp, new_shape], [flat], new_shape=[1, 160])
    net.count += 1
    nb = w.tensor(f"w{net.count}", [12, 160], "int8", _weights(net.rng, [12, 160]), np.array([0.004], np.float32), np.zeros(1, np.int64))
    d = net.act([1, 12], 0.2, -5)
    w.op("FULLY_CONNECTED", [flat, nb, -1], [d], fused_activation_function="RELU")
    e = net.dense(d, 12, 10, per_channel=True, in_scale=0.2, out_scale=0.15)
    probs = net.act([1, 10], 1.0 / 256, -128, "probabilities")
    w.op("SOFTMAX", [e], [probs], beta=1.0)
    return net.save(path, [x, bias_row], [probs, s])


def random_inputs(model: Path, seed: int) -> List[np.ndarray]:
    """Inputs for ``model`` of its dtypes and shapes: int8 over the whole range (the extremes
    included), float normal."""
    from microtvm_registry.compile.frontends.tflite_graph import read_graph

    graph = read_graph(model)
    rng = np.random.default_rng(seed)
    out = []
    for index in graph.inputs:
        t = graph.tensors[index]
        if t.dtype == "int8":
            values = rng.integers(-128, 128, t.shape).astype(np.int8)
            values.reshape(-1)[:2] = (-128, 127)
            out.append(values)
        else:
            out.append(rng.standard_normal(t.shape).astype(np.float32))
    return out


def zero_inputs(model: Path) -> List[np.ndarray]:
    """All-zero inputs (what the TFLite Micro anchor figures were measured on)."""
    from microtvm_registry.compile.frontends.tflite_graph import read_graph

    graph = read_graph(model)
    return [np.zeros(graph.tensors[i].shape, graph.tensors[i].dtype) for i in graph.inputs]


_REFERENCE = r"""
import json, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model, folder = sys.argv[1], sys.argv[2]
it = runtime.Interpreter.from_file(model)
count = int(sys.argv[3])
for i in range(count):
    it.set_input(np.load(f"{folder}/in{i}.npy"), i)
it.invoke()
n = 0
while True:
    try:
        np.save(f"{folder}/out{n}.npy", it.get_output(n))
    except Exception:
        break
    n += 1
print(json.dumps({"outputs": n}))
"""


def tflm_reference(model: Path, inputs: Sequence[np.ndarray], work: Path) -> List[np.ndarray]:
    """TFLite Micro's outputs for ``inputs`` (its interpreter in a subprocess; an abort raises)."""
    work.mkdir(parents=True, exist_ok=True)
    for i, array in enumerate(inputs):
        np.save(work / f"in{i}.npy", array)
    out = subprocess.run([sys.executable, "-c", _REFERENCE, str(model), str(work), str(len(inputs))],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"TFLite Micro failed on {model.name} (exit {out.returncode}): {out.stderr[-500:]}")
    count = json.loads(out.stdout.strip().splitlines()[-1])["outputs"]
    return [np.load(work / f"out{n}.npy") for n in range(count)]


def assert_matches(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """int8: exactly; float32: within 1e-5 x max(1, max |reference|)."""
    assert got.shape == want.shape and got.dtype == want.dtype, (what, got.shape, got.dtype, want.shape, want.dtype)
    if want.dtype == np.int8:
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        assert int(diff.max()) == 0, f"{what}: {int((diff > 0).sum())} of {diff.size} values differ, by up to {int(diff.max())} steps"
    else:
        tolerance = 1e-5 * max(1.0, float(np.max(np.abs(want))))
        assert float(np.max(np.abs(got - want))) <= tolerance, f"{what}: off by {float(np.max(np.abs(got - want)))}"

