"""``microtvm verify``: does a built project give its model's answers? The project runs (on the
host or its board) on seeded inputs or the user's, the model's reference interpreter runs on the
same inputs, and each output is compared within the tolerance its arithmetic promises (see
:mod:`.compare`). It answers the question every deployment asks, which before meant generating
inputs, running, loading .npy files and a reference by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..errors import MicrotvmError
from .compare import OutputCheck, compare_output, verdict
from .reference import onnx_output_steps, reference_name, reference_outputs
from .samples import read_samples, seeded_samples


@dataclass
class Verification:
    project: Path
    model: Path
    format: str
    arithmetic: str
    reference: str
    samples: int
    outputs: List[OutputCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.outputs)

    @property
    def verdict(self) -> str:
        return verdict(self.outputs, self.samples, self.reference)

    def to_json(self) -> Dict[str, Any]:
        return {"project": str(self.project), "model": str(self.model), "format": self.format, "arithmetic": self.arithmetic,
                "reference": self.reference, "samples": self.samples, "ok": self.ok, "verdict": self.verdict,
                "outputs": [c.to_json() for c in self.outputs]}


def verify_project(
    project: Path,
    model: Path,
    *,
    samples: int = 8,
    seed: int = 0,
    inputs: Optional[Path] = None,
    quantize_inputs: bool = False,
    options: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
    progress: Optional[bool] = None,
) -> Verification:
    """Runs ``project`` and ``model``'s reference on the same inputs and compares the outputs."""
    from ..compile.frontends import detect_format
    from ..device.session import Session
    from ..progress import activity

    model, project = Path(model), Path(project)
    if not model.is_file():
        raise MicrotvmError(f"--against {model} does not exist; give the .tflite or .onnx file the project was compiled from")
    if samples < 1 and inputs is None:
        raise MicrotvmError(f"--samples {samples}: give at least 1")
    fmt = detect_format(model)
    open_args: Dict[str, Any] = {} if timeout is None else {"timeout_sec": timeout}
    with Session.open(project, dict(options or {}), **open_args) as sess:
        facts = sess.model
        if facts is None:
            raise MicrotvmError(f"{project} holds kernels, not a compiled model; verify compares a model compiled with microtvm compile")
        ins, outs = list(facts.get("inputs") or []), list(facts.get("outputs") or [])
        if facts.get("format") and facts["format"] != fmt:
            raise MicrotvmError(f"{project} was compiled from a {facts['format']} model ({facts.get('source')}); "
                                f"{model.name} is {fmt}: give the model it was compiled from")
        if fmt == "tflite":
            _check_tflite_inputs(model, ins, project)
        arithmetic = str(facts.get("arithmetic") or "float32")
        runs = read_samples(inputs, ins, quantize_inputs) if inputs is not None else seeded_samples(ins, samples, seed)
        reference = reference_outputs(model, fmt, runs, [str(f["name"]) for f in ins])
        if reference and len(reference[0]) != len(outs):
            raise MicrotvmError(f"{model.name} has {len(reference[0])} outputs and {project}'s model {len(outs)}: "
                                "give the model the project was compiled from")
        got: List[List[Any]] = []
        with activity(f"verify {project.name}", total=len(runs), unit="sample", show=progress) as bar:
            for sample in runs:
                answer = sess.run(facts["function"], sample)
                got.append([answer[str(f["c_name"])] for f in outs])
                if bar is not None:
                    bar.update(1)
    result = Verification(project, model, fmt, arithmetic, reference_name(fmt), len(runs))
    steps = onnx_output_steps(model) if fmt == "onnx" and arithmetic == "onnxruntime" else {}
    for n, fact in enumerate(outs):
        try:
            result.outputs.append(compare_output(str(fact["name"]), fmt, arithmetic, [g[n] for g in got], [r[n] for r in reference],
                                                 steps.get(str(fact["name"]))))
        except ValueError as err:
            raise MicrotvmError(f"{err}; give the model the project was compiled from") from None
    return result


def _check_tflite_inputs(model: Path, ins: List[Mapping[str, Any]], project: Path) -> None:
    """The .tflite's inputs against the project's (read with our own reader: cheap, and a
    mismatch is one line before any sample runs)."""
    from ..compile.frontends.tflite_graph import read_graph

    graph = read_graph(model)
    theirs = [(graph.tensors[i].dtype, tuple(int(d) for d in graph.tensors[i].shape)) for i in graph.inputs]
    ours = [(str(f["dtype"]), tuple(int(d) for d in f["shape"])) for f in ins]
    if theirs != ours:
        def show(items: List[Any]) -> str:
            return ", ".join(f"{d} {s}" for d, s in items)

        raise MicrotvmError(f"{project.name}'s model takes {show(ours)}; {model.name} takes {show(theirs)}: "
                            "give the model the project was compiled from")


__all__ = ["Verification", "OutputCheck", "verify_project"]
