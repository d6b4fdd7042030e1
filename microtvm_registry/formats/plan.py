"""A compiled model's static plan: where every tensor lives and which kernels run in what order.

Why a plan of our own instead of TVM's executors: microTVM's AOT executor left with microTVM,
and a microcontroller wants exactly this and nothing more: one arena laid out ahead of time, the
weights as constants in flash, a workspace sized for the hungriest kernel, and a fixed list of
calls (TFLite Micro's model, without its interpreter). The plan is plain data (JSON in the Model
Library Format as ``plan.json``), so a tool or a reader can check what the firmware will do.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ModelError
from .dtypes import parse_dtype

ARENA_ALIGN = 16
PLAN_FILE = "plan.json"  # where an MLF of a compiled model carries its plan


def nbytes(shape: Tuple[int, ...], dtype: str) -> int:
    _code, bits, lanes = parse_dtype(dtype)
    count = 1
    for dim in shape:
        count *= int(dim)
    return count * ((bits * lanes + 7) // 8)


@dataclass(frozen=True)
class TensorSlot:
    """A tensor of the plan: an input, an output, a constant, or a piece of the arena."""

    name: str
    shape: Tuple[int, ...]
    dtype: str
    kind: str  # "input" | "output" | "constant" | "arena"
    index: int = 0  # input / output / constant number
    offset: int = 0  # arena: byte offset in the arena
    model_name: str = ""  # inputs and outputs: what the model calls it (``name`` is the C-safe one)
    scale: Optional[float] = None  # quantized inputs and outputs: real = scale * (q - zero_point)
    zero_point: Optional[int] = None

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)

    @property
    def display_name(self) -> str:
        return self.model_name or self.name

    def facts(self) -> Dict[str, Any]:
        """What an application needs to feed or read this tensor: the model's name for it, the
        C name used in the generated code, dtype, shape, and a quantized one's scale and zero point."""
        out: Dict[str, Any] = {"name": self.display_name, "c_name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.scale is not None:
            out.update(scale=self.scale, zero_point=self.zero_point)
        return out


@dataclass(frozen=True)
class TensorFacts:
    """What a frontend knows of an input or output before lowering: the model's name for it, the
    C name it gets, and a quantized tensor's scale and zero point (dtype and shape, where a
    frontend knows them; the plan's are what count)."""

    name: str
    c_name: str
    dtype: str = ""
    shape: Tuple[int, ...] = ()
    scale: Optional[float] = None
    zero_point: Optional[int] = None


@dataclass(frozen=True)
class Call:
    """One planned call: a kernel of ``provider`` (``tvm``: a TVM-generated kernel; a library such
    as CMSIS-NN), its arguments as slots (by name), outputs last as TVM's DPS has them."""

    kernel: str
    args: Tuple[str, ...]
    workspace_bytes: int = 0
    provider: str = "tvm"


@dataclass
class Plan:
    inputs: List[TensorSlot]
    outputs: List[TensorSlot]
    constants: List[TensorSlot]
    tensors: Dict[str, TensorSlot]  # every slot a call names, by name
    calls: List[Call]
    arena_bytes: int
    copies: List[Tuple[str, str]] = field(default_factory=list)  # (output, source slot) after the calls
    operators: Dict[str, int] = field(default_factory=dict)  # ONNX op type -> count
    float_ops: List[str] = field(default_factory=list)  # a quantized model: operators left in float32
    integer_ops: List[str] = field(default_factory=list)  # a quantized model: operators run in integers

    @property
    def workspace_bytes(self) -> int:
        return max((c.workspace_bytes for c in self.calls), default=0)

    @property
    def weights_bytes(self) -> int:
        return sum(c.nbytes for c in self.constants)

    def summary(self) -> Dict[str, Any]:
        return {
            "operators": dict(sorted(self.operators.items())),
            "kernels": len({c.kernel for c in self.calls}),
            "calls_by_provider": dict(sorted(Counter(c.provider for c in self.calls).items())),
            "calls": len(self.calls),
            "weights_bytes": self.weights_bytes,
            "arena_bytes": self.arena_bytes,
            "workspace_bytes": self.workspace_bytes,
            "io_bytes": sum(t.nbytes for t in self.inputs + self.outputs),
            "float_operators": list(self.float_ops),
            "integer_operators": list(self.integer_ops),
            "inputs": [t.facts() for t in self.inputs],
            "outputs": [t.facts() for t in self.outputs],
        }

    def to_json(self) -> Dict[str, Any]:
        def slot(t: TensorSlot) -> Dict[str, Any]:
            out = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "kind": t.kind, "index": t.index, "offset": t.offset}
            if t.model_name and t.model_name != t.name:
                out["model_name"] = t.model_name
            if t.scale is not None:
                out.update(scale=t.scale, zero_point=t.zero_point)
            return out

        return {
            "inputs": [slot(t) for t in self.inputs],
            "outputs": [slot(t) for t in self.outputs],
            "constants": [slot(t) for t in self.constants],
            "tensors": [slot(t) for t in self.tensors.values()],
            "calls": [
                {"kernel": c.kernel, "provider": c.provider, "args": list(c.args), "workspace_bytes": c.workspace_bytes}
                for c in self.calls
            ],
            "arena_bytes": self.arena_bytes,
            "copies": [list(c) for c in self.copies],
            "summary": self.summary(),
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Plan":
        def slot(d: Dict[str, Any]) -> TensorSlot:
            scale = d.get("scale")
            return TensorSlot(d["name"], tuple(d["shape"]), d["dtype"], d["kind"], int(d.get("index", 0)),
                              int(d.get("offset", 0)), str(d.get("model_name", "")),
                              None if scale is None else float(scale), None if scale is None else int(d.get("zero_point", 0)))

        summary = data.get("summary", {})
        return cls(
            inputs=[slot(d) for d in data["inputs"]],
            outputs=[slot(d) for d in data["outputs"]],
            constants=[slot(d) for d in data["constants"]],
            tensors={d["name"]: slot(d) for d in data["tensors"]},
            calls=[
                Call(c["kernel"], tuple(c["args"]), int(c.get("workspace_bytes", 0)), str(c.get("provider", "tvm")))
                for c in data["calls"]
            ],
            arena_bytes=int(data["arena_bytes"]),
            copies=[(a, b) for a, b in data.get("copies", [])],
            operators=dict(summary.get("operators", {})),
            float_ops=list(summary.get("float_operators", [])),
            integer_ops=list(summary.get("integer_operators", [])),
        )

    def describe_io(self, facts: Sequence[TensorFacts]) -> None:
        """Records on each input and output (matched by C name) the model's name for it and its
        quantization, so the facts an application reads come with the plan."""
        from dataclasses import replace

        by_c_name = {f.c_name: f for f in facts}
        for group in (self.inputs, self.outputs):
            for i, t in enumerate(group):
                f = by_c_name.get(t.name)
                if f is not None:
                    group[i] = replace(t, model_name=f.name, scale=f.scale, zero_point=f.zero_point)
                    if t.name in self.tensors:
                        self.tensors[t.name] = group[i]

    def slot(self, name: str) -> Optional[TensorSlot]:
        return self.tensors.get(name)


def load_plan(mlf_dir: Path) -> Optional[Plan]:
    """The plan of an extracted MLF folder, or None for an MLF of kernels only. A plan.json we
    were handed is checked as it is read: anything malformed is one line naming the file."""
    from .mlf import DEFAULT_MAX_JSON_BYTES, MAX_JSON_ENV, byte_limit, parse_json, read_limited

    path = Path(mlf_dir) / PLAN_FILE
    if not os.path.lexists(path):
        return None
    data = parse_json(read_limited(path, str(path), byte_limit(MAX_JSON_ENV, DEFAULT_MAX_JSON_BYTES, ModelError), ModelError),
                      str(path), ModelError)
    try:
        plan = Plan.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        raise ModelError(f"{path} is not a plan microtvm-registry wrote ({type(err).__name__}: {err}); re-export the model") from None
    sizes = [plan.arena_bytes] + [c.workspace_bytes for c in plan.calls]
    if any(size < 0 for size in sizes):
        raise ModelError(f"{path} gives a negative size; re-export the model")
    return plan


def project_workspace_bytes(model_dir: Path, given: Optional[int], default: int) -> int:
    """The workspace a template's device program should give generated code.

    For a compiled whole model it is what the plan says the hungriest kernel needs (the model
    then runs in the device's workspace: templates build with MTVM_MODEL_SHARED_WORKSPACE), so
    none is guessed and none is paid for twice; a ``given`` size below that is refused, naming
    both. For kernels only, ``given`` or the template's ``default``.
    """
    plan = load_plan(model_dir)
    if plan is None:
        return default if given is None else given
    need = plan.workspace_bytes
    if given is None:
        return need
    if given < need:
        raise ModelError(
            f"workspace_size_bytes={given} is less than the model's plan needs ({need} bytes); "
            f"pass -o workspace_size_bytes={need} or more (or leave it out where the template sizes it from the plan)"
        )
    return given
