"""From TVM's Relax module to a static plan and one C module of kernels (apache-tvm 0.27).

The steps, and why each: ``DecomposeOpsForInference`` and the "zero" pipeline fuse operators into
PrimFuncs and fold the weights into constants; ``CallTIRRewrite`` turns ``main`` into direct
kernel calls with explicit outputs; ``StaticPlanBlockMemory`` gives every intermediate tensor a
storage and an offset. Walking ``main``'s bindings then reads the plan off the IR: TVM's JSON
serializer crashes in the 0.27 wheel, so nothing is saved and re-read. The kernels are built by
the ``tvm`` kernel provider (kernels/tvm.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelError
from ..formats.mlf import ArgInfo, FunctionInfo, workspace_needs
from ..formats.plan import ARENA_ALIGN, Call, Plan, TensorSlot
from ..targets import tvm_target
from .kernels.tvm import build_kernels, kernel_funcs


def _align(n: int, to: int = ARENA_ALIGN) -> int:
    return (n + to - 1) // to * to


def _ints(shape_expr: Any) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in shape_expr.values)
    except (TypeError, ValueError):
        raise ModelError(f"the lowered model has a symbolic shape {shape_expr}; give every input a static --input shape") from None


def _kind(expr: Any) -> str:
    name = type(expr).__name__
    if hasattr(expr, "op") and hasattr(expr, "args"):
        return "call"
    if name in ("Var", "DataflowVar"):
        return "var"
    if name in ("GenericConst", "Constant") and hasattr(getattr(expr, "value", None), "numpy"):
        return "constant"
    if name == "Tuple":
        return "tuple"
    return name


class _PlanReader:
    """Reads the plan off ``main`` after StaticPlanBlockMemory (see the module docstring)."""

    def __init__(self, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.slots: Dict[str, TensorSlot] = {}
        self.alias: Dict[str, str] = {}
        self.storages: Dict[str, int] = {}  # var -> bytes, in allocation order
        self.pending_arena: Dict[str, Tuple[str, int, Tuple[int, ...], str]] = {}
        self.pending_output: Dict[str, Tuple[Tuple[int, ...], str]] = {}
        self.constants: List[Tuple[Any, TensorSlot]] = []
        self.calls: List[Tuple[str, List[str]]] = []
        self.extern: set = set()  # calls of library wrappers (call_dps_packed), not TVM kernels
        self.tuples: Dict[str, List[str]] = {}  # a call's several outputs, bound together

    def constant(self, expr: Any) -> str:
        for known, slot in self.constants:
            if known.same_as(expr):
                return slot.name
        array = expr.value.numpy()
        slot = TensorSlot(f"const{len(self.constants)}", tuple(int(d) for d in array.shape), str(array.dtype), "constant", len(self.constants))
        self.constants.append((expr, slot))
        self.slots[slot.name] = slot
        return slot.name

    def ref(self, expr: Any) -> str:
        kind = _kind(expr)
        if kind == "var":
            name = str(expr.name)
            return self.alias.get(name, name)
        if kind == "constant":
            return self.constant(expr)
        raise ModelError(f"a kernel of the lowered model takes a {type(expr).__name__} argument, which the static plan cannot pass")

    def read(self, main: Any) -> Tuple[List[TensorSlot], List[TensorSlot], Dict[str, Any]]:
        inputs = []
        for i, param in enumerate(main.params):
            ty = param.ty
            shape = tuple(int(d) for d in ty.shape)
            name = self.input_names[i] if i < len(self.input_names) else str(param.name)
            slot = TensorSlot(name, shape, str(ty.dtype), "input", i)
            self.slots[name] = slot
            self.alias[str(param.name)] = name
            inputs.append(slot)
        for block in main.body.blocks:
            for binding in block.bindings:
                self.binding(str(binding.var.name), binding.value)
        layout = self.layout()  # before the outputs: an output may be an arena tensor, placed by the layout
        return inputs, self.outputs(main.body.body), layout

    def binding(self, var: str, value: Any) -> None:
        kind = _kind(value)
        if kind == "var":
            self.alias[var] = self.ref(value)
            return
        if kind == "constant":
            self.alias[var] = self.constant(value)
            return
        if kind == "tuple":
            self.tuples[var] = [self.ref(field) for field in value.fields]
            return
        if type(value).__name__ == "TupleGetItem":
            self.alias[var] = self.tuples[self.ref(value.tuple_value)][int(value.index)]
            return
        if kind != "call":
            raise ModelError(f"the lowered model binds {var} to a {type(value).__name__}, which the static plan cannot hold")
        op = value.op
        if type(op).__name__ == "GlobalVar":
            self.calls.append((str(op.name_hint), [self.ref(a) for a in value.args]))
            return
        if type(op).__name__ == "ExternFunc":
            symbol = str(op.global_symbol)
            self.extern.add(symbol)
            self.calls.append((symbol, [self.ref(a) for a in value.args]))
            return
        name = str(getattr(op, "name", op))
        if name == "relax.memory.alloc_storage":
            (size,) = _ints(value.args[0])
            self.storages[var] = int(size)
        elif name == "relax.memory.alloc_tensor":
            storage, offset, shape, dtype = value.args[0], value.args[1], value.args[2], value.args[3]
            self.pending_arena[var] = (str(storage.name), int(offset), _ints(shape), str(dtype.value))
        elif name == "relax.builtin.alloc_tensor":
            self.pending_output[var] = (_ints(value.args[0]), str(value.args[1].value))
        elif name in ("relax.memory.kill_storage", "relax.memory.kill_tensor"):
            pass
        else:
            raise ModelError(f"the lowered model has a step the static plan cannot run: {name}")

    def layout(self) -> Dict[str, Any]:
        base: Dict[str, int] = {}
        end = 0
        for var, size in self.storages.items():
            base[var] = end
            end = _align(end + size)
        for var, (storage, offset, shape, dtype) in self.pending_arena.items():
            self.slots[var] = TensorSlot(var, shape, dtype, "arena", 0, base[storage] + offset)
        return {"arena_bytes": end}

    def outputs(self, body: Any) -> List[TensorSlot]:
        returned = list(body.fields) if _kind(body) == "tuple" else [body]
        outputs, self.copies = [], []
        for i, expr in enumerate(returned):
            source = self.ref(expr)
            name = self.output_names[i] if i < len(self.output_names) else f"output{i}"
            if source in self.pending_output:
                shape, dtype = self.pending_output.pop(source)
                slot = TensorSlot(name, shape, dtype, "output", i)
                self.slots[name] = slot
                self.alias[source] = name
            else:  # an output that is an input, a constant or an arena tensor: copied at the end
                src = self.slots.get(source) or self.slots[self.alias.get(source, source)]
                slot = TensorSlot(name, src.shape, src.dtype, "output", i)
                self.slots[name] = slot
                self.copies.append((name, src.name))
            outputs.append(slot)
        if self.pending_output:
            raise ModelError(f"the lowered model allocates {sorted(self.pending_output)[0]} outside the plan; it cannot run statically")
        return outputs


def pipeline(mod: Any, target: str) -> Any:
    """TVM's lowering to kernels and a statically planned ``main`` (see the module docstring)."""
    import tvm
    from tvm import relax

    with tvm.target.Target(tvm_target(target)):
        mod = relax.transform.DecomposeOpsForInference()(mod)
        mod = relax.get_pipeline("zero")(mod)
        mod = relax.transform.CallTIRRewrite()(mod)
        mod = relax.transform.StaticPlanBlockMemory()(mod)
    return mod


