"""Is a scheduled kernel the same function as the kernel TVM lowered by default? Checked by
running both on the same probe arguments, exactly.

Why probes and not one random input: a wrong schedule usually errs somewhere specific (the
border a fused pad adds, the tail of a split loop, a saturation), so the probes are built to
reach those: several seeds of values over the whole int8 range with its extremes in the first
and last elements, an all-minimum and an all-maximum input, and an output buffer filled with
poison before every call (a kernel that leaves part of its output unwritten cannot pass by
inheriting the reference's values). Constant arguments (weights, per-channel multipliers and
shifts) are the model's own: random multipliers or shift amounts would be undefined behaviour,
not a test. Integer outputs must be equal; float outputs equal to 1e-5 of their scale.

The host checks run the kernels compiled by apache-tvm's LLVM backend (``llvm`` target), on this
machine; the tuner runs the same probes on the board.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import ModelError

SEEDS = (0, 1, 2)
POISON = 0x5A


def probe_arguments(params: Sequence[Any], constants: Mapping[int, np.ndarray]) -> Iterator[List[np.ndarray]]:
    """Argument lists for a kernel of ``params`` (shape, dtype per argument; the last is the
    output): every seed, then all-minimum and all-maximum inputs (see the module docstring)."""
    shapes = [tuple(int(d) for d in p.shape) for p in params]
    dtypes = [str(p.dtype) for p in params]
    for probe in list(SEEDS) + ["min", "max"]:
        rng = np.random.default_rng(probe if isinstance(probe, int) else 7)
        args = []
        for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
            if i == len(shapes) - 1:
                args.append(poison(shape, dtype))
            elif i in constants:
                args.append(np.asarray(constants[i]).reshape(shape).astype(dtype))
            else:
                args.append(_values(rng, shape, dtype, probe))
        yield args


def poison(shape: Sequence[int], dtype: str) -> np.ndarray:
    """An output buffer no kernel would compute: bytes 0x5A (floats: NaN)."""
    if np.dtype(dtype).kind == "f":
        return np.full(shape, np.nan, dtype)
    return np.frombuffer(bytes([POISON]) * int(np.prod(shape) * np.dtype(dtype).itemsize), dtype).reshape(shape).copy()


def _values(rng: np.random.Generator, shape: Sequence[int], dtype: str, probe: Any) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        if probe == "min":
            return np.full(shape, -4.0, dtype)
        if probe == "max":
            return np.full(shape, 4.0, dtype)
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    lo, hi = max(int(info.min), -128), min(int(info.max), 127)  # int8 activations; wider types stay small
    if probe == "min":
        return np.full(shape, lo, dtype)
    if probe == "max":
        return np.full(shape, hi, dtype)
    values = rng.integers(lo, hi + 1, shape).astype(dtype)
    flat = values.reshape(-1)
    if flat.size >= 2:
        flat[0], flat[-1] = lo, hi
    return values


def outputs_match(got: np.ndarray, want: np.ndarray) -> bool:
    """Integers exactly; floats to 1e-5 of the reference's scale (NaN where both are NaN)."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind == "f":
        scale = max(1.0, float(np.nanmax(np.abs(want))) if want.size and not np.all(np.isnan(want)) else 1.0)
        return bool(np.allclose(got, want, rtol=0, atol=1e-5 * scale, equal_nan=True))
    return bool(np.array_equal(got, want))


def host_available() -> bool:
    import tvm

    return bool(tvm.runtime.enabled("llvm"))


def same_on_host(reference: Any, candidate: Any, constants: Mapping[int, np.ndarray]) -> Optional[str]:
    """None when ``candidate`` computes what ``reference`` computes on every probe; else what
    differed, in words. Raises ModelError when this apache-tvm cannot run kernels on the host."""
    import tvm

    if not host_available():
        raise ModelError("this apache-tvm has no LLVM backend, so tuned kernels cannot be checked on the host; "
                         "compile without --records")
    ref = tvm.compile(reference.with_attr("global_symbol", "main"), target="llvm")
    cand = tvm.compile(candidate.with_attr("global_symbol", "main"), target="llvm")
    for n, args in enumerate(probe_arguments(list(reference.params), constants)):
        want = [tvm.runtime.tensor(a) for a in args]
        got = [tvm.runtime.tensor(a) for a in args]
        ref(*want)
        cand(*got)
        w, g = want[-1].numpy(), got[-1].numpy()
        if not outputs_match(g, w):
            bad = int(np.sum(g != w)) if g.dtype.kind != "f" else int(np.sum(~np.isclose(g, w, equal_nan=True)))
            return f"{bad} of {w.size} outputs differ on probe {n}"
    return None


def constants_by_param(calls: Sequence[Any], constants: Dict[str, np.ndarray]) -> Dict[str, Dict[int, np.ndarray]]:
    """Per kernel, the constant arguments of its first call, by parameter position (``calls``:
    (kernel, argument slot names); ``constants``: slot name -> its values)."""
    found: Dict[str, Dict[int, np.ndarray]] = {}
    for kernel, args in calls:
        if kernel in found:
            continue
        found[kernel] = {i: constants[a] for i, a in enumerate(args) if a in constants}
    return found
