"""``microtvm compile MODEL.onnx -o model.tar``: a whole model to Model Library Format.

import (onnx_frontend) -> lower and plan (lower) -> the model's C (model_c) -> one MLF tar that
any template consumes: ``codegen/host/src`` holds the kernels and the model's C,
``codegen/host/include`` the TVM headers and ``<model>_model.h``, ``plan.json`` the plan, and
``runtime/`` the C runtime a user's own firmware links with the model (no libtvm). The model is
also a function of the MLF (``<model>``: inputs then outputs), so ``microtvm run`` and a
``Session`` run it like any kernel; its kernels stay callable one by one too.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .mlf import ArgInfo, FunctionInfo, write_model_library_format
from .names import c_identifiers
from .onnx_frontend import ModelError, import_onnx, input_shapes, load_onnx, operator_counts, quantized_operators, renamed
from .plan import Plan

PLAN_FILE = "plan.json"
RUNTIME_FILES = ("mtvm_runtime.c", "mtvm_runtime.h")


@dataclass(frozen=True)
class CompiledModel:
    path: Path
    name: str
    target: str
    plan: Plan
    tuned: Dict[str, str] = field(default_factory=dict)  # kernel -> the record's schedule, with --records
    untuned: List[str] = field(default_factory=list)  # kernels the records had nothing for

    @property
    def summary(self) -> Dict[str, Any]:
        return self.plan.summary()


def model_name_for(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(path).stem) or "model"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


def c_name_map(model_names: Sequence[str], reserved: Sequence[str] = ()) -> Dict[str, str]:
    """model name -> the C-safe identifier used for it everywhere in C, files and the MLF."""
    unique = list(dict.fromkeys(model_names))
    return dict(zip(unique, c_identifiers(unique, reserved)))


def model_functions(name: str, plan: Plan, kernels: Sequence[FunctionInfo]) -> List[FunctionInfo]:
    """The MLF's function list: the model itself first, then its per-call ticks, then its kernels."""
    clashes = {k.name for k in kernels} & {name, f"{name}_call_ticks"}
    if clashes:
        raise ModelError(f"the model name {name!r} is also a kernel's name; pass another with --name")
    args = [ArgInfo(t.name, t.shape, t.dtype, "input") for t in plan.inputs]
    args += [ArgInfo(t.name, t.shape, t.dtype, "output") for t in plan.outputs]
    ticks = FunctionInfo(f"{name}_call_ticks", (ArgInfo("ticks", (max(len(plan.calls), 1),), "uint64", "output"),), 0)
    return [FunctionInfo(name, tuple(args), plan.workspace_bytes), ticks] + list(kernels)


def compile_model(
    model_path: Path,
    output: Path,
    *,
    target: str = "host",
    inputs: Optional[Mapping[str, Sequence[int]]] = None,
    name: Optional[str] = None,
    records: Optional[Path] = None,
    board: Optional[str] = None,
) -> CompiledModel:
    """Compiles the ONNX model at ``model_path`` for ``target`` into the MLF tar ``output``.

    ``records`` (from ``microtvm tune``): each kernel whose workload has a correct record for
    this target (measured on ``board``, when given) is built with the fastest record's schedule."""
    from ..packaged import get_packaged_resource
    from .lower import lower
    from .model_c import header_source, model_source

    model_path = Path(model_path)
    _target_json(target)  # an unknown target is said before any work
    name = name or model_name_for(model_path)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ModelError(f"model name {name!r} is not a C identifier; use letters, digits and _")
    model = load_onnx(model_path)
    shapes = input_shapes(model, dict(inputs or {}), model_path)
    try:
        import tvm  # noqa: F401 - the importer and the compiler
    except ImportError:
        raise ModelError("apache-tvm is not installed; pip install 'microtvm-registry[tvm,onnx]'") from None
    input_names, output_names = list(shapes), [o.name for o in model.graph.output]
    c_names = c_name_map(input_names + output_names, reserved=(name, f"{name}_call_ticks"))
    mod = import_onnx(renamed(model, c_names), {c_names[k]: v for k, v in shapes.items()}, model_path)
    quantized = quantized_operators(model)
    integer_ops: List[str] = []
    float_ops: List[str] = []
    if quantized:
        # A QDQ model: dequantize -> op -> quantize becomes integer arithmetic where a pattern
        # matches (int8 weights and activations, int32 accumulation); the rest stays float32.
        from .int8 import rewrite_qdq

        mod, integer_ops, float_ops = rewrite_qdq(mod)
    tuned: Dict[str, str] = {}
    untuned: List[str] = []
    schedule = None
    if records is not None:
        schedule = _schedule_from_records(Path(records), target, board, tuned, untuned)
    plan, kernel_source, kernels, constants = lower(
        mod, target, [c_names[n] for n in input_names], [c_names[n] for n in output_names], schedule=schedule
    )
    plan.name_models({c: m for m, c in c_names.items()})
    plan.operators = operator_counts(model)
    plan.float_ops = float_ops
    plan.integer_ops = sorted(set(integer_ops))
    functions = model_functions(name, plan, kernels)

    runtime = get_packaged_resource("templates/common/runtime")
    members = {f"runtime/{f}": (runtime / f).read_bytes() for f in RUNTIME_FILES}
    members[PLAN_FILE] = (json.dumps(plan.to_json(), indent=2) + "\n").encode()
    members[f"codegen/host/include/{name}_model.h"] = header_source(name, plan).encode()
    import tvm

    write_model_library_format(
        output,
        c_sources={f"{name}_lib0.c": kernel_source, f"{name}_model.c": model_source(name, plan, constants)},
        functions=functions,
        model_name=name,
        target=json.dumps(_target_json(target)),
        extra_metadata={"model": {"source": model_path.name, "target": target, "plan": PLAN_FILE,
                                  "call_kernels": [c.kernel for c in plan.calls], **plan.summary()},
                        "tvm_version": tvm.__version__},
        extra_members=members,
    )
    return CompiledModel(Path(output), name, target, plan, tuned, sorted(untuned))


def _schedule_from_records(records: Path, target: str, board: Optional[str], tuned: Dict[str, str], untuned: List[str]):
    """A lower() schedule hook that applies the best record per workload (filling tuned/untuned)."""
    from .tuning_records import RecordsFile, best
    from .schedules import apply, workload

    read, _damaged = RecordsFile(records).read()
    if not read:
        raise ModelError(f"--records {records} holds no tuning records; run microtvm tune first")
    chosen = best(read, target, board)

    def schedule(kernel: str, func: Any) -> Any:
        record = chosen.get(workload(kernel, func)["hash"])
        if record is None:
            untuned.append(kernel)
            return func
        tuned[kernel] = f"{record.recipe.describe()} ({record.count:,.0f} {record.unit} on {record.board})"
        return apply(func, record.recipe)

    return schedule


def _target_json(target: str) -> Dict[str, Any]:
    from .lower import target_json

    return target_json(target)


def load_plan(mlf_dir: Path) -> Optional[Plan]:
    """The plan of an extracted MLF folder, or None for an MLF of kernels only."""
    path = Path(mlf_dir) / PLAN_FILE
    if not path.is_file():
        return None
    return Plan.from_json(json.loads(path.read_text(encoding="utf-8")))


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