@dataclass
class Lowered:
    """A model lowered to kernels and read into a plan, before the kernels are built."""

    reader: "_PlanReader"
    inputs: List[TensorSlot]
    outputs: List[TensorSlot]
    arena_bytes: int
    calls: List[Tuple[str, Tuple[str, ...]]]  # (kernel, argument slots) in order
    prim_funcs: Dict[str, Any]

    def constants(self) -> Dict[str, np.ndarray]:
        """Constant slot name -> its values."""
        return {slot.name: expr.value.numpy() for expr, slot in self.reader.constants}

    def kernel_constants(self) -> Dict[str, Dict[int, np.ndarray]]:
        """Per kernel, its first call's constant arguments by parameter position (the model's own
        weights and multipliers, which a kernel check must run on)."""
        from .kernel_check import constants_by_param

        return constants_by_param(self.calls, self.constants())


def lower_to_kernels(mod: Any, target: str, input_names: Sequence[str], output_names: Sequence[str]) -> Lowered:
    """TVM's pipeline, the plan read off ``main``, and the kernels it calls (not yet built)."""
    mod = pipeline(mod, target)
    reader = _PlanReader(input_names, output_names)
    inputs, outputs, layout = reader.read(mod["main"])
    resolved = [(kernel, tuple(reader.alias.get(a, a) for a in args)) for kernel, args in reader.calls]
    used = {kernel for kernel, _ in resolved} - reader.extern
    prim_funcs = {name: func for name, func in kernel_funcs(mod).items() if name in used}
    missing = used - set(prim_funcs)
    if missing:
        raise ModelError(f"the lowered model calls {sorted(missing)[0]}, which is not a kernel of the module")
    return Lowered(reader, inputs, outputs, layout["arena_bytes"], resolved, prim_funcs)


