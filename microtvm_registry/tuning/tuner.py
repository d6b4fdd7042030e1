"""``microtvm tune MODEL.onnx --board B``: each distinct kernel of the model, scheduled every way
the candidate space allows (compile.schedules), measured on the board by its own counter.

Why it is shaped this way:

* one firmware per kernel holds the default kernel and all its candidates (renamed), so a kernel
  costs one build, one flash and one QEMU (or board) session, not one per candidate;
* the kernel's arguments are uploaded once and every candidate runs on them (Session.load):
  on an emulated board the UART, not the kernel, is what takes the time;
* every candidate's output is checked against the default kernel's exactly before it may win, on
  probes built to reach where schedules go wrong (compile/kernel_check.py: several seeds, the
  int8 extremes, the model's own constants, an output buffer poisoned before every call); under
  QEMU's -icount one run per candidate is exact, so timings need no repeats;
* a record is appended the moment it is measured: Ctrl-C keeps what was measured, and a re-run
  skips it; two runs on one records file take the kernels in turn (a lock per kernel), so nothing
  is measured twice; the work folder lives in the runtime folder and one left by a killed run is
  removed by the next.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ..errors import ModelError
from ..files import update_lock
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


def tune_model(
    model_path: Path,
    board: str,
    records_path: Path,
    *,
    trials: Optional[int] = None,
    inputs: Optional[Mapping[str, Sequence[int]]] = None,
    progress: Optional[Callable[[str, KernelResult], None]] = None,
    work_dir: Optional[Path] = None,
    jobs: int = 1,
    shard: Optional[Tuple[int, int]] = None,
) -> TuneReport:
    """Tunes every distinct kernel of the model on ``board``; records go to ``records_path``.

    ``jobs``: kernels measured at once, each on its own emulated board (or, on real hardware, the
    same board in turn: give 1). ``shard`` (i, n): only every n-th candidate, starting at the
    i-th (1-based), so n machines (a CI matrix, a Slurm array, GNU parallel) split one model;
    their records files concatenate."""
    import tvm

    from ..boards.database import load_board_database
    from ..compile.frontends import import_model
    from ..compile.kernel_check import outputs_match, probe_arguments
    from ..compile.lower import lower_to_kernels
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
    if jobs < 1:
        raise ModelError(f"--jobs {jobs}: give 1 or more")
    if jobs > 1 and not entry.emulated:
        raise ModelError(f"--jobs {jobs} runs several boards at once; {board} is a real board (one of it): use --jobs 1")
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ModelError(f"--shard {shard[0]}/{shard[1]}: give I/N with 1 <= I <= N")
    records = RecordsFile(records_path)
    imported = import_model(Path(model_path), inputs)
    lowered = lower_to_kernels(imported.mod, target, imported.input_names, imported.output_names)
    constants = lowered.kernel_constants()

    distinct: Dict[str, Any] = {}
    for name, func in sorted(lowered.prim_funcs.items()):
        distinct.setdefault(workload(name, func)["hash"], (name, func))
    recipes = [Recipe()] + candidates(trials)
    mine = [i for i in range(len(recipes)) if shard is None or i % shard[1] == shard[0] - 1]
    template = get_packaged_resource("templates/cortex-m")
    started = time.monotonic()
    results: List[KernelResult] = []
    units: List[str] = []
    tvm_lock = threading.Lock()  # TVM's compiler runs one build at a time; firmware builds and boards run in parallel
    report_lock = threading.Lock()

    def report(kind: str, result: KernelResult) -> None:
        if progress:
            with report_lock:
                progress(kind, result)

    def tune_kernel(name: str, func: Any, work: Path) -> None:
        wl = workload(name, func)
        result = KernelResult(name, wl)
        with report_lock:
            results.append(result)
        with update_lock(records.path.with_name(f"{records.path.name}.{wl['hash']}")):  # one run per kernel at a time
            measured = records.measured()
            todo = [i for i in mine if (wl["hash"], board, recipes[i].key()) not in measured]
            result.skipped = len(mine) - len(todo)
            if not todo:
                report("cached", result)
                return
            variants: Dict[str, Any] = {}
            chosen: Dict[str, Recipe] = {}
            for i, recipe in enumerate(recipes):
                if i and i not in todo:
                    continue  # the default (s0) is always built: every candidate is checked against it
                try:
                    scheduled = apply(func, recipe)
                except ScheduleNotApplicable:
                    result.not_applicable += 1
                    continue
                vname = f"{name}__s{i}"
                variants[vname] = scheduled.with_attr("global_symbol", vname)
                if i in todo:
                    chosen[vname] = recipe
            if not chosen:  # what is left does not fit this kernel: nothing to build or measure
                report("cached", result)
                return
            reference = f"{name}__s0"
            out_name = str(func.params[-1].name)
            with tvm_lock:
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
                correct = {v: True for v in chosen}
                errors = {v: 0.0 for v in chosen}
                out_slot = len(func.params) - 1
                for args in probe_arguments(list(func.params), constants.get(name, {})):
                    sess.load(reference, *args)
                    (want,) = sess.call_loaded(reference)
                    for vname in chosen:
                        sess.reload_slot(out_slot, args[-1])  # the poison again: nothing inherited from the last call
                        (got,) = sess.call_loaded(vname)
                        if not outputs_match(got, want):
                            correct[vname] = False
                            errors[vname] = max(errors[vname], _max_error(got, want))
                for vname, recipe in chosen.items():
                    timing = sess.time_loaded(vname)
                    units.append(timing.unit)
                    count = timing.counts[0] if timing.counts else timing.results[0]
                    ok = correct[vname]
                    if recipe.is_default:
                        result.default_count = count
                    if ok and (result.best_count is None or count < result.best_count):
                        result.best_count, result.best = count, recipe
                    if not ok:
                        result.wrong.append(recipe.describe())
                    if (wl["hash"], board, recipe.key()) not in measured:
                        records.append(Record(wl, name, board, target, recipe, count, timing.unit, ok, errors[vname]))
                        measured.add((wl["hash"], board, recipe.key()))
                        result.measured += 1
                    report("measured", result)
            shutil.rmtree(project_dir, ignore_errors=True)

    with _work_folder(work_dir) as work:
        kernels = list(distinct.values())
        if jobs <= 1:
            for name, func in kernels:
                tune_kernel(name, func, work)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="microtvm-tune") as pool:
                for future in [pool.submit(tune_kernel, name, func, work) for name, func in kernels]:
                    future.result()  # the first failure is the run's (the others finish their kernel first)
    order = {name: n for n, (name, _func) in enumerate(distinct.values())}
    results.sort(key=lambda r: order[r.kernel])
    unit = units[0] if units else ""
    return TuneReport(board, target, results, unit, time.monotonic() - started)


def _max_error(got: Any, want: Any) -> float:
    import numpy as np

    both = np.isfinite(got.astype("float64")) & np.isfinite(want.astype("float64"))
    if not both.any():
        return float("inf")
    diff = np.abs(got.astype("float64") - want.astype("float64"))[both]
    return float(diff.max()) if diff.size else 0.0


#: Where tuning runs build their firmware: the runtime folder (a killed run's is swept by the next).
TUNE_FOLDER = "tune"


@contextlib.contextmanager
def _work_folder(given: Optional[Path]) -> Iterator[Path]:
    """``given``, or a folder of this run's own in the runtime folder, removed when the run ends
    (SIGTERM included: the CLI turns it into an exit that runs this); one a SIGKILLed run left is
    removed by the next run (its pid, in the folder's name, no longer runs)."""
    if given is not None:
        yield Path(given)
        return
    from ..dirs import runtime_dir
    from ..procs import is_running

    root = runtime_dir() / TUNE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        pid = stale.name.split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not is_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=str(root)))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
