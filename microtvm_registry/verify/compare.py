"""How close a project's outputs are to the reference's, and how close they must be: the
tolerance the model's arithmetic promises (TFLite int8: the same bits; TFLite float: 1e-5 x
max(1, max |reference|); ONNX QDQ int8: one step, since onnxruntime rounds its float32
requantization half to even and we a fixed-point product half up, and a QDQ model's float output
one int8 step of its range; ONNX float: 1e-4 x max(1, max |reference|))."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple


@dataclass
class OutputCheck:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    max_diff: float  # in steps (integers) or units (floats), over every sample
    tolerance: float
    unit: str  # "steps" or "units"
    differing: int  # values beyond the tolerance, over every sample
    values: int
    top1_agree: Optional[int] = None  # samples whose argmax over the last axis agrees (classifier-like outputs)
    top1_total: Optional[int] = None

    @property
    def ok(self) -> bool:
        return self.differing == 0

    def to_json(self) -> Dict[str, Any]:
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["ok"] = self.ok
        return out


def tolerance(fmt: str, arithmetic: str, dtype: str, reference: Any, step: Optional[float] = None) -> Tuple[float, str]:
    """The largest difference the arithmetic allows for one output, and its unit. ``step``: the
    int8 step of a QDQ model's float output (the scale of the DequantizeLinear that makes it)."""
    import numpy as np

    if np.dtype(dtype).kind in "iu":
        return (1.0 if fmt == "onnx" and arithmetic == "onnxruntime" else 0.0), "steps"
    scale = max(1.0, float(np.max(np.abs(reference)))) if np.size(reference) else 1.0
    if fmt == "onnx" and arithmetic == "onnxruntime" and np.size(reference):
        # A QDQ model's float output carries its int8 layers' rounding: one step of its own
        # quantization, or where no DequantizeLinear makes it, one int8 step of its range.
        if step is None:
            step = (float(np.max(reference)) - float(np.min(reference))) / 255.0
        return max(1e-4 * scale, step * (1 + 1e-6)), "units"
    return (1e-4 if fmt == "onnx" else 1e-5) * scale, "units"


def compare_output(name: str, fmt: str, arithmetic: str, got: Sequence[Any], want: Sequence[Any],
                   step: Optional[float] = None) -> OutputCheck:
    """One output over every sample (``got`` and ``want``: one array per sample)."""
    import numpy as np

    first = want[0]
    worst, differing, values, agree = 0.0, 0, 0, 0
    limit_all = 0.0
    unit = "steps"
    classifier = first.ndim >= 1 and first.shape[-1] > 1
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise ValueError(f"output {name} is {g.shape} on the device and {w.shape} in the reference")
        limit, unit = tolerance(fmt, arithmetic, str(w.dtype), w, step)
        limit_all = max(limit_all, limit)
        diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
        differing += int((diff > limit).sum())
        values += int(diff.size)
        if classifier:
            agree += int(np.sum(np.argmax(g, axis=-1) == np.argmax(w, axis=-1)) == np.prod(g.shape[:-1]))
    return OutputCheck(name, str(first.dtype), tuple(int(d) for d in first.shape), worst, limit_all, unit, differing, values,
                       agree if classifier else None, len(want) if classifier else None)


def verdict(checks: List[OutputCheck], samples: int, reference: str) -> str:
    bad = [c for c in checks if not c.ok]
    if not bad:
        return f"OK: {len(checks)} output(s) equal {reference}'s within the model's tolerance on {samples} sample(s)"
    c = bad[0]
    return (f"DIFFERENT: output {c.name} is off by up to {c.max_diff:g} {c.unit} (tolerance {c.tolerance:g}) in {c.differing} "
            f"of {c.values} values; rebuild the project from this model, or report it")