def lower(
    mod: Any,
    target: str,
    input_names: Sequence[str],
    output_names: Sequence[str],
    schedule: Optional[Callable[[str, Any, Dict[int, np.ndarray]], Any]] = None,
    libraries: Optional[Dict[str, str]] = None,
) -> Tuple[Plan, str, List[FunctionInfo], List[Any]]:
    """(plan, C source of all kernels, the kernels as callable functions, the constants' data
    as numpy arrays in the plan's constant order). ``schedule(name, prim_func, constants)`` may
    replace a kernel with a scheduled one (tuning records) before the build; ``constants`` are
    the kernel's constant arguments, by parameter position. ``libraries``: the library wrappers the
    module calls (call_dps_packed), symbol -> provider name."""
    lowered = lower_to_kernels(mod, target, input_names, output_names)
    reader, resolved, prim_funcs = lowered.reader, lowered.calls, lowered.prim_funcs
    libraries = dict(libraries or {})
    unknown = reader.extern - set(libraries)
    if unknown:
        raise ModelError(f"the lowered model calls {sorted(unknown)[0]}, which no kernel library of this compile provides")
    inputs, outputs = lowered.inputs, lowered.outputs
    if schedule is not None:
        constants = lowered.kernel_constants()
        prim_funcs = {name: schedule(name, func, constants.get(name, {})) for name, func in prim_funcs.items()}
    source = build_kernels(prim_funcs)
    needs = workspace_needs(source)

    calls = [Call(kernel, args, int(needs.get(kernel) or 0), libraries.get(kernel, "tvm")) for kernel, args in resolved]
    plan = Plan(
        inputs=inputs,
        outputs=outputs,
        constants=[slot for _, slot in reader.constants],
        tensors={**{name: reader.slots[name] for _, args in resolved for name in args}, **{t.name: t for t in inputs + outputs}},
        calls=calls,
        arena_bytes=lowered.arena_bytes,
        copies=reader.copies,
    )
    kernels = []
    for name, func in prim_funcs.items():
        params = list(func.params)
        args = []
        for i, param in enumerate(params):  # in TVM 0.27 a PrimFunc's params are its buffers
            if getattr(param, "shape", None) is None:
                raise ModelError(f"kernel {name} takes a non-tensor argument {param}; the static plan passes tensors only")
            role = "output" if i == len(params) - 1 else "input"  # destination-passing: the output is last
            args.append(ArgInfo(str(param.name), tuple(int(d) for d in param.shape), str(param.dtype), role))
        kernels.append(FunctionInfo(name, tuple(args), needs.get(name)))
    return plan, source, kernels, [expr.value.numpy() for expr, _ in reader.constants]
