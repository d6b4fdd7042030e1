"""A compiled model's static plan: where every tensor lives and which kernels run in what order.

Why a plan of our own instead of TVM's executors: microTVM's AOT executor left with microTVM,
and a microcontroller wants exactly this and nothing more: one arena laid out ahead of time, the
weights as constants in flash, a workspace sized for the hungriest kernel, and a fixed list of
calls (TFLite Micro's model, without its interpreter). The plan is plain data (JSON in the Model
Library Format as ``plan.json``), so a tool or a reader can check what the firmware will do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .dtypes import parse_dtype

ARENA_ALIGN = 16


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

    @property
    def display_name(self) -> str:
        return self.model_name or self.name

    def facts(self) -> Dict[str, Any]:
        """What an application needs to feed or read this tensor: the model's name for it, the
        C name used in the generated code, dtype and shape."""
        return {"name": self.display_name, "c_name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @property
    def nbytes(self) -> int:
        return nbytes(self.shape, self.dtype)


@dataclass(frozen=True)
class Call:
    """One kernel call: its arguments are slots (by name), outputs last as TVM's DPS has them."""

    kernel: str
    args: Tuple[str, ...]
    workspace_bytes: int = 0


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
            return out

        return {
            "inputs": [slot(t) for t in self.inputs],
            "outputs": [slot(t) for t in self.outputs],
            "constants": [slot(t) for t in self.constants],
            "tensors": [slot(t) for t in self.tensors.values()],
            "calls": [{"kernel": c.kernel, "args": list(c.args), "workspace_bytes": c.workspace_bytes} for c in self.calls],
            "arena_bytes": self.arena_bytes,
            "copies": [list(c) for c in self.copies],
            "summary": self.summary(),
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Plan":
        def slot(d: Dict[str, Any]) -> TensorSlot:
            return TensorSlot(d["name"], tuple(d["shape"]), d["dtype"], d["kind"], int(d.get("index", 0)),
                              int(d.get("offset", 0)), str(d.get("model_name", "")))

        summary = data.get("summary", {})
        return cls(
            inputs=[slot(d) for d in data["inputs"]],
            outputs=[slot(d) for d in data["outputs"]],
            constants=[slot(d) for d in data["constants"]],
            tensors={d["name"]: slot(d) for d in data["tensors"]},
            calls=[Call(c["kernel"], tuple(c["args"]), int(c.get("workspace_bytes", 0))) for c in data["calls"]],
            arena_bytes=int(data["arena_bytes"]),
            copies=[(a, b) for a, b in data.get("copies", [])],
            operators=dict(summary.get("operators", {})),
            float_ops=list(summary.get("float_operators", [])),
            integer_ops=list(summary.get("integer_operators", [])),
        )

    def name_models(self, model_names: Dict[str, str]) -> None:
        """Records what the model calls each input and output (``model_names``: C name -> model name)."""
        from dataclasses import replace

        for group in (self.inputs, self.outputs):
            for i, t in enumerate(group):
                if t.name in model_names:
                    group[i] = replace(t, model_name=model_names[t.name])
                    if t.name in self.tensors:
                        self.tensors[t.name] = group[i]

    def slot(self, name: str) -> Optional[TensorSlot]:
        return self.tensors.get(name)
