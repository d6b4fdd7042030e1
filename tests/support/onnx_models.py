"""Small ONNX models built by the tests (onnx.helper, fixed random weights), and onnxruntime's
answer for them: what every compiled model is checked against."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np


def zoo(seed: int = 0) -> Any:
    """Every float operator the issue names, in one small net: Conv, depthwise Conv, Relu, Clip,
    AveragePool, MaxPool, Add (a residual), Reshape, MatMul + Add (dense), Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    def w(name: str, *shape: int) -> str:
        return const(name, (rng.standard_normal(shape) * 0.4).astype(np.float32))

    nodes = [
        helper.make_node("Conv", ["x", w("c1w", 6, 2, 3, 3), w("c1b", 6)], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", w("dww", 6, 1, 3, 3), w("dwb", 6)], ["dw"], group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw", const("lo", np.array(0, np.float32)), const("hi", np.array(6, np.float32))], ["r2"]),
        helper.make_node("Add", ["r2", "r1"], ["res"]),
        helper.make_node("AveragePool", ["res"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 1], strides=[1, 1]),
        helper.make_node("Reshape", ["mp", const("shape", np.array([1, -1], np.int64))], ["flat"]),
        helper.make_node("MatMul", ["flat", w("fcw", 54, 5)], ["mm"]),
        helper.make_node("Add", ["mm", w("fcb", 5)], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "zoo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def constant_bomb() -> Any:
    """165 bytes of ONNX asking for a 4096x4096 float constant (ConstantOfShape, added to the
    input): folded, 64 MiB of weights."""
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(np.array([4096, 4096], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
         helper.make_node("Add", ["x", "c"], ["y"])], "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096, 4096])], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def save(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def reference(path: Path, inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)


def random_inputs(shapes: Dict[str, Sequence[int]], seed: int = 1) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


from microtvm_registry.compile.sample_models import quantize_qdq  # noqa: E402,F401 - the tests' int8 models
