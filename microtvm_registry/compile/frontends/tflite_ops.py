"""Each TFLite operator as one TVM kernel (a TE computation emitted into Relax), in NHWC as the
model has it, computing exactly what TFLite Micro's reference kernel computes.

int8 operators follow TFLite Micro's arithmetic bit for bit (fixed_point.py has the pieces): the
multipliers and shifts are computed here at compile time as TFLite computes them (including its
float32 products where it uses them), and the kernels apply them with its rounding. float32
operators accumulate in TFLite's loop order. Windows that reach past the input (SAME padding)
skip the missing pixels as TFLite does: for an int8 convolution that is padding with the input's
zero point, with the zero point's share of each output folded into its bias, which is the same
integer sum.

A kernel never allocates: per-channel multipliers, shifts and folded biases are constants in
flash, as the weights are. tvm is imported by the caller (the frontend) before these run.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ...errors import ModelError
from .. import fixed_point as fp
from .tflite_graph import Graph, Operator, Tensor


def _te() -> Any:
    from tvm import te

    return te


def _tirx() -> Any:
    from tvm import tirx

    return tirx


# ---------------------------------------------------------------- compile-time arithmetic


def quantize_float(value: float, scale: float, zero_point: int) -> int:
    """``zero_point + round(value / scale)`` with TFLite's float32 division and rounding."""
    return zero_point + fp.tflite_round(float(np.float32(value) / np.float32(scale)))


