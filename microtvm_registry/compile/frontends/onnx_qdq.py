"""Real int8 for QDQ models: dequantize -> op -> quantize becomes integer arithmetic.

A model quantized with onnxruntime's ``quantize_static`` (QDQ format) imports into Relax as float
operators between ``dequantize`` and ``quantize``; left alone, TVM folds the dequantizations into
float weights and computes in float32. This pass rewrites each ``quantize(op(dequantize(x_q), ...))``
it recognizes into integer operators on the int8 values themselves:

* conv2d (depthwise too) and matmul / dense: int8 activations times int8 weights (symmetric: zero
  point 0), accumulated in int32; the activations' zero point is folded into the bias
  (sum((x - z) w) = sum(x w) - z sum(w)), and a conv's padding is made explicit with the zero
  point (a real 0, as the float conv padded);
* mean (global average pooling over H and W): an int8 matmul with ones, accumulated in int32;
  an unpadded average pool: a depthwise conv with ones; max pooling: on the int8 values;
* add: both sides rescaled to the output scale in int32 fixed point;
* reshape / flatten with unchanged quantization: the int8 tensor itself;
* a Relu or Clip between the op and its quantize: a tighter clamp of the int8 result.

Requantization is fixed point: the real scale ``s_in / s_out`` is a 31-bit multiplier and a right
shift (int64), rounding half up, then the output zero point and a clamp to int8. onnxruntime
rounds the float product half to even, so the two can differ by one step on exact ties and by
float32's own rounding; what does not match a pattern stays float and is reported by name.
The weights are int8 constants (int32 for biases): a quarter of float32's flash.

Why every integer layer starts from its int8 input with no cast of its own: TVM fuses a
consumer's leading elementwise cast into the producer's epilogue, so a layer that began with
``astype`` would make the producer write a wider tensor to the arena. conv2d and matmul widen
inside their reductions (out_dtype), so the arena holds int8 between layers. ``add`` does begin
with casts, but in a residual net the side that feeds only the add fuses it into its producer,
and the other side is int8 already, kept for its other reader.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Tuple

import numpy as np

ROUNDING_BITS = 31  # the multiplier's precision: real = m * 2**-shift, m in [2**30, 2**31)
ADD_SHIFT = 16  # add's fixed-point fraction bits: (x - z) * m fits int32 for scale ratios up to 2**7


def fixed_point(real: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(multiplier, shift) int64 arrays with real ~= multiplier * 2**-shift (31-bit multipliers)."""
    flat = np.asarray(real, dtype=np.float64).reshape(-1)
    mults, shifts = [], []
    for value in flat:
        if not value > 0:
            raise ValueError(f"requantization scale {value} is not positive")
        mantissa, exponent = math.frexp(float(value))  # value = mantissa * 2**exponent, mantissa in [0.5, 1)
        m = int(round(mantissa * (1 << ROUNDING_BITS)))
        if m == 1 << ROUNDING_BITS:
            m //= 2
            exponent += 1
        mults.append(m)
        shifts.append(ROUNDING_BITS - exponent)
    shape = np.asarray(real).shape
    return np.array(mults, np.int64).reshape(shape), np.array(shifts, np.int64).reshape(shape)


def _numpy(expr: Any) -> Optional[np.ndarray]:
    value = getattr(expr, "value", None)
    if value is None or not hasattr(value, "numpy"):
        return None
    array: np.ndarray = value.numpy()
    return array


def _op_name(expr: Any) -> str:
    op = getattr(expr, "op", None)
    return str(getattr(op, "name", "")) if op is not None and type(op).__name__ == "Op" else ""


