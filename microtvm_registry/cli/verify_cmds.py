"""``microtvm verify``: a built project against its model's reference interpreter (the library's
:mod:`microtvm_registry.verify`); exit 1 when an output differs beyond what the model's
arithmetic allows, so CI can gate on it."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..formats.names import printable
from ._common import add_json_flag, add_option_flag, parse_key_values, print_json, resolve_auto_port, session_project, timeout_seconds

_DEFAULT_REPLY_TIMEOUT = 300.0  # as device.session.DEFAULT_REPLY_TIMEOUT_SEC (not imported: keeps the parser light)


def _samples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{value} is not between 1 and 10000")
    return value


def register(subparsers) -> None:
    """Add ``verify``."""
    verify = subparsers.add_parser(
        "verify",
        help="run a built project and its model's reference interpreter on the same inputs and compare",
        description=(
            "Run a built (and, for a board, flashed) project on seeded inputs or your .npy files, run the model's "
            "reference (TFLite Micro's interpreter for .tflite, onnxruntime for .onnx) on the same inputs, and "
            "compare each output within the tolerance the model's arithmetic promises. Exit 1 when they differ."
        ),
    )
    verify.add_argument("project_dir", metavar="PROJECT_DIR", help="a generated and built project")
    verify.add_argument("--against", required=True, metavar="MODEL", help="the .tflite or .onnx file the project was compiled from")
    verify.add_argument("--samples", type=_samples, default=8, metavar="N", help="how many seeded inputs (default 8)")
    verify.add_argument("--seed", type=int, default=0, help="the seed of the inputs (default 0)")
    verify.add_argument("--inputs", metavar="DIR",
                        help="your inputs instead: .npy files (one per sample), or one subfolder per sample with NAME.npy per input")
    verify.add_argument("--quantize-inputs", action="store_true",
                        help="float .npy inputs for a quantized input are quantized with its scale and zero point")
    verify.add_argument("--timeout", type=timeout_seconds, default=_DEFAULT_REPLY_TIMEOUT, metavar="SECONDS",
                        help=f"how long the device may take to answer each request (default {_DEFAULT_REPLY_TIMEOUT:g}; 0 = no limit)")
    add_option_flag(verify)
    add_json_flag(verify)
    verify.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    project = session_project(args.project_dir)
    from ..verify import verify_project

    result = verify_project(
        project, Path(args.against), samples=args.samples, seed=args.seed,
        inputs=Path(args.inputs) if args.inputs else None, quantize_inputs=args.quantize_inputs,
        options=resolve_auto_port(parse_key_values(args.options)), timeout=args.timeout,
    )
    if getattr(args, "json", False):
        print_json(result.to_json())
    else:
        print(f"verify {printable(str(project))} against {printable(result.model.name)} ({result.reference}; "
              f"{result.samples} sample(s); arithmetic {result.arithmetic})")
        for c in result.outputs:
            top1 = f", top-1 agrees on {c.top1_agree} of {c.top1_total}" if c.top1_total else ""
            print(f"  output {printable(c.name)} ({c.dtype} {c.shape}): max difference {c.max_diff:g} {c.unit} "
                  f"(tolerance {c.tolerance:g}){top1}")
        print(result.verdict)
    return 0 if result.ok else 1
