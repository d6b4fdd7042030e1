"""``microtvm tune MODEL.onnx --board B``: each distinct kernel of the model, scheduled every way
the candidate space allows (compile.schedules), measured on the board by its own counter.

Why it is shaped this way:

* one firmware per kernel holds the default kernel and all its candidates (renamed), so a kernel
  costs one build, one flash and one QEMU (or board) session, not one per candidate;
* the kernel's arguments are uploaded once and every candidate runs on them (Session.load):
  on an emulated board the UART, not the kernel, is what takes the time;
* every candidate's output is checked against the default kernel's on the same inputs before
  it may win; under QEMU's -icount one run per candidate is exact, so there are no repeats;
* a record is appended the moment it is measured: Ctrl-C keeps what was measured, and a re-run
  skips it.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import ModelError
from ..compile.schedules import Recipe, ScheduleNotApplicable, apply, candidates, workload
from ..compile.tuning_records import Record, RecordsFile

#: Bytes of workspace given to a tuning firmware beyond what its hungriest variant asks for.
WORKSPACE_MARGIN = 4096


@dataclass
class KernelResult:
    kernel: str
    workload: Dict[str, Any]
    default_count: Optional[float] = None
    best_count: Optional[float] = None
    best: Optional[Recipe] = None
    measured: int = 0
    skipped: int = 0  # already in the records
    not_applicable: int = 0
    wrong: List[str] = field(default_factory=list)


@dataclass
class TuneReport:
    board: str
    target: str
    kernels: List[KernelResult]
    unit: str
    seconds: float

    @property
    def measured(self) -> int:
        return sum(k.measured for k in self.kernels)


def _random_args(fn: Any, seed: int) -> List[Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = []
    for arg in fn.args:
        if arg.role == "output":
            arrays.append(np.zeros(arg.shape, arg.dtype))
        elif arg.dtype.startswith("float"):
            arrays.append(rng.standard_normal(arg.shape).astype(arg.dtype))
        else:
            info = np.iinfo(arg.dtype)
            lo, hi = max(info.min, -128), min(info.max, 127)
            arrays.append(rng.integers(lo, hi + 1, size=arg.shape).astype(arg.dtype))
    return arrays


def _matches(got: Any, want: Any) -> bool:
    import numpy as np

    if got.dtype.kind == "f":
        return bool(np.allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.max(np.abs(want))))))
    return bool(np.array_equal(got, want))


def tune_model(
    model_path: Path,
    board: str,
    records_path: Path,
    *,
    trials: Optional[int] = None,
    inputs: Optional[Mapping[str, Sequence[int]]] = None,
    progress: Optional[Callable[[str, KernelResult], None]] = None,
    work_dir: Optional[Path] = None,
) -> TuneReport:
    """Tunes every distinct kernel of the model on ``board``; records go to ``records_path``."""
    import numpy as np
    import tvm

    from ..boards.database import load_board_database
    from ..compile.frontends import import_model
    from ..compile.kernels.tvm import kernel_funcs
    from ..compile.lower import pipeline
    from ..compile.mlf import export_model_library_format
    from ..device.session import Session
    from ..formats.mlf import load_model_library_format
    from ..packaged import get_packaged_resource
    from ..project import generate_project
    from ..targets import cores_of

    entry = load_board_database().get(board)
    if not any(t.template == "cortex-m" for t in entry.templates) or entry.core not in cores_of("cortex-m"):
        raise ModelError(f"board {board} is not a board of the cortex-m template; `microtvm boards --template cortex-m` lists them")
    target = entry.core
    records = RecordsFile(records_path)
    measured = records.measured()
    imported = import_model(Path(model_path), inputs)
    funcs = kernel_funcs(pipeline(imported.mod, target))

    distinct: Dict[str, Any] = {}
    for name, func in sorted(funcs.items()):
        distinct.setdefault(workload(name, func)["hash"], (name, func))
    recipes = [Recipe()] + candidates(trials)
    template = get_packaged_resource("templates/cortex-m")
    own_dir = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="microtvm-tune-")) if work_dir is None else Path(work_dir)
    started = time.monotonic()
    results: List[KernelResult] = []
    unit = ""
    try:
        for name, func in distinct.values():
            wl = workload(name, func)
            result = KernelResult(name, wl)
            results.append(result)
            todo = [r for r in recipes if (wl["hash"], board, r.key()) not in measured]
            result.skipped = len(recipes) - len(todo)
            if not todo:
                if progress:
                    progress("cached", result)
                continue
            variants: Dict[str, Any] = {}
            chosen: Dict[str, Recipe] = {}
            for i, recipe in enumerate(recipes):
                if i and recipe not in todo:
                    continue
                try:
                    scheduled = apply(func, recipe)
                except ScheduleNotApplicable:
                    result.not_applicable += 1
                    continue
                vname = f"{name}__s{i}"
                variants[vname] = scheduled.with_attr("global_symbol", vname)
                chosen[vname] = recipe
            reference = f"{name}__s0"
            out_name = str(func.params[-1].name)
            mlf = export_model_library_format(
                tvm.IRModule(variants), work / f"{name}.tar", model_name="tune",
                outputs={v: [out_name] for v in variants}, disable_asserts=True,
            )
            need = max((f.workspace_size_bytes or 0) for f in load_model_library_format(mlf).functions)
            project_dir = work / name
            project = generate_project(template, mlf, project_dir, {"board": board, "workspace_size_bytes": need + WORKSPACE_MARGIN})
            with project:
                project.build()
                project.flash()
            with Session.open(project_dir) as sess:
                sess.load(reference, *_random_args(sess.function(reference), seed=len(results)))
                (want,) = sess.call_loaded(reference)
                for vname, recipe in chosen.items():
                    (got,) = sess.call_loaded(vname)
                    ok = _matches(got, want)
                    timing = sess.time_loaded(vname)
                    unit = timing.unit
                    count = timing.counts[0] if timing.counts else timing.results[0]
                    error = float(np.max(np.abs(got.astype("float64") - want.astype("float64")))) if got.size else 0.0
                    if recipe.is_default:
                        result.default_count = count
                    if ok and (result.best_count is None or count < result.best_count):
                        result.best_count, result.best = count, recipe
                    if not ok:
                        result.wrong.append(recipe.describe())
                    if (wl["hash"], board, recipe.key()) not in measured:
                        records.append(Record(wl, name, board, target, recipe, count, unit, ok, error))
                        measured.add((wl["hash"], board, recipe.key()))
                        result.measured += 1
                    if progress:
                        progress("measured", result)
            shutil.rmtree(project_dir, ignore_errors=True)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    return TuneReport(board, target, results, unit, time.monotonic() - started)