def rewrite_qdq(mod: Any) -> Tuple[Any, List[str], List[str]]:
    """(module, the ops rewritten to integers, the quantized ops left in float32)."""
    from tvm import relax
    from tvm.relax import expr_functor

    def const(array: np.ndarray, dtype: str) -> Any:
        return relax.const(np.asarray(array).astype(dtype), dtype)

    @expr_functor.mutator
    class QdqToInteger(relax.PyExprMutator):
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.rewritten: List[str] = []
            self.kept: List[str] = []

        # -------------------------------------------------------------- matching helpers

        def defn(self, expr: Any) -> Any:
            if type(expr).__name__ in ("Var", "DataflowVar"):
                bound = self.lookup_binding(expr)
                return bound if bound is not None else expr
            return expr

        def dequantized(self, expr: Any, dtype: str = "int8") -> Optional[Tuple[Any, np.ndarray, np.ndarray, int]]:
            """(quantized value, scale, zero point, axis) when ``expr`` is dequantize(x of ``dtype``)."""
            call = self.defn(expr)
            if _op_name(call) != "relax.dequantize":
                return None
            scale, zero = _numpy(call.args[1]), _numpy(call.args[2])
            if scale is None or zero is None or str(call.args[0].ty.dtype) != dtype:
                return None
            return call.args[0], scale.astype(np.float64), zero.astype(np.int64), int(call.attrs.axis)

        def int8_const(self, expr: Any) -> Optional[np.ndarray]:
            array = _numpy(expr)
            return array if array is not None and array.dtype == np.int8 else None

        # -------------------------------------------------------------- integer pieces

        def clamp_int8(self, x: Any, lo: int, hi: int) -> Any:
            x = relax.op.minimum(relax.op.maximum(x, const(np.array(lo), "int64")), const(np.array(hi), "int64"))
            return relax.op.astype(x, "int8")

        def requantize(self, acc: Any, real: np.ndarray, zero: np.ndarray, lo: int, hi: int, channel_shape: Tuple[int, ...]) -> Any:
            mult, shift = fixed_point(real)
            if mult.size > 1:
                mult, shift = mult.reshape(channel_shape), shift.reshape(channel_shape)
            rounding = np.left_shift(np.int64(1), shift - 1)
            x = relax.op.multiply(relax.op.astype(acc, "int64"), const(mult, "int64"))
            x = relax.op.right_shift(relax.op.add(x, const(rounding, "int64")), const(shift, "int64"))
            x = relax.op.add(x, const(zero.reshape(()), "int64"))
            return self.clamp_int8(x, lo, hi)

        # -------------------------------------------------------------- patterns

        def conv_or_dense(self, y: Any) -> Optional[Tuple[Any, np.ndarray, str, int]]:
            """(int32 accumulator, its real scale, kind, rank) for [add(] conv2d|matmul [, bias)]."""
            call, bias = self.defn(y), None
            bias_shape: Tuple[int, ...]
            if _op_name(call) == "relax.add":
                core = self.defn(call.args[0])
                if _op_name(core) in ("relax.nn.conv2d", "relax.matmul"):
                    bias_expr = self.defn(call.args[1])
                    if _op_name(bias_expr) == "relax.reshape":
                        bias_expr = bias_expr.args[0]
                    bias = self.dequantized(bias_expr, "int32")
                    if bias is None:
                        return None
                    call = core
            name = _op_name(call)
            if name == "relax.nn.conv2d":
                x, w = self.dequantized(call.args[0]), self.dequantized(call.args[1])
                if x is None or w is None or np.any(w[2]) or x[2].size != 1:
                    return None
                weights = self.int8_const(w[0])
                if weights is None:
                    return None
                a = call.attrs
                top, left, bottom, right = (int(v) for v in a.padding)
                data, zero = self.visit_expr(x[0]), int(x[2])
                if top or left or bottom or right:  # pad with the zero point: a real 0, as the float conv padded
                    data = relax.op.nn.pad(data, [0, 0, 0, 0, top, bottom, left, right], "constant", float(zero))
                acc = relax.op.nn.conv2d(
                    data, const(weights, "int8"), strides=a.strides, padding=[0, 0, 0, 0],
                    dilation=a.dilation, groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                    out_dtype="int32",
                )
                correction = -zero * weights.astype(np.int64).sum(axis=(1, 2, 3))  # sum((x_q - z) w) = sum(x_q w) - z sum(w)
                real = x[1] * w[1]
                kind, bias_shape = "conv2d", (1, weights.shape[0], 1, 1)
            elif name == "relax.matmul":
                x = self.dequantized(call.args[0])
                rhs = self.defn(call.args[1])
                transposed = _op_name(rhs) == "relax.permute_dims"
                w = self.dequantized(rhs.args[0] if transposed else call.args[1])
                if x is None or w is None or np.any(w[2]) or x[2].size != 1:
                    return None
                weights = self.int8_const(w[0])
                if weights is None:
                    return None
                if transposed:
                    weights = np.ascontiguousarray(weights.T)
                acc = relax.op.matmul(self.visit_expr(x[0]), const(weights, "int8"), out_dtype="int32")
                correction = -int(x[2]) * weights.astype(np.int64).sum(axis=0)
                real = x[1] * w[1]
                kind, bias_shape = "dense", (1, weights.shape[1])
            else:
                return None
            total_bias = correction
            if bias is not None:
                bias_q = _numpy(bias[0])
                if bias_q is None or np.any(bias[2]) or not np.allclose(bias[1], real, rtol=1e-4):
                    return None  # a bias not in the accumulator's scale: leave it float
                total_bias = total_bias + bias_q.astype(np.int64)
            if np.any(total_bias):
                acc = relax.op.add(acc, const(total_bias.astype(np.int32).reshape(bias_shape), "int32"))
            return acc, np.asarray(real).reshape(-1), kind, len(bias_shape)

        def integer_for(self, y: Any, s_out: np.ndarray, z_out: np.ndarray) -> Optional[Tuple[Any, str]]:
            lo, hi = -128, 127
            call = self.defn(y)
            if _op_name(call) in ("relax.nn.relu", "relax.clip") and call.args and len(call.args) in (1, 3):
                # an activation between the op and its quantize: a clamp in the integer domain
                low = 0.0 if _op_name(call) == "relax.nn.relu" else float(call.args[1].value)
                high = math.inf if _op_name(call) == "relax.nn.relu" else float(call.args[2].value)
                lo = max(lo, int(np.round(low / s_out.item())) + int(z_out))
                if math.isfinite(high):
                    hi = min(hi, int(np.round(high / s_out.item())) + int(z_out))
                y = call.args[0]
                call = self.defn(y)
            found = self.conv_or_dense(y)
            if found is not None:
                acc, real, kind, rank = found
                channel_shape = (1, -1, 1, 1) if rank == 4 else (1, -1)
                return self.requantize(acc, real / s_out.item(), z_out, lo, hi, channel_shape), kind
            name = _op_name(call)
            if name == "relax.mean":
                x = self.dequantized(call.args[0])
                axes = sorted(int(a) for a in call.attrs.axis)
                shape = [int(d) for d in call.args[0].ty.shape]
                if x is None or x[1].size != 1 or len(shape) != 4 or axes != [2, 3] or not bool(call.attrs.keepdims):
                    return None
                n, c, h, w_ = shape
                count = h * w_
                rows = relax.op.reshape(self.visit_expr(x[0]), (n * c, count))
                sums = relax.op.matmul(rows, const(np.ones((count, 1), np.int8), "int8"), out_dtype="int32")
                total = relax.op.add(relax.op.reshape(sums, (n, c, 1, 1)), const(np.array(-int(x[2]) * count, np.int32), "int32"))
                return self.requantize(total, np.array(x[1].item() / (count * s_out.item())), z_out, lo, hi, ()), "mean"
            if name == "relax.add":
                return self.add(call, s_out, z_out, lo, hi)
            if name == "relax.nn.max_pool2d":
                x = self.dequantized(call.args[0])
                if x is None or not self.same_quantization(x, s_out, z_out):
                    return None  # max commutes with the quantization only at the same scale and zero point
                a = call.attrs
                return relax.op.nn.max_pool2d(
                    self.visit_expr(x[0]), pool_size=a.pool_size, strides=a.strides, padding=a.padding,
                    dilation=a.dilation, ceil_mode=a.ceil_mode, layout=a.layout,
                ), "max_pool2d"
            if name == "relax.nn.avg_pool2d":
                return self.avg_pool(call, s_out, z_out, lo, hi)
            if name == "relax.reshape":
                x = self.dequantized(call.args[0])
                if x is None or not self.same_quantization(x, s_out, z_out):
                    return None
                return relax.op.reshape(self.visit_expr(x[0]), call.args[1]), "reshape"
            return None

        def same_quantization(self, x: Tuple[Any, np.ndarray, np.ndarray, int], s_out: np.ndarray, z_out: np.ndarray) -> bool:
            return x[1].size == 1 and bool(np.isclose(x[1].item(), s_out.item())) and int(x[2]) == int(z_out)

        def add(self, call: Any, s_out: np.ndarray, z_out: np.ndarray, lo: int, hi: int) -> Optional[Tuple[Any, str]]:
            """Both sides rescaled to the output scale in int32 fixed point. In a residual net the
            branch that feeds only this add fuses it into its producer's epilogue, so the arena
            still holds int8; the other side is int8 already materialized for its other reader."""
            a, b = self.dequantized(call.args[0]), self.dequantized(call.args[1])
            if a is None or b is None or a[1].size != 1 or b[1].size != 1:
                return None
            one = float(1 << ADD_SHIFT)
            parts = []
            for x in (a, b):
                m = int(round(x[1].item() / s_out.item() * one))
                if not 0 < m < (1 << 22):
                    return None  # a scale ratio int32 cannot carry: leave it float
                shifted = relax.op.subtract(relax.op.astype(self.visit_expr(x[0]), "int32"), const(x[2].reshape(()), "int32"))
                parts.append(relax.op.multiply(shifted, const(np.array(m), "int32")))
            total = relax.op.add(relax.op.add(parts[0], parts[1]), const(np.array(1 << (ADD_SHIFT - 1)), "int32"))
            y = relax.op.add(relax.op.right_shift(total, const(np.array(ADD_SHIFT), "int32")), const(z_out.reshape(()), "int32"))
            y = relax.op.minimum(relax.op.maximum(y, const(np.array(lo), "int32")), const(np.array(hi), "int32"))
            return relax.op.astype(y, "int8"), "add"

        def avg_pool(self, call: Any, s_out: np.ndarray, z_out: np.ndarray, lo: int, hi: int) -> Optional[Tuple[Any, str]]:
            """An unpadded average pool as a depthwise conv with ones (int8 in, int32 sums), then a
            requantization by 1 / window; padded pools divide by a varying count: left float."""
            x = self.dequantized(call.args[0])
            a = call.attrs
            if x is None or x[1].size != 1 or any(int(v) for v in a.padding) or str(a.layout) != "NCHW" or bool(a.ceil_mode):
                return None
            if any(int(d) != 1 for d in a.dilation):
                return None
            channels = int(call.args[0].ty.shape[1])
            kh, kw = (int(v) for v in a.pool_size)
            ones = np.ones((channels, 1, kh, kw), np.int8)
            sums = relax.op.nn.conv2d(self.visit_expr(x[0]), const(ones, "int8"), strides=a.strides, padding=[0, 0, 0, 0],
                                      groups=channels, out_dtype="int32")
            sums = relax.op.add(sums, const(np.array(-int(x[2]) * kh * kw, np.int32), "int32"))
            return self.requantize(sums, np.array(x[1].item() / (kh * kw * s_out.item())), z_out, lo, hi, ()), "avg_pool2d"

        def visit_var_binding_(self, binding: Any) -> None:
            value = binding.value
            if _op_name(value) == "relax.quantize" and str(value.attrs.out_dtype) == "int8":
                s_out, z_out = _numpy(value.args[1]), _numpy(value.args[2])
                if s_out is not None and z_out is not None and s_out.size == 1:
                    found = self.integer_for(value.args[0], s_out.astype(np.float64), z_out.astype(np.int64))
                    if found is not None:
                        expr, kind = found
                        # an output of the dataflow block stays one (else the function's return
                        # would name a variable no binding defines any more)
                        output = not isinstance(binding.var, relax.DataflowVar)
                        new_var = self.builder_.emit_output(expr) if output else self.builder_.emit(expr)
                        self.set_var_remap(binding.var, new_var)
                        self.rewritten.append(kind)
                        return
                inner = self.defn(value.args[0])
                if _op_name(inner):
                    self.kept.append(_op_name(inner).rsplit(".", 1)[-1])
            super().visit_var_binding_(binding)

    rewriter = QdqToInteger(mod)
    main = rewriter.visit_expr(mod["main"])
    mod = mod.copy() if hasattr(mod, "copy") else mod
    mod["main"] = main
    mod = relax.transform.DeadCodeElimination(["main"])(mod)
    return mod, rewriter.rewritten, sorted(set(rewriter.kept))
