"""TFLite's integer arithmetic, twice: in Python for what is known when compiling (the quantized
multipliers and shifts of a layer), and as TIR expressions for what a kernel computes on the
device (requantization, gemmlowp's fixed-point exp and reciprocal).

Both follow TFLite Micro's double-rounding build (TFLITE_SINGLE_ROUNDING undefined, its
default), so an int8 layer gives the bits TFLite Micro's reference kernels give:

* a real multiplier becomes a Q31 integer and a shift with ``frexp``; the mantissa is rounded
  half away from zero (``std::round``), 2**31 becomes 2**30 with the shift one higher, and a shift
  below -31 flushes the multiplier to zero (QuantizeMultiplier);
* ``x * multiplier`` is SaturatingRoundingDoublingHighMul: the 64-bit product, nudged by 2**30 (or
  1 - 2**30 when negative), divided by 2**31 truncating toward zero, INT32_MIN squared saturating;
* the shift is then RoundingDivideByPOT: an arithmetic shift right rounding half away from zero
  (MultiplyByQuantizedMultiplier: a positive shift is applied to ``x`` first, as a left shift);
* gemmlowp's FixedPoint<int32, N> operations are plain int32 adds, SRDHM products, and
  saturating/rounding multiplications by powers of two.

On the device, short formulas are plain TIR expressions (a value used twice is written twice;
the C compiler merges them). The long chains (gemmlowp's exp, reciprocal, leading zeros) are
built from elementwise stages (:class:`Stages`), one TE computation per step: written as one
expression, a select chain copies its operand once per use, doubling at every step, and TIR's
``Let`` is not an option (TVM's simplifier takes minutes on nested Lets, and Relax's emit_te
rewrites them to int64). Nothing here imports tvm at module level.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Tuple

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------ compile time (Python)


def tflite_round(value: float) -> int:
    """``std::round``: half away from zero (Python's round() is half to even)."""
    return int(math.floor(abs(value) + 0.5)) * (1 if value >= 0 else -1)


def quantize_multiplier(real: float) -> Tuple[int, int]:
    """(Q31 multiplier, shift) of a real multiplier, as TFLite's QuantizeMultiplier."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    q = tflite_round(mantissa * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int) -> int:
    """The Python twin of :func:`mbqm` (used at compile time, and by tests of the TIR)."""
    left, right = max(shift, 0), max(-shift, 0)
    return rounding_divide_by_pot(srdhm(wrap32(x * (1 << left)), multiplier), right)


def srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    total = ab + nudge
    return int(abs(total) // (1 << 31)) * (1 if total >= 0 else -1)


def rounding_divide_by_pot(x: int, exponent: int) -> int:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def wrap32(x: int) -> int:
    """An integer as C's int32 holds it (two's complement wrap)."""
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


# ------------------------------------------------------------------ on the device (TIR)


def _tir() -> Any:
    from tvm import tirx

    return tirx


def dtype_of(expr: Any) -> str:
    """A TIR expression's element type (apache-tvm 0.27 calls it ``ty``; older ``dtype``)."""
    return str(getattr(expr, "ty", None) or expr.dtype)


def i32(value: Any) -> Any:
    tirx = _tir()
    return tirx.const(value, "int32") if isinstance(value, int) else (value if dtype_of(value) == "int32" else value.astype("int32"))


def i64(value: Any) -> Any:
    tirx = _tir()
    return tirx.const(value, "int64") if isinstance(value, int) else value.astype("int64")


def select(cond: Any, then: Any, otherwise: Any) -> Any:
    return _tir().Select(cond, then, otherwise)


def tir_srdhm(a: Any, b: Any, saturate: bool = True) -> Any:
    """SaturatingRoundingDoublingHighMul of two int32 values (int32 result). ``saturate=False``
    where ``b`` can never be INT32_MIN (a quantized multiplier is >= 0), to spare a compare."""
    tirx = _tir()
    ab = i64(a) * i64(b)
    nudge = select(ab >= i64(0), i64(1 << 30), i64(1 - (1 << 30)))
    product = tirx.truncdiv(ab + nudge, i64(1 << 31)).astype("int32")
    if not saturate:
        return product
    return select(tirx.all(a == i32(INT32_MIN), b == i32(INT32_MIN)), i32(INT32_MAX), product)


def tir_rdbpot(x: Any, exponent: Any) -> Any:
    """RoundingDivideByPOT of int32 ``x`` by ``2**exponent`` (0 <= exponent <= 31)."""
    tirx = _tir()
    e = i32(exponent)
    if isinstance(exponent, int):
        if exponent == 0:
            return x
        mask = i32((1 << exponent) - 1)
        half = i32(((1 << exponent) - 1) >> 1)
    else:
        mask = (i32(1) << e) - i32(1)
        half = mask >> i32(1)
    threshold = half + select(x < i32(0), i32(1), i32(0))
    return (x >> e) + select(tirx.bitwise_and(x, mask) > threshold, i32(1), i32(0))


def mbqm(x: Any, multiplier: Any, shift: Any) -> Any:
    """MultiplyByQuantizedMultiplier(int32 x, int32 multiplier, int shift), TFLite's double
    rounding: left shift first (max(shift, 0)), then SRDHM, then RoundingDivideByPOT(max(-shift, 0))."""
    tirx = _tir()
    m = i32(multiplier) if isinstance(multiplier, int) else multiplier
    if isinstance(shift, int):
        left, right = max(shift, 0), max(-shift, 0)
        return tir_rdbpot(tir_srdhm(x if left == 0 else x * i32(1 << left), m, saturate=False), right)
    return tir_rdbpot(tir_srdhm(x * (i32(1) << tirx.max(shift, i32(0))), m, saturate=False), tirx.max(i32(0) - shift, i32(0)))


