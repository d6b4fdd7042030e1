"""``microtvm compile``: an ONNX model to Model Library Format (kernels, constants, static plan)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_json_flag, print_json


def register(subparsers) -> None:
    """Add ``compile``."""
    comp = subparsers.add_parser(
        "compile",
        help="compile an ONNX model to Model Library Format with a static memory plan",
        description=(
            "Import an ONNX model with apache-tvm, lower it, plan its memory statically (one arena, a workspace "
            "sized by the plan, weights as constants) and write Model Library Format: the kernels, the model as "
            "one C function (model.h) and its plan. Any template generates a project from it."
        ),
    )
    comp.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    comp.add_argument("-o", "--output", required=True, metavar="FILE", help="the Model Library Format tar to write")
    comp.add_argument(
        "--target",
        default="host",
        metavar="T",
        help="host (default), or a core: cortex-m0plus, cortex-m3, cortex-m4, cortex-m7, cortex-m33, cortex-m55",
    )
    comp.add_argument(
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=SHAPE",
        help="a static shape for an input with dynamic dimensions, e.g. x=1,1,49,10 (repeatable)",
    )
    comp.add_argument("--name", help="the model's C name (default: from the file name)")
    add_json_flag(comp)
    comp.set_defaults(handler=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    from ..compile.model import compile_model
    from ..compile.onnx_frontend import parse_input_shapes

    output = Path(args.output)
    if output.is_dir():
        from ..errors import MicrotvmError

        raise MicrotvmError(f"--output {output} is a folder; name the .tar file to write")
    compiled = compile_model(
        Path(args.model), output, target=args.target, inputs=parse_input_shapes(args.inputs), name=args.name
    )
    summary = compiled.summary
    if summary["float_operators"]:
        print(
            f"microtvm: warning: {Path(args.model).name} is quantized (QDQ), but these of its operators stay float32: "
            f"{', '.join(summary['float_operators'])}",
            file=sys.stderr,
        )
    if args.json:
        print_json({"output": str(output), "name": compiled.name, "target": compiled.target, **summary})
        return 0
    ops = ", ".join(f"{op} x{n}" for op, n in summary["operators"].items())
    print(f"compiled {args.model} for {compiled.target} into {output} (model function {compiled.name!r})")
    print(f"  operators: {ops}")
    print(f"  kernels: {summary['kernels']} ({summary['calls']} calls)")
    print(f"  weights: {summary['weights_bytes']:,} bytes (constants, in flash)")
    print(f"  arena: {summary['arena_bytes']:,} bytes; workspace: {summary['workspace_bytes']:,} bytes (static, in RAM)")
    print(f"  inputs and outputs: {summary['io_bytes']:,} bytes")
    if summary["integer_operators"]:
        print(f"  int8: {', '.join(summary['integer_operators'])} run in integers (int8 weights and activations, int32 accumulation)")
    return 0
