"""``microtvm compile MODEL -o model.tar``: a whole model (.tflite or .onnx) to Model Library Format.

import (frontends: one per format) -> lower and plan (lower) -> the model's C (model_c) -> one MLF tar that
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
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import FetchError, ModelError
from ..formats.mlf import ArgInfo, FunctionInfo
from ..formats.names import is_c_identifier
from ..formats.plan import PLAN_FILE, Plan
from ..targets import core, tvm_target
from .mlf import write_model_library_format

if TYPE_CHECKING:  # pragma: no cover
    from .frontends import TensorLimit
    from .kernels.cmsis_nn import CmsisNN
    from .kernels.library import KernelLibrary

#: What ``compile --kernels`` takes.
KERNEL_CHOICES = ("tvm", "cmsis-nn")


def kernel_library(kernels: str, target: str, library: Optional["KernelLibrary"] = None) -> "CmsisNN":
    """The kernel library ``kernels`` names, for ``target``: its verified folder (``library``, or
    the registry's: the project's microtvm.lock pin, else the default version)."""
    from .kernels.cmsis_nn import CmsisNN

    if kernels not in KERNEL_CHOICES:
        raise ModelError(f"--kernels {kernels!r} is not one of {', '.join(KERNEL_CHOICES)}")
    if library is None:
        from .kernels.library import load_library
        from .kernels.cmsis_nn import DEFAULT_SPEC, LIBRARY
        from ..registry.lockfile import load_project_lock

        lock = load_project_lock()
        # A project's pin wins (`microtvm lock arm/cmsis-nn@==7.0.0` chooses another version);
        # without one, the version TFLite Micro pins, so its answers and figures are the anchor's.
        spec = LIBRARY if lock is not None and lock.find(LIBRARY) is not None else DEFAULT_SPEC
        try:
            library = load_library(spec)
        except FetchError as err:
            raise FetchError(f"--kernels {kernels} needs {spec}: {err} (behind a mirror: --git-mirror URL_PREFIX=LOCAL_URL)") from None
    return CmsisNN(library, core(target))

RUNTIME_FILES = ("mtvm_runtime.c", "mtvm_runtime.h")


@dataclass(frozen=True)
class CompiledModel:
    path: Path
    name: str
    target: str
    plan: Plan
    tuned: Dict[str, str] = field(default_factory=dict)  # kernel -> the record's schedule, with --records
    untuned: List[str] = field(default_factory=list)  # kernels the records had nothing for
    format: str = "onnx"  # the model file's format (frontends)
    arithmetic: str = "float32"  # what its integer operators follow (frontends.ARITHMETIC_*)
    refused: List[str] = field(default_factory=list)  # records whose kernel failed the host check, and why
    libraries: List[Dict[str, Any]] = field(default_factory=list)  # kernel libraries the calls use (facts, sources)

    @property
    def summary(self) -> Dict[str, Any]:
        return self.plan.summary()


def model_name_for(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", Path(path).stem) or "model"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


#: Overrides the largest tensor a model may hold (bytes); default: the target's biggest flash.
MAX_TENSOR_ENV = "MICROTVM_REGISTRY_MAX_TENSOR_BYTES"
#: The bound where no board is known (and the default of MAX_TENSOR_ENV's override).
HOST_MAX_TENSOR_BYTES = 1 << 30


def tensor_limit(target: str) -> "TensorLimit":
    """The largest tensor a model may hold for ``target``: the flash of the biggest board of that
    core in the board database (a constant must fit in flash, and nothing larger fits in RAM)."""
    import os

    from ..boards.database import load_board_database
    from .frontends import TensorLimit

    override = os.environ.get(MAX_TENSOR_ENV, "").strip()
    if override:
        from ..limits import byte_limit

        return TensorLimit(byte_limit(MAX_TENSOR_ENV, HOST_MAX_TENSOR_BYTES, ModelError), f"{MAX_TENSOR_ENV}")
    # host: a rehearsal of a board's build, so bounded by the largest flash of any board we know
    # (a 165-byte ONNX folding into a 64 MiB constant cost 1.5 GB of RSS for host before)
    boards = [b for b in load_board_database().boards if (target == "host" or b.core == target) and b.flash_bytes]
    if target == "host" and boards:
        largest = max(boards, key=lambda b: b.flash_bytes or 0)
        return TensorLimit(int(largest.flash_bytes or 0), f"the flash of {largest.name}, the largest board we know "
                                                          f"(set {MAX_TENSOR_ENV} for host models beyond any board)")
    if not boards:
        return TensorLimit(HOST_MAX_TENSOR_BYTES, f"the limit for {target}")
    largest = max(boards, key=lambda b: b.flash_bytes or 0)
    return TensorLimit(int(largest.flash_bytes or 0), f"the flash of {largest.name}, the largest {target} board we know")


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
    records: "Optional[Path | Sequence[Path]]" = None,
    board: Optional[str] = None,
    kernels: str = "tvm",
    library: Optional["KernelLibrary"] = None,
) -> CompiledModel:
    """Compiles the model at ``model_path`` (.tflite or .onnx, told apart by content) for
    ``target`` into the MLF tar ``output``.

    ``records`` (from ``microtvm tune``): each kernel whose workload has a correct record for
    this target (measured on ``board``, when given) is built with the fastest record's schedule.

    ``kernels``: ``tvm`` (every layer a TVM kernel) or ``cmsis-nn`` (the int8 layers CMSIS-NN
    computes are calls of it; ``library`` is its verified folder, else the project's pin or the
    default version is fetched through the registry)."""
    from ..packaged import get_packaged_resource
    from .frontends import check_library_format, import_model
    from .lower import lower
    from .model_c import header_source, model_source

    model_path = Path(model_path)
    core(target)  # an unknown target is said before any work
    name = name or model_name_for(model_path)
    if not is_c_identifier(name):
        raise ModelError(f"model name {name!r} is not a C identifier; use letters, digits and _")
    cmsis = None
    if kernels != "tvm":
        check_library_format(model_path, kernels)
        cmsis = kernel_library(kernels, target, library)
    imported = import_model(model_path, inputs, reserved=(name, f"{name}_call_ticks"), limit=tensor_limit(target), library=cmsis)
    tuned: Dict[str, str] = {}
    untuned: List[str] = []
    refused: List[str] = []
    schedule = None
    if records is not None:
        files = [Path(records)] if isinstance(records, (str, Path)) else [Path(r) for r in records]
        schedule = _schedule_from_records(files, target, board, tuned, untuned, refused)
    plan, kernel_source, kernel_functions, constants = lower(
        imported.mod, target, imported.input_names, imported.output_names, schedule=schedule,
        libraries={c.symbol: cmsis.name for c in cmsis.calls} if cmsis is not None else None,
    )
    plan.describe_io(imported.inputs + imported.outputs)
    plan.operators = imported.operators
    plan.float_ops = imported.float_ops
    plan.integer_ops = imported.integer_ops
    functions = model_functions(name, plan, kernel_functions + (cmsis.functions() if cmsis is not None else []))

    runtime = get_packaged_resource("templates/common/runtime")
    members = {f"runtime/{f}": (runtime / f).read_bytes() for f in RUNTIME_FILES}
    members[PLAN_FILE] = (json.dumps(plan.to_json(), indent=2) + "\n").encode()
    members[f"codegen/host/include/{name}_model.h"] = header_source(name, plan).encode()
    import tvm

    c_sources = {f"{name}_lib0.c": kernel_source, f"{name}_model.c": model_source(name, plan, constants)}
    libraries = []
    if cmsis is not None:
        c_sources[f"{name}_cmsis_nn.c"] = cmsis.source(name)
        libraries.append(dict(cmsis.library.facts(), provider=cmsis.name, sources=cmsis.sources(), calls=len(cmsis.calls)))
    write_model_library_format(
        output,
        c_sources=c_sources,
        functions=functions,
        model_name=name,
        target=json.dumps(tvm_target(target)),
        extra_metadata={"model": {"source": model_path.name, "format": imported.format, "arithmetic": imported.arithmetic,
                                  "target": target, "plan": PLAN_FILE,
                                  "call_kernels": [c.kernel for c in plan.calls], "kernel_provider": kernels,
                                  "libraries": libraries, **plan.summary()},
                        "tvm_version": tvm.__version__},
        extra_members=members,
    )
    return CompiledModel(Path(output), name, target, plan, tuned, sorted(untuned), imported.format, imported.arithmetic, refused,
                         libraries)


def _schedule_from_records(files: Sequence[Path], target: str, board: Optional[str], tuned: Dict[str, str], untuned: List[str],
                           refused: List[str]) -> Callable[[str, Any, Dict[int, Any]], Any]:
    """A lower() schedule hook that applies the best record per workload (filling tuned and
    untuned). A record is not trusted: its kernel is checked against the default one on the host
    (kernel_check), and one that differs is refused (the default kernel is built, ``refused``
    says why); a recipe that does not fit its kernel at all stops the compile."""
    from .kernel_check import same_on_host
    from .schedules import ScheduleNotApplicable, apply, workload
    from .tuning_records import RecordsFile, best

    read = []
    for path in files:
        found, _damaged = RecordsFile(path).read()
        if not found:
            raise ModelError(f"--records {path} holds no tuning records; run microtvm tune first")
        read += found  # several files (shards, boards): the best record per workload of them all
    records = " ".join(str(p) for p in files)
    chosen = best(read, target, board)

    def schedule(kernel: str, func: Any, constants: Dict[int, Any]) -> Any:
        record = chosen.get(workload(kernel, func)["hash"])
        if record is None:
            untuned.append(kernel)
            return func
        try:
            scheduled = apply(func, record.recipe)
        except ScheduleNotApplicable as err:
            raise ModelError(
                f"--records {records}: the record for {kernel} ({record.recipe.describe()}) does not fit the kernel ({err}); "
                "the file was made for another model or version: tune again"
            ) from None
        if not record.recipe.is_default:
            difference = same_on_host(func, scheduled, constants)
            if difference is not None:
                refused.append(f"{kernel}: {record.recipe.describe()} ({difference})")
                return func
        tuned[kernel] = f"{record.recipe.describe()} ({record.count:,.0f} {record.unit} on {record.board})"
        return scheduled

    return schedule