def srmbpot(x: Any, exponent: int) -> Any:
    """gemmlowp's SaturatingRoundingMultiplyByPOT<exponent> on int32: a saturating left shift,
    or a rounding right shift."""
    if exponent == 0:
        return x
    if exponent < 0:
        return tir_rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return select(x > i32(threshold), i32(INT32_MAX), select(x < i32(-threshold), i32(INT32_MIN), x << i32(exponent)))


class Stages:
    """Elementwise steps over one shape, each a TE computation whose inputs are earlier steps
    (see the module docstring): ``st.map(fn, a, b)`` is the tensor of ``fn(a[i], b[i])``."""

    def __init__(self, shape: Any, prefix: str) -> None:
        self.shape = shape
        self.prefix = prefix
        self.count = 0

    def map(self, fn: Callable[..., Any], *tensors: Any) -> Any:
        from tvm import te

        self.count += 1
        return te.compute(self.shape, lambda *i: fn(*(t[i] for t in tensors)), name=f"{self.prefix}{self.count}")


# gemmlowp FixedPoint<int32, N>: raw int32 values; the integer bits only change the constants.

def fp_one(integer_bits: int) -> int:
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def fp_constant_pot(integer_bits: int, exponent: int) -> int:
    return 1 << (31 - integer_bits + exponent)


def rescale(x: Any, src_bits: int, dst_bits: int) -> Any:
    return srmbpot(x, src_bits - dst_bits)


#: gemmlowp's barrel shifter: exp(-2**k) in Q0.31 for k = -2..4.
_EXP_STEPS = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(st: Stages, a: Any, integer_bits: int) -> Any:
    """gemmlowp's exp of a FixedPoint<int32, integer_bits> tensor ``a`` (values <= 0): a Q0.31
    tensor. exp(x) on [-1/4, 0) by a Taylor series around -1/8, then the barrel shifter."""
    fractional = 31 - integer_bits
    quarter = fp_constant_pot(integer_bits, -2)
    constant_term, one_third = i32(1895147668), i32(715827883)  # exp(-1/8); 1/3
    mod = st.map(lambda v: _tir().bitwise_and(v, i32(quarter - 1)) - i32(quarter), a)
    x = st.map(lambda m: rescale(m, integer_bits, 0) + i32(fp_constant_pot(0, -3)), mod)
    x2 = st.map(lambda v: tir_srdhm(v, v), x)
    x3 = st.map(tir_srdhm, x2, x)
    x4_over_4 = st.map(lambda v: srmbpot(tir_srdhm(v, v), -2), x2)
    poly = st.map(lambda q, c, s: srmbpot(tir_srdhm(q + c, one_third) + s, -1), x4_over_4, x3, x2)
    result = st.map(lambda v, p: constant_term + tir_srdhm(constant_term, v + p), x, poly)
    for exponent, multiplier in _EXP_STEPS:
        if integer_bits > exponent:
            bit = i32(1 << (fractional + exponent))
            result = st.map(lambda r, m, v, bit=bit, multiplier=multiplier: select(
                _tir().bitwise_and(m - v, bit) != i32(0), tir_srdhm(r, i32(multiplier)), r), result, mod, a)
    if integer_bits > 5:
        clamp = i32(-(1 << (36 - integer_bits)))
        result = st.map(lambda r, v: select(v < clamp, i32(0), r), result, a)
    return st.map(lambda r, v: select(v == i32(0), i32(fp_one(0)), r), result, a)


def one_over_one_plus_x_for_x_in_0_1(st: Stages, a: Any) -> Any:
    """gemmlowp's 1 / (1 + a) for a Q0.31 tensor ``a`` in [0, 1): Q0.31 (Newton-Raphson, three
    steps, in Q2.29)."""
    tirx = _tir()
    c48_17, cneg32_17, one_q2 = i32(1515870810), i32(-1010580540), i32(fp_one(2))

    def rounding_half_sum(v: Any) -> Any:  # (a + One) / 2, rounded away from zero, in int64
        total = i64(v) + i64(fp_one(0))
        return tirx.truncdiv(total + select(total >= i64(0), i64(1), i64(-1)), i64(2)).astype("int32")

    half = st.map(rounding_half_sum, a)
    x = st.map(lambda h: c48_17 + tir_srdhm(h, cneg32_17), half)
    for _ in range(3):
        # One - half * x as a step of its own: inside one expression TVM's simplifier folds the
        # saturation test "One - y == INT32_MIN" into "y == One - INT32_MIN", a constant int32 cannot hold
        remaining = st.map(lambda v, h: one_q2 - tir_srdhm(h, v), x, half)
        x = st.map(lambda v, d: v + srmbpot(tir_srdhm(v, d), 2), x, remaining)
    return st.map(lambda v: srmbpot(v, 1), x)  # Rescale<0>(ExactMulByPot<-1>(x)): Q2.29 read as Q1.30, to Q0.31


def clz32(st: Stages, x: Any) -> Any:
    """Leading zero bits of an int32 tensor taken as uint32 (32 for 0), by binary search."""
    tirx = _tir()
    zero = tirx.const(0, "uint32")
    value = st.map(lambda v: v.astype("uint32"), x)
    count = st.map(lambda v: i32(0), x)
    for bits in (16, 8, 4, 2, 1):
        moved = st.map(lambda v: ((v >> tirx.const(32 - bits, "uint32")) == zero).astype("int32"), value)
        count = st.map(lambda c, m, bits=bits: c + m * i32(bits), count, moved)
        value = st.map(lambda v, m, bits=bits: select(m != i32(0), v << tirx.const(bits, "uint32"), v), value, moved)
    return st.map(lambda c, v: select(v.astype("int32") == i32(0), i32(32), c), count, x)