def activation_range_int8(activation: str, out: Tensor, what: str) -> Tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized for an int8 output."""
    scale, zero = out.one_scale(), out.one_zero_point()
    lo, hi = -128, 127
    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, quantize_float(0.0, scale, zero)), hi
    if activation == "RELU6":
        return max(lo, quantize_float(0.0, scale, zero)), min(hi, quantize_float(6.0, scale, zero))
    if activation == "RELU_N1_TO_1":
        return max(lo, quantize_float(-1.0, scale, zero)), min(hi, quantize_float(1.0, scale, zero))
    raise ModelError(f"{what} has the fused activation {activation}, which microtvm-registry does not compile")


def activation_range_float(activation: str, what: str) -> Tuple[Optional[float], Optional[float]]:
    ranges = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    if activation not in ranges:
        raise ModelError(f"{what} has the fused activation {activation}, which microtvm-registry does not compile")
    return ranges[activation]


def same_padding(in_size: int, filter_size: int, stride: int, dilation: int, out_size: int) -> int:
    """The padding before the first pixel (TFLite's ComputePadding; the odd one goes after)."""
    effective = (filter_size - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2


def channel_multipliers(input_scale: float, filter_scales: np.ndarray, output_scale: float, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per output channel (multiplier, shift): input_scale * filter_scale / output_scale in double,
    as TFLite's PopulateConvolutionQuantizationParams computes them."""
    scales = filter_scales if filter_scales.size > 1 else np.repeat(filter_scales, channels)
    pairs = [fp.quantize_multiplier(float(input_scale) * float(s) / float(output_scale)) for s in scales.astype(np.float32)]
    return np.array([m for m, _ in pairs], np.int32), np.array([s for _, s in pairs], np.int32)


# ------------------------------------------------------------------------ TE helpers


def _shape(dims: Sequence[Any]) -> list:
    """A TE shape in int64, as Relax has its tensors' (the kernel's own arithmetic stays int32)."""
    tirx = _tirx()
    return [tirx.IntImm("int64", int(d)) for d in dims]


def _axis(extent: Any, name: str) -> Any:
    tirx = _tirx()
    return _te().reduce_axis((tirx.IntImm("int64", 0), tirx.IntImm("int64", int(extent))), name)



def _clamp_int8(value: Any, lo: int, hi: int) -> Any:
    tirx = _tirx()
    return tirx.max(tirx.min(value, fp.i32(hi)), fp.i32(lo)).astype("int8")


def _clamp_float(value: Any, lo: Optional[float], hi: Optional[float]) -> Any:
    tirx = _tirx()
    if lo is not None:
        value = tirx.max(value, tirx.const(lo, "float32"))
    if hi is not None:
        value = tirx.min(value, tirx.const(hi, "float32"))
    return value


def _pad(x: Any, before: Sequence[int], after: Sequence[int], value: Any, name: str) -> Any:
    """``x`` padded with ``value`` (a separate stage TVM may inline into its consumer)."""
    if not any(before) and not any(after):
        return x
    te, tirx = _te(), _tirx()
    shape = [int(d) + b + a for d, b, a in zip(x.shape, before, after)]

    def at(*idx: Any) -> Any:
        conds = [tirx.all(i >= b, i < b + int(d)) for i, b, a, d in zip(idx, before, after, x.shape) if b or a]
        return te.if_then_else(tirx.all(*conds), x[tuple(i - b for i, b in zip(idx, before))], value)

    return te.compute(_shape(shape), at, name=name)


def _broadcast_index(tensor: Any, out_rank: int, idx: Sequence[Any]) -> Tuple[Any, ...]:
    """numpy's broadcasting: the trailing dimensions line up; a size-1 dimension reads index 0."""
    rank = len(tensor.shape)
    lead = out_rank - rank
    return tuple(0 if int(tensor.shape[i]) == 1 else idx[lead + i] for i in range(rank))


# ---------------------------------------------------------------------------- lowering


class Lowering:
    """Emits the graph's operators into a Relax BlockBuilder, one kernel each (``values`` maps
    a tensor index to the Relax value holding it)."""

    def __init__(self, graph: Graph, bb: Any, source: str, library: Optional[Any] = None) -> None:
        self.graph = graph
        self.bb = bb
        self.source = source
        self.values: Dict[int, Any] = {}
        self.library = library  # a kernel library (kernels/cmsis_nn.py) that computes the int8 layers it can

    # -- plumbing

    def tensor(self, index: int) -> Tensor:
        return self.graph.tensors[index]

    def value(self, index: int) -> Any:
        """The Relax value of a tensor: an earlier result, an input, or a constant."""
        if index in self.values:
            return self.values[index]
        t = self.tensor(index)
        if t.data is None:
            raise ModelError(f"tensor {t.name!r} of {self.source} is read before any operator writes it; re-export the model")
        return self.const(t.data)

    def const(self, array: np.ndarray) -> Any:
        from tvm import relax

        array = np.ascontiguousarray(array)
        return relax.const(array, str(array.dtype))

    def emit(self, name: str, compute: Callable[..., Any], *args: Any) -> Any:
        """``compute(*placeholders)`` as a kernel called on ``args``. Not BlockBuilder.emit_te: it
        builds the PrimFunc with int64 indices by rewriting every int32 constant to int64, which
        would change the kernel's int32 arithmetic (wrapping, shifts); here only shapes are int64."""
        from tvm import relax

        te = _te()
        placeholders = []
        for n, arg in enumerate(args):
            ty = arg.ty
            placeholders.append(te.placeholder(_shape([int(d) for d in ty.shape.values]), str(ty.dtype), f"arg{n}"))
        out = compute(*placeholders)
        func = te.create_prim_func(placeholders + [out]).without_attr("global_symbol")  # named by its GlobalVar
        gvar = self.bb.add_func(func, name)
        out_ty = relax.TensorType(shape=[int(d) for d in out.shape], dtype=str(out.dtype))
        return self.bb.emit(relax.call_tir(gvar, list(args), out_ty))

    def what(self, op: Operator) -> str:
        return f"{op.name} #{op.index} of {self.source}"

    def run(self, op: Operator) -> None:
        handler = getattr(self, "op_" + op.name.lower())
        result = handler(op)
        self.values[op.outputs[0]] = result

    def int8(self, op: Operator) -> bool:
        """Whether ``op`` computes on int8 (full-integer) or float32 values."""
        dtype = self.tensor(op.outputs[0]).dtype
        if dtype not in ("int8", "float32"):
            raise ModelError(f"{self.what(op)} writes {dtype}, which microtvm-registry does not compile")
        return dtype == "int8"

    def reshaped(self, value: Any, shape: Sequence[int]) -> Any:
        from tvm import relax

        current = [int(d) for d in value.ty.shape] if hasattr(value, "ty") and value.ty.shape is not None else None
        if current == list(shape):
            return value
        return self.bb.emit(relax.op.reshape(value, [int(d) for d in shape]))

    # -- convolutions

    def _conv_common(self, op: Operator, depthwise: bool) -> Any:
        te = _te()
        x_t, w_t = self.tensor(op.inputs[0]), self.tensor(op.inputs[1])
        b_t = self.tensor(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        out_t = self.tensor(op.outputs[0])
        o = op.options
        sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
        dh, dw = int(o.get("dilation_h_factor", 1) or 1), int(o.get("dilation_w_factor", 1) or 1)
        _, H, W, C = x_t.shape
        _, OH, OW, OC = out_t.shape
        KH, KW = w_t.shape[1], w_t.shape[2]
        if o.get("padding") == "SAME":
            pt, pl = same_padding(H, KH, sh, dh, OH), same_padding(W, KW, sw, dw, OW)
        else:
            pt = pl = 0
        pb = max((OH - 1) * sh + (KH - 1) * dh + 1 - H - pt, 0)
        pr = max((OW - 1) * sw + (KW - 1) * dw + 1 - W - pl, 0)
        if depthwise:
            mult = OC // C
            if mult * C != OC:
                raise ModelError(f"{self.what(op)} has {OC} output channels for {C} input channels; re-export the model")
        else:
            icg = w_t.shape[3]
            groups = C // icg
            if groups * icg != C or OC % groups:
                raise ModelError(f"{self.what(op)} has filters of depth {icg} for {C} input channels; re-export the model")
            fpg = OC // groups
        weights = w_t.values()
        int8 = self.int8(op)
        activation = o.get("fused_activation_function", "NONE")
        kind = ("depthwise_conv2d" if depthwise else "conv2d") + ("_int8" if int8 else "")

        if int8:
            zp_in, zp_out = x_t.one_zero_point(), out_t.one_zero_point()
            lo, hi = activation_range_int8(activation, out_t, self.what(op))
            mults, shifts = channel_multipliers(x_t.one_scale(), w_t.scales(), out_t.one_scale(), OC)
            sums = weights.astype(np.int64).sum(axis=(0, 1, 2)) if depthwise else weights.astype(np.int64).sum(axis=(1, 2, 3))
            bias = (b_t.values().astype(np.int64) if b_t is not None else np.zeros(OC, np.int64)) - zp_in * sums
            if np.any(np.abs(bias) >= 1 << 31):
                raise ModelError(f"{self.what(op)}: its bias and zero point overflow int32; re-export the model")
            params = [self.const(bias.astype(np.int32)), self.const(mults), self.const(shifts)]
            if self.library is not None:
                geometry = dict(stride_h=sh, stride_w=sw, dilation_h=dh, dilation_w=dw, pad_h=pt, pad_w=pl,
                                groups=1 if depthwise else groups)
                raw_bias = b_t.values().astype(np.int32) if b_t is not None else None
                layer = self.library.depthwise_conv2d if depthwise else self.library.conv2d
                done = layer(self, self.value(op.inputs[0]), weights, raw_bias, mults, shifts, geometry, zp_in, zp_out, lo, hi, out_t.shape)
                if done is not None:
                    return done
        else:
            lo_f, hi_f = activation_range_float(activation, self.what(op))
            bias_f = b_t.values().astype(np.float32) if b_t is not None else np.zeros(OC, np.float32)
            params = [self.const(bias_f)]

        def compute(x: Any, w: Any, *p: Any) -> Any:
            tirx = _tirx()
            pad_value = tirx.const(zp_in if int8 else 0, x.dtype)
            xp = _pad(x, (0, pt, pl, 0), (0, pb, pr, 0), pad_value, "pad")
            kh, kw = _axis(KH, "kh"), _axis(KW, "kw")
            acc_type = "int32" if int8 else "float32"
            if depthwise:
                def body(n: Any, oh: Any, ow: Any, oc: Any) -> Any:
                    return te.sum(xp[n, oh * sh + kh * dh, ow * sw + kw * dw, oc // mult].astype(acc_type)
                                  * w[0, kh, kw, oc].astype(acc_type), axis=[kh, kw])
            else:
                ic = _axis(icg, "ic")

                def body(n: Any, oh: Any, ow: Any, oc: Any) -> Any:
                    channel = ic if groups == 1 else (oc // fpg) * icg + ic
                    return te.sum(xp[n, oh * sh + kh * dh, ow * sw + kw * dw, channel].astype(acc_type)
                                  * w[oc, kh, kw, ic].astype(acc_type), axis=[kh, kw, ic])
            acc = te.compute(_shape((1, OH, OW, OC)), body, name="acc")
            if int8:
                bias, m, s = p
                return te.compute(_shape((1, OH, OW, OC)), lambda n, oh, ow, oc: _clamp_int8(
                    fp.mbqm(acc[n, oh, ow, oc] + bias[oc], m[oc], s[oc]) + fp.i32(zp_out), lo, hi), name=kind)
            (bias,) = p
            return te.compute(_shape((1, OH, OW, OC)), lambda n, oh, ow, oc: _clamp_float(acc[n, oh, ow, oc] + bias[oc], lo_f, hi_f), name=kind)

        return self.emit(kind, compute, self.value(op.inputs[0]), self.const(weights), *params)

    def op_conv_2d(self, op: Operator) -> Any:
        return self._conv_common(op, depthwise=False)

    def op_depthwise_conv_2d(self, op: Operator) -> Any:
        return self._conv_common(op, depthwise=True)

    def op_fully_connected(self, op: Operator) -> Any:
        te = _te()
        x_t, w_t = self.tensor(op.inputs[0]), self.tensor(op.inputs[1])
        b_t = self.tensor(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        out_t = self.tensor(op.outputs[0])
        if int(op.options.get("weights_format", 0)) != 0:
            raise ModelError(f"{self.what(op)} uses shuffled weights, which microtvm-registry does not compile; re-export it")
        OUT, IN = w_t.shape
        total = int(np.prod(x_t.shape))
        if total % IN:
            raise ModelError(f"{self.what(op)} takes {x_t.shape} for {IN} inputs per row; re-export the model")
        B = total // IN
        x2 = self.reshaped(self.value(op.inputs[0]), (B, IN))
        weights = w_t.values()
        int8 = self.int8(op)
        activation = op.options.get("fused_activation_function", "NONE")
        kind = "dense_int8" if int8 else "dense"
        k = _axis(IN, "k")
        if int8:
            zp_in, zp_out = x_t.one_zero_point(), out_t.one_zero_point()
            lo, hi = activation_range_int8(activation, out_t, self.what(op))
            bias = (b_t.values().astype(np.int64) if b_t is not None else np.zeros(OUT, np.int64)) - zp_in * weights.astype(np.int64).sum(axis=1)
            if w_t.scales().size > 1:
                mults, shifts = channel_multipliers(x_t.one_scale(), w_t.scales(), out_t.one_scale(), OUT)
                per_channel: Optional[Tuple[np.ndarray, np.ndarray]] = (mults, shifts)
                mult = shift = 0
            else:
                # TFLite multiplies the two float32 scales in float32 for a per-tensor layer
                product = float(np.float32(x_t.one_scale()) * np.float32(w_t.one_scale()))
                mult, shift = fp.quantize_multiplier(product / float(out_t.one_scale()))
                per_channel = None
            extra = [self.const(bias.astype(np.int32))] + ([self.const(per_channel[0]), self.const(per_channel[1])] if per_channel else [])
            if self.library is not None:
                raw_bias = b_t.values().astype(np.int32) if b_t is not None else None
                done = self.library.fully_connected(self, x2, weights, raw_bias, mult, shift, zp_in, zp_out, lo, hi, per_channel)
                if done is not None:
                    return self.reshaped(done, out_t.shape)

            def compute(x: Any, w: Any, bias_c: Any, *ms: Any) -> Any:
                acc = te.compute(_shape((B, OUT)), lambda b, o: te.sum(x[b, k].astype("int32") * w[o, k].astype("int32"), axis=k), name="acc")

                def out(b: Any, o: Any) -> Any:
                    m, s = (ms[0][o], ms[1][o]) if ms else (mult, shift)
                    return _clamp_int8(fp.mbqm(acc[b, o] + bias_c[o], m, s) + fp.i32(zp_out), lo, hi)

                return te.compute(_shape((B, OUT)), out, name=kind)

            y = self.emit(kind, compute, x2, self.const(weights), *extra)
        else:
            lo_f, hi_f = activation_range_float(activation, self.what(op))
            bias_f = b_t.values().astype(np.float32) if b_t is not None else np.zeros(OUT, np.float32)

            def compute_f(x: Any, w: Any, bias_c: Any) -> Any:
                acc = te.compute(_shape((B, OUT)), lambda b, o: te.sum(x[b, k] * w[o, k], axis=k), name="acc")
                return te.compute(_shape((B, OUT)), lambda b, o: _clamp_float(acc[b, o] + bias_c[o], lo_f, hi_f), name=kind)

            y = self.emit(kind, compute_f, x2, self.const(weights), self.const(bias_f))
        return self.reshaped(y, out_t.shape)

    # -- pooling

    def _pool(self, op: Operator, average: bool) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        o = op.options
        sh, sw = int(o["stride_h"]), int(o["stride_w"])
        KH, KW = int(o["filter_height"]), int(o["filter_width"])
        _, H, W, C = x_t.shape
        _, OH, OW, _ = out_t.shape
        pt, pl = (same_padding(H, KH, sh, 1, OH), same_padding(W, KW, sw, 1, OW)) if o.get("padding") == "SAME" else (0, 0)
        int8 = self.int8(op)
        activation = o.get("fused_activation_function", "NONE")
        if int8:
            if x_t.one_zero_point() != out_t.one_zero_point() or not np.isclose(x_t.one_scale(), out_t.one_scale()):
                raise ModelError(f"{self.what(op)} changes the quantization between input and output, which TFLite does not allow")
            lo, hi = activation_range_int8(activation, out_t, self.what(op))
        else:
            lo_f, hi_f = activation_range_float(activation, self.what(op))
        kind = ("avg_pool2d" if average else "max_pool2d") + ("_int8" if int8 else "")
        if int8 and self.library is not None:
            geometry = dict(stride_h=sh, stride_w=sw, pad_h=pt, pad_w=pl, filter_h=KH, filter_w=KW)
            done = self.library.pool2d(self, self.value(op.inputs[0]), average, geometry, lo, hi, out_t.shape)
            if done is not None:
                return done
        full = pt == 0 and pl == 0 and (OH - 1) * sh + KH <= H and (OW - 1) * sw + KW <= W

        def compute(x: Any) -> Any:
            kh, kw = _axis(KH, "kh"), _axis(KW, "kw")

            def inside(ih: Any, iw: Any) -> Any:
                return tirx.all(ih >= 0, ih < H, iw >= 0, iw < W)

            def pixel(n: Any, oh: Any, ow: Any, c: Any, dtype: str, outside: Any) -> Any:
                ih, iw = oh * sh - pt + kh, ow * sw - pl + kw
                if full:
                    return x[n, ih, iw, c].astype(dtype)
                return te.if_then_else(inside(ih, iw), x[n, ih, iw, c].astype(dtype), outside)

            def count(oh: Any, ow: Any) -> Any:
                if full:
                    return fp.i32(KH * KW)
                ih0, iw0 = (oh * sh - pt).astype("int32"), (ow * sw - pl).astype("int32")
                rows = tirx.min(ih0 + KH, fp.i32(H)) - tirx.max(ih0, fp.i32(0))
                cols = tirx.min(iw0 + KW, fp.i32(W)) - tirx.max(iw0, fp.i32(0))
                return rows * cols

            if average and int8:
                sums = te.compute(_shape((1, OH, OW, C)), lambda n, oh, ow, c: te.sum(pixel(n, oh, ow, c, "int32", fp.i32(0)), axis=[kh, kw]), name="sum")

                def avg(n: Any, oh: Any, ow: Any, c: Any) -> Any:
                    cnt, total = count(oh, ow), sums[n, oh, ow, c]
                    half = tirx.truncdiv(cnt, fp.i32(2))
                    return _clamp_int8(fp.select(total > fp.i32(0), tirx.truncdiv(total + half, cnt), tirx.truncdiv(total - half, cnt)), lo, hi)

                return te.compute(_shape((1, OH, OW, C)), avg, name=kind)
            if average:
                sums = te.compute(_shape((1, OH, OW, C)), lambda n, oh, ow, c: te.sum(pixel(n, oh, ow, c, "float32", tirx.const(0.0, "float32")), axis=[kh, kw]), name="sum")
                return te.compute(_shape((1, OH, OW, C)), lambda n, oh, ow, c: _clamp_float(
                    sums[n, oh, ow, c] / count(oh, ow).astype("float32"), lo_f, hi_f), name=kind)
            dtype = "int8" if int8 else "float32"
            lowest = tirx.min_value(dtype)
            peak = te.compute(_shape((1, OH, OW, C)), lambda n, oh, ow, c: te.max(pixel(n, oh, ow, c, dtype, lowest), axis=[kh, kw]), name="max")
            if int8:
                return te.compute(_shape((1, OH, OW, C)), lambda *i: _clamp_int8(peak[i].astype("int32"), lo, hi), name=kind)
            return te.compute(_shape((1, OH, OW, C)), lambda *i: _clamp_float(peak[i], lo_f, hi_f), name=kind)

        return self.emit(kind, compute, self.value(op.inputs[0]))

    def op_average_pool_2d(self, op: Operator) -> Any:
        return self._pool(op, average=True)

    def op_max_pool_2d(self, op: Operator) -> Any:
        return self._pool(op, average=False)

    # -- elementwise

    def _binary(self, op: Operator, kind: str) -> Any:
        te = _te()
        a_t, b_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.inputs[1]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        rank = len(shape)
        activation = op.options.get("fused_activation_function", "NONE")
        int8 = self.int8(op)
        name = kind + ("_int8" if int8 else "")
        if not int8:
            lo_f, hi_f = activation_range_float(activation, self.what(op))

            def compute_f(a: Any, b: Any) -> Any:
                def at(*i: Any) -> Any:
                    x, y = a[_broadcast_index(a, rank, i)], b[_broadcast_index(b, rank, i)]
                    return _clamp_float(x + y if kind == "add" else x * y, lo_f, hi_f)

                return te.compute(_shape(shape), at, name=name)

            return self.emit(name, compute_f, self.value(op.inputs[0]), self.value(op.inputs[1]))
        lo, hi = activation_range_int8(activation, out_t, self.what(op))
        za, zb, zo = a_t.one_zero_point(), b_t.one_zero_point(), out_t.one_zero_point()
        sa, sb, so = a_t.one_scale(), b_t.one_scale(), out_t.one_scale()
        if kind == "add":
            left = 20
            twice_max = 2 * max(sa, sb)
            reals = (sa / twice_max, sb / twice_max, twice_max / ((1 << left) * so))
            if not all(0 < r < 1 for r in reals):
                raise ModelError(
                    f"{self.what(op)}: its output scale is too small for its inputs' (a rescale of {max(reals):.3g} >= 1), "
                    "which TFLite Micro refuses too; re-quantize the model"
                )
            (ma, sha), (mb, shb), (mo, sho) = (fp.quantize_multiplier(r) for r in reals)
            if self.library is not None:
                quant = dict(input1_offset=-za, input1_mult=ma, input1_shift=sha, input2_offset=-zb, input2_mult=mb, input2_shift=shb,
                             left_shift=left, output_offset=zo, output_mult=mo, output_shift=sho, act_min=lo, act_max=hi)
                done = self.library.add(self, self.value(op.inputs[0]), self.value(op.inputs[1]), quant, shape)
                if done is not None:
                    return done

            def compute(a: Any, b: Any) -> Any:
                def rescaled(*i: Any) -> Any:
                    x = (a[_broadcast_index(a, rank, i)].astype("int32") - fp.i32(za)) * fp.i32(1 << left)
                    y = (b[_broadcast_index(b, rank, i)].astype("int32") - fp.i32(zb)) * fp.i32(1 << left)
                    return fp.mbqm(x, ma, sha) + fp.mbqm(y, mb, shb)

                # the sum as a step of its own: the output's rescale reads it three times, and
                # written into one expression it would copy both inputs' rescales each time
                total = te.compute(_shape(shape), rescaled, name="sum")
                return te.compute(_shape(shape), lambda *i: _clamp_int8(fp.mbqm(total[i], mo, sho) + fp.i32(zo), lo, hi), name=name)
        else:
            mo, sho = fp.quantize_multiplier(sa * sb / so)

            def compute(a: Any, b: Any) -> Any:
                def at(*i: Any) -> Any:
                    x = a[_broadcast_index(a, rank, i)].astype("int32") - fp.i32(za)
                    y = b[_broadcast_index(b, rank, i)].astype("int32") - fp.i32(zb)
                    return _clamp_int8(fp.mbqm(x * y, mo, sho) + fp.i32(zo), lo, hi)

                return te.compute(_shape(shape), at, name=name)

        return self.emit(name, compute, self.value(op.inputs[0]), self.value(op.inputs[1]))

    def op_add(self, op: Operator) -> Any:
        return self._binary(op, "add")

    def op_mul(self, op: Operator) -> Any:
        return self._binary(op, "mul")

    def op_reshape(self, op: Operator) -> Any:
        return self.reshaped(self.value(op.inputs[0]), self.tensor(op.outputs[0]).shape)

    def op_relu(self, op: Operator) -> Any:
        return self._activation(op, "RELU")

    def op_relu6(self, op: Operator) -> Any:
        return self._activation(op, "RELU6")

    def _activation(self, op: Operator, activation: str) -> Any:
        te = _te()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        if not self.int8(op):
            lo_f, hi_f = activation_range_float(activation, self.what(op))
            return self.emit(activation.lower(), lambda x: te.compute(_shape(shape), lambda *i: _clamp_float(x[i], lo_f, hi_f), name=activation.lower()),
                             self.value(op.inputs[0]))
        zp_in = x_t.one_zero_point()
        if activation == "RELU6":
            # TFLite Micro clamps the input codes between 0 and 6 in the input's quantization
            six = min(127, max(-128, zp_in + fp.tflite_round(float(np.float32(6.0) / np.float32(x_t.one_scale())))))
            return self.emit("relu6_int8", lambda x: te.compute(_shape(shape), lambda *i: _clamp_int8(x[i].astype("int32"), zp_in, six), name="relu6_int8"),
                             self.value(op.inputs[0]))
        mult, shift = fp.quantize_multiplier(float(np.float32(x_t.one_scale()) / np.float32(out_t.one_scale())))
        zp_out = out_t.one_zero_point()
        lo = max(-128, zp_out + fp.tflite_round(float(np.float32(0.0) / np.float32(out_t.one_scale()))))
        return self.emit("relu_int8", lambda x: te.compute(_shape(shape), lambda *i: _clamp_int8(
            fp.mbqm(x[i].astype("int32") - fp.i32(zp_in), mult, shift) + fp.i32(zp_out), lo, 127), name="relu_int8"),
            self.value(op.inputs[0]))

    def op_logistic(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        if not self.int8(op):
            return self.emit("logistic", lambda x: te.compute(_shape(shape), lambda *i: tirx.const(1.0, "float32") / (
                tirx.const(1.0, "float32") + tirx.exp(tirx.const(0.0, "float32") - x[i])), name="logistic"), self.value(op.inputs[0]))
        if out_t.one_zero_point() != -128:
            raise ModelError(f"{self.what(op)} has output zero point {out_t.one_zero_point()}; TFLite's int8 LOGISTIC needs -128")
        import math

        integer_bits = 4
        real = float(x_t.one_scale()) * float(1 << (31 - integer_bits))
        mantissa, left_shift = math.frexp(real)
        # TFLite takes frexp's mantissa as it is here (no 2**31 -> 2**30 step), wrapping as int32 does
        multiplier = fp.wrap32(fp.tflite_round(mantissa * (1 << 31)))
        radius = int(math.floor(((1 << integer_bits) - 1) * float(1 << (31 - integer_bits)) / 2.0 ** left_shift))
        zp_in = x_t.one_zero_point()

        def compute(x: Any) -> Any:
            st = fp.Stages(_shape(shape), "lg")
            v = st.map(lambda q: q.astype("int32") - fp.i32(zp_in), x)
            q4 = st.map(lambda d: fp.mbqm(d, multiplier, left_shift), v)
            negative = st.map(lambda q: fp.select(q > fp.i32(0), fp.i32(0) - q, q), q4)  # -|q|
            r = fp.one_over_one_plus_x_for_x_in_0_1(st, fp.exp_on_negative_values(st, negative, integer_bits))
            lg = st.map(lambda q, rv: fp.select(q == fp.i32(0), fp.i32(1 << 30), fp.select(q > fp.i32(0), rv, fp.i32(fp.INT32_MAX) - rv)), q4, r)
            return te.compute(_shape(shape), lambda *i: fp.select(
                v[i] <= fp.i32(-radius), tirx.const(-128, "int8"), fp.select(
                    v[i] >= fp.i32(radius), tirx.const(127, "int8"), _clamp_int8(fp.tir_rdbpot(lg[i], 31 - 8) + fp.i32(-128), -128, 127))),
                name="logistic_int8")

        return self.emit("logistic_int8", compute, self.value(op.inputs[0]))

    def op_softmax(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        depth = shape[-1]
        outer = int(np.prod(shape[:-1]))
        beta = float(op.options.get("beta", 1.0))
        x = self.reshaped(self.value(op.inputs[0]), (outer, depth))
        if not self.int8(op):
            def compute_f(v: Any) -> Any:
                c = _axis(depth, "c")
                peak = te.compute(_shape((outer,)), lambda i: te.max(v[i, c], axis=c), name="max")
                e = te.compute(_shape((outer, depth)), lambda i, j: tirx.exp((v[i, j] - peak[i]) * tirx.const(beta, "float32")), name="exp")
                c2 = _axis(depth, "c2")
                total = te.compute(_shape((outer,)), lambda i: te.sum(e[i, c2], axis=c2), name="sum")
                return te.compute(_shape((outer, depth)), lambda i, j: e[i, j] / total[i], name="softmax")

            return self.reshaped(self.emit("softmax", compute_f, x), shape)
        if out_t.one_zero_point() != -128 or not np.float32(out_t.one_scale()) == np.float32(1.0 / 256):
            raise ModelError(f"{self.what(op)}: an int8 SOFTMAX needs output scale 1/256 and zero point -128, as TFLite's does")
        scaled_bits, accumulation_bits = 5, 12
        real = min(beta * float(x_t.one_scale()) * (1 << (31 - scaled_bits)), float((1 << 31) - 1))
        input_multiplier, input_left_shift = fp.quantize_multiplier(real)
        diff_min = -int(np.floor(((1 << scaled_bits) - 1) * float(1 << (31 - scaled_bits)) / float(1 << input_left_shift)))
        if self.library is not None:
            done = self.library.softmax(self, x, input_multiplier, input_left_shift, diff_min)
            if done is not None:
                return self.reshaped(done, shape)

        def compute(v: Any) -> Any:
            rows, grid = _shape((outer,)), _shape((outer, depth))
            c = _axis(depth, "c")
            peak = te.compute(rows, lambda i: te.max(v[i, c].astype("int32"), axis=c), name="max")
            diff = te.compute(grid, lambda i, j: v[i, j].astype("int32") - peak[i], name="diff")
            st = fp.Stages(grid, "ex")
            scaled = st.map(lambda d: fp.tir_srdhm(d * fp.i32(1 << input_left_shift), fp.i32(input_multiplier), saturate=False), diff)
            e = fp.exp_on_negative_values(st, scaled, scaled_bits)
            terms = st.map(lambda d, ev: fp.select(d >= fp.i32(diff_min), fp.rescale(ev, 0, accumulation_bits), fp.i32(0)), diff, e)
            c2 = _axis(depth, "c2")
            total = te.compute(rows, lambda i: te.sum(terms[i, c2], axis=c2), name="sum")
            rs = fp.Stages(rows, "rc")
            headroom = fp.clz32(rs, total)
            shifted = rs.map(lambda t, h: ((t.astype("uint32") << h.astype("uint32")) - tirx.const(1 << 31, "uint32")).astype("int32"),
                             total, headroom)
            scale = fp.one_over_one_plus_x_for_x_in_0_1(rs, shifted)
            # the unclamped output as a step of its own: TVM's bound analysis of the shift by a
            # data-dependent amount would otherwise drop the clamp at 127
            raw = te.compute(grid, lambda i, j: fp.tir_rdbpot(
                fp.tir_srdhm(scale[i], e[i, j]), fp.i32(accumulation_bits + 31 - 8) - headroom[i]) + fp.i32(-128), name="raw")
            return te.compute(grid, lambda i, j: fp.select(
                diff[i, j] >= fp.i32(diff_min), _clamp_int8(raw[i, j], -128, 127), tirx.const(-128, "int8")), name="softmax_int8")

        return self.reshaped(self.emit("softmax_int8", compute, x), shape)

    def op_pad(self, op: Operator) -> Any:
        tirx = _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        pads_t = self.tensor(op.inputs[1])
        if pads_t.data is None:
            raise ModelError(f"{self.what(op)} takes its paddings at run time; only constant paddings compile")
        pads = pads_t.values().reshape(-1, 2).astype(int)
        int8 = self.int8(op)
        value = tirx.const(out_t.one_zero_point() if int8 else 0, "int8" if int8 else "float32")
        if int8 and x_t.one_zero_point() != out_t.one_zero_point():
            raise ModelError(f"{self.what(op)} changes the zero point between input and output, which TFLite does not allow")
        name = "pad_int8" if int8 else "pad"
        return self.emit(name, lambda x: _pad(x, [int(p[0]) for p in pads], [int(p[1]) for p in pads], value, name), self.value(op.inputs[0]))

    def op_concatenation(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        out_t = self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        axis = int(op.options.get("axis", 0)) % len(shape)
        if op.options.get("fused_activation_function", "NONE") != "NONE":
            raise ModelError(f"{self.what(op)} has a fused activation, which TFLite Micro's CONCATENATION does not take")
        ins = [self.tensor(i) for i in op.inputs]
        if self.int8(op) and any(t.one_zero_point() != out_t.one_zero_point() or not np.isclose(t.one_scale(), out_t.one_scale()) for t in ins):
            raise ModelError(f"{self.what(op)} joins inputs of other quantizations than its output's, which TFLite Micro does not rescale")
        starts = np.cumsum([0] + [t.shape[axis] for t in ins]).tolist()

        def compute(*xs: Any) -> Any:
            def at(*i: Any) -> Any:
                value = None
                for x, start, end in reversed(list(zip(xs, starts, starts[1:]))):
                    idx = tuple(i[k] - start if k == axis else i[k] for k in range(len(shape)))
                    here = x[idx]
                    # if_then_else, not Select: only the chosen input is read (the others' index is outside them)
                    value = here if value is None else tirx.if_then_else(i[axis] < end, here, value)
                return value

            return te.compute(_shape(shape), at, name="concatenate")

        return self.emit("concatenate", compute, *[self.value(i) for i in op.inputs])

    def op_mean(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        axes_t = self.tensor(op.inputs[1])
        if axes_t.data is None:
            raise ModelError(f"{self.what(op)} takes its axes at run time; only constant axes compile")
        rank = len(x_t.shape)
        axes = sorted({int(a) % rank for a in axes_t.values().reshape(-1)})
        count = int(np.prod([x_t.shape[a] for a in axes]))
        kept = [d for a, d in enumerate(x_t.shape) if a not in axes]
        keep_shape = [1 if a in axes else d for a, d in enumerate(x_t.shape)]
        int8 = self.int8(op)
        name = "mean_int8" if int8 else "mean"
        if int8:
            mult, shift = fp.quantize_multiplier(float(x_t.one_scale()) / float(out_t.one_scale()))
            up = min(count.bit_length() - 1, 32, 31 + shift)
            mult = int((mult << up) // count)
            shift -= up
            zp_in, zp_out = x_t.one_zero_point(), out_t.one_zero_point()

        def compute(x: Any) -> Any:
            red = [_axis(x_t.shape[a], f"r{a}") for a in axes]

            def index(i: Sequence[Any]) -> Tuple[Any, ...]:
                it = iter(i)
                return tuple(red[axes.index(a)] if a in axes else next(it) for a in range(rank))

            total = te.compute(_shape(kept or [1]), lambda *i: te.sum(x[index(i if kept else ())].astype("int32" if int8 else "float32"), axis=red), name="sum")

            def kept_index(i: Sequence[Any]) -> Tuple[Any, ...]:
                return tuple(i[a] for a in range(rank) if a not in axes) or (0,)

            def at(*i: Any) -> Any:
                s = total[kept_index(i)]
                if int8:
                    return _clamp_int8(fp.mbqm(s - fp.i32(zp_in * count), mult, shift) + fp.i32(zp_out), -128, 127)
                return s / tirx.const(float(count), "float32")

            return te.compute(_shape(keep_shape), at, name=name)

        y = self.emit(name, compute, self.value(op.inputs[0]))
        return self.reshaped(y, out_t.shape)

    def op_quantize(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        if out_t.dtype != "int8":
            raise ModelError(f"{self.what(op)} quantizes to {out_t.dtype}; only int8 compiles")
        zp, scale = out_t.one_zero_point(), out_t.one_scale()
        if x_t.dtype == "float32":
            def compute(x: Any) -> Any:
                def at(*i: Any) -> Any:
                    return _clamp_int8(_round_half_away(x[i] / tirx.const(scale, "float32")).astype("int32") + fp.i32(zp), -128, 127)

                return te.compute(_shape(shape), at, name="quantize")

            return self.emit("quantize", compute, self.value(op.inputs[0]))
        if x_t.dtype != "int8":
            raise ModelError(f"{self.what(op)} requantizes {x_t.dtype}; only int8 and float32 inputs compile")
        mult, shift = fp.quantize_multiplier(float(x_t.one_scale()) / float(scale))
        zp_in = x_t.one_zero_point()
        return self.emit("requantize", lambda x: te.compute(_shape(shape), lambda *i: _clamp_int8(
            fp.mbqm(x[i].astype("int32") - fp.i32(zp_in), mult, shift) + fp.i32(zp), -128, 127), name="requantize"),
            self.value(op.inputs[0]))

    def op_dequantize(self, op: Operator) -> Any:
        te, tirx = _te(), _tirx()
        x_t, out_t = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        shape = tuple(out_t.shape)
        if x_t.dtype != "int8" or out_t.dtype != "float32":
            raise ModelError(f"{self.what(op)} dequantizes {x_t.dtype} to {out_t.dtype}; only int8 to float32 compiles")
        zp, scale = x_t.one_zero_point(), x_t.one_scale()
        return self.emit("dequantize", lambda x: te.compute(_shape(shape), lambda *i: (
            tirx.const(scale, "float64") * (x[i].astype("int32") - fp.i32(zp)).astype("float64")).astype("float32"), name="dequantize"),
            self.value(op.inputs[0]))


def _round_half_away(v: Any) -> Any:
    """``std::round`` on float32: the truncation, plus one step away from zero from a half up."""
    tirx = _tirx()
    t = tirx.trunc(v)
    return fp.select(v - t >= tirx.const(0.5, "float32"), t + tirx.const(1.0, "float32"),
                     fp.select(v - t <= tirx.const(-0.5, "float32"), t - tirx.const(1.0, "float32"), t))


def lower_graph(graph: Graph, bb: Any, source: str, inputs: Dict[int, Any], library: Optional[Any] = None) -> Lowering:
    """Every operator of ``graph`` emitted in order (``inputs``: the graph inputs' Relax vars;
    ``library``: a kernel library that computes the int8 layers it can)."""
    lowering = Lowering(graph, bb, source, library)
    lowering.values.update(inputs)
    for op in graph.operators:
        lowering.run(op)
    return lowering

