"""The model's own reference interpreter, on the inputs a project ran: TFLite Micro's (the
``tflite-micro`` package) for .tflite, onnxruntime for .onnx.

TFLite Micro's interpreter aborts the whole process on a model it cannot run, so it runs in a
child Python that reads the samples from a folder and writes the outputs beside them; an abort
is then one line, not a dead CLI. onnxruntime raises, so it runs in this process.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

from ..errors import MicrotvmError

#: The child that runs TFLite Micro: argv = model, folder, samples, inputs per sample.
_TFLM_CHILD = r"""
import json, sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model, folder, samples, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
it = runtime.Interpreter.from_file(model)
outputs = 0
for s in range(samples):
    for i in range(count):
        it.set_input(np.load(f"{folder}/s{s}_in{i}.npy"), i)
    it.invoke()
    n = 0
    while True:
        try:
            value = it.get_output(n)
        except Exception:
            break
        np.save(f"{folder}/s{s}_out{n}.npy", value)
        n += 1
    outputs = n
print(json.dumps({"outputs": outputs}))
"""

INSTALL_HINT = {"tflite": "pip install tflite-micro", "onnx": "pip install onnxruntime"}


def reference_name(fmt: str) -> str:
    return {"tflite": "TFLite Micro", "onnx": "onnxruntime"}.get(fmt, fmt)


def reference_outputs(model: Path, fmt: str, samples: Sequence[Sequence[Any]], input_names: Sequence[str]) -> List[List[Any]]:
    """For each sample (the model's inputs in order), the reference's outputs in order."""
    if fmt == "tflite":
        return _tflite_micro(model, samples)
    if fmt == "onnx":
        return _onnxruntime(model, samples, input_names)
    raise MicrotvmError(f"{model.name} is {fmt}; verify knows the references of .tflite and .onnx models")


def _tflite_micro(model: Path, samples: Sequence[Sequence[Any]]) -> List[List[Any]]:
    import numpy as np

    try:
        import tflite_micro  # noqa: F401 - only to say what is missing before the child starts
    except ImportError:
        raise MicrotvmError(f"verify needs TFLite Micro's interpreter for {model.name}; {INSTALL_HINT['tflite']}") from None
    with tempfile.TemporaryDirectory(prefix="microtvm-verify-") as tmp:
        for s, sample in enumerate(samples):
            for i, array in enumerate(sample):
                np.save(f"{tmp}/s{s}_in{i}.npy", array)
        count = len(samples[0]) if samples else 0
        done = subprocess.run([sys.executable, "-c", _TFLM_CHILD, str(model), tmp, str(len(samples)), str(count)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise MicrotvmError(f"TFLite Micro's interpreter could not run {model.name} (exit {done.returncode}: {last}); "
                                "is it the model the project was compiled from?")
        outputs = json.loads(done.stdout.strip().splitlines()[-1])["outputs"]
        return [[np.load(f"{tmp}/s{s}_out{n}.npy") for n in range(outputs)] for s in range(len(samples))]


def onnx_output_steps(model: Path) -> Dict[str, float]:
    """For a QDQ model: each float output that a DequantizeLinear makes, and the size of its int8
    step (its scale); the tolerance of such an output is one step."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model), load_external_data=False).graph
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute:
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in graph.node for out in node.output}
    steps: Dict[str, float] = {}
    for output in graph.output:
        node = producers.get(output.name)
        if node is not None and node.op_type == "DequantizeLinear" and len(node.input) > 1 and node.input[1] in constants:
            scale = numpy_helper.to_array(constants[node.input[1]])
            if scale.size == 1:
                steps[output.name] = float(scale.reshape(-1)[0])
    return steps


def _onnxruntime(model: Path, samples: Sequence[Sequence[Any]], input_names: Sequence[str]) -> List[List[Any]]:
    try:
        import onnxruntime
    except ImportError:
        raise MicrotvmError(f"verify needs onnxruntime for {model.name}; {INSTALL_HINT['onnx']}") from None
    try:
        session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        return [list(session.run(None, dict(zip(input_names, sample)))) for sample in samples]
    except Exception as err:  # onnxruntime's errors are many classes; each is this one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MicrotvmError(f"onnxruntime could not run {model.name} ({first}); is it the model the project was compiled from?") from None
