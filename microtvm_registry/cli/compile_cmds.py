"""``microtvm compile``: a .tflite or .onnx model to Model Library Format (kernels, constants,
static plan); ``microtvm tune``: its kernels measured on a board."""
from __future__ import annotations

import argparse
from typing import Tuple
import sys
from pathlib import Path

from ..formats.names import printable
from ._common import add_json_flag, print_json


def register(subparsers) -> None:
    """Add ``compile``."""
    comp = subparsers.add_parser(
        "compile",
        help="compile a .tflite or .onnx model to Model Library Format with a static memory plan",
        description=(
            "Import a TFLite or ONNX model (told apart by its content), lower it with apache-tvm, plan its memory "
            "statically (one arena, a workspace sized by the plan, weights as constants) and write Model Library "
            "Format: the kernels, the model as one C function (model.h) and its plan. An int8 TFLite model computes "
            "exactly what TensorFlow Lite Micro computes. Any template generates a project from it."
        ),
    )
    comp.add_argument("model", metavar="MODEL", help="the model: a .tflite (TFLite) or .onnx (ONNX) file")
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
    comp.add_argument(
        "--kernels",
        choices=("tvm", "cmsis-nn"),
        default="tvm",
        help="who computes the layers: tvm (default: a TVM kernel each, on any target) or cmsis-nn (an int8 .tflite's "
        "layers CMSIS-NN has, as calls of arm/cmsis-nn from the registry; the rest TVM's)",
    )
    comp.add_argument("--records", metavar="FILE", nargs="+",
                      help="tuning records from `microtvm tune` (one file or several: shards, boards): build each kernel with its best schedule")
    comp.add_argument("--board", metavar="BOARD", help="with --records: use only records measured on this board")
    add_json_flag(comp)
    comp.set_defaults(handler=cmd_compile)

    tune = subparsers.add_parser(
        "tune",
        help="tune a model's kernels on a board (emulated or real), keeping the measurements as records",
        description=(
            "For each distinct kernel of the compiled model, build schedule candidates into one firmware, run them "
            "on the board through the Project API, check each against the default kernel's output and time it with "
            "the board's own counter (instructions under QEMU -icount, cycles on a real board). Every measurement "
            "is appended to the records file at once: Ctrl-C keeps them and a re-run resumes. Then "
            "`microtvm compile --records FILE` builds the model with the best schedule per kernel."
        ),
    )
    tune.add_argument("model", metavar="MODEL", help="the model: a .tflite or .onnx file")
    tune.add_argument("--board", required=True, metavar="BOARD", help="a board of the cortex-m template, e.g. mps2-an386")
    tune.add_argument("--trials", type=int, metavar="N", help="candidates per kernel besides the default (default: all)")
    tune.add_argument("--records", metavar="FILE", help="the JSON-lines records file (default: MODEL.BOARD.records.jsonl beside the model)")
    tune.add_argument("--input", dest="inputs", action="append", default=[], metavar="NAME=SHAPE",
                      help="a static shape for an input with dynamic dimensions (repeatable)")
    tune.add_argument("--jobs", type=int, default=1, metavar="N",
                      help="kernels measured at once, each on its own emulated board (default 1)")
    tune.add_argument("--shard", type=_shard, metavar="I/N",
                      help="measure only shard I of N of the candidates (spread one model over N machines; "
                           "give compile every shard's records file)")
    add_json_flag(tune)
    tune.set_defaults(handler=cmd_tune)


def cmd_compile(args: argparse.Namespace) -> int:
    from ..compile.model import compile_model
    from ..compile.frontends import parse_input_shapes

    output = Path(args.output)
    if output.is_dir():
        from ..errors import MicrotvmError

        raise MicrotvmError(f"--output {output} is a folder; name the .tar file to write")
    compiled = compile_model(
        Path(args.model), output, target=args.target, inputs=parse_input_shapes(args.inputs), name=args.name,
        records=[Path(r) for r in args.records] if args.records else None, board=args.board, kernels=args.kernels,
    )
    summary = dict(compiled.summary, libraries=[{k: v for k, v in lib.items() if k != "sources"} for lib in compiled.libraries])
    if args.records:
        summary = dict(summary, tuned=compiled.tuned, untuned=compiled.untuned, refused=compiled.refused)
        for why in compiled.refused:
            print(f"microtvm: warning: a record failed the host check and was not used: {why}", file=sys.stderr)
        if compiled.untuned:
            print(f"microtvm: {len(compiled.untuned)} kernels had no record for {compiled.target}"
                  f"{' on ' + args.board if args.board else ''}, built as by default: {', '.join(compiled.untuned)}", file=sys.stderr)
    if summary["float_operators"]:
        print(
            f"microtvm: warning: {Path(args.model).name} is quantized (QDQ), but these of its operators stay float32: "
            f"{', '.join(summary['float_operators'])}",
            file=sys.stderr,
        )
    if args.json:
        print_json({"output": str(output), "name": compiled.name, "target": compiled.target, "format": compiled.format,
                    "arithmetic": compiled.arithmetic, **summary})
        return 0
    ops = ", ".join(f"{op} x{n}" for op, n in summary["operators"].items())
    print(f"compiled {args.model} for {compiled.target} into {output} (model function {compiled.name!r})")
    print(f"  operators: {ops}")
    print(f"  kernels: {summary['kernels']} ({summary['calls']} calls)")
    for lib in compiled.libraries:
        print(f"  {lib['name']} {lib['version']} (content id {lib['content_id'][:12]}): "
              f"{summary['calls_by_provider'].get(lib['provider'], 0)} of the calls, {len(lib['sources'])} of its sources built")
    on_board = compiled.target != "host"
    print(f"  weights: {summary['weights_bytes']:,} bytes (constants, {'in flash' if on_board else 'read-only data'})")
    print(f"  arena: {summary['arena_bytes']:,} bytes; workspace: {summary['workspace_bytes']:,} bytes (static{', in RAM' if on_board else ''})")
    print(f"  inputs and outputs: {summary['io_bytes']:,} bytes")
    for kernel, how in sorted(compiled.tuned.items()):
        print(f"  tuned {kernel}: {how}")
    if summary["integer_operators"]:
        print(f"  int8: {', '.join(summary['integer_operators'])} run in integers (int8 weights and activations, int32 accumulation), "
              f"{ARITHMETIC_WORDS.get(compiled.arithmetic, compiled.arithmetic)}")
    for kind, slots in (("input", summary["inputs"]), ("output", summary["outputs"])):
        for t in slots:
            quant = f", scale {t['scale']:.6g} zero point {t['zero_point']}" if "scale" in t else ""
            print(f"  {kind} {printable(t['name'])} (C: {t['c_name']}): {t['dtype']} {tuple(t['shape'])}{quant}")
    return 0


#: What each integer arithmetic means, in the words the summary prints.
ARITHMETIC_WORDS = {
    "tflite-micro": "as TensorFlow Lite Micro computes them (bit for bit)",
    "onnxruntime": "as onnxruntime's QDQ semantics (within one step)",
}


def _shard(text: str) -> Tuple[int, int]:
    parts = text.split("/")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not 1 <= int(parts[0]) <= int(parts[1]):
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 1 <= I <= N (e.g. 2/4)")
    return int(parts[0]), int(parts[1])


def cmd_tune(args: argparse.Namespace) -> int:
    from ..compile.frontends import parse_input_shapes
    from ..tuning.tuner import tune_model

    model = Path(args.model)
    records = Path(args.records) if args.records else model.with_name(f"{model.stem}.{args.board}.records.jsonl")
    if args.trials is not None and args.trials < 0:
        from ..errors import OptionError

        raise OptionError(f"--trials {args.trials} is negative; give a number of candidates >= 0")
    bar = None
    from ..progress import wanted

    if wanted() and not args.json:  # a terminal, and not -q
        from tqdm import tqdm

        bar = tqdm(desc="tuning", unit="candidate", file=sys.stderr, leave=False)

    def progress(kind: str, result) -> None:
        if bar is None:
            return
        if kind == "measured":
            bar.update(1)
        best = f"{result.best_count:,.0f}" if result.best_count is not None else "-"
        bar.set_postfix_str(f"{result.kernel}: best {best} (default {result.default_count or 0:,.0f})")

    try:
        report = tune_model(model, args.board, records, trials=args.trials, inputs=parse_input_shapes(args.inputs), progress=progress,
                            jobs=args.jobs, shard=args.shard)
    finally:
        if bar is not None:
            bar.close()
    rate = report.measured / (report.seconds / 60) if report.seconds > 0 else 0.0
    rows = []
    for k in report.kernels:
        speed = f"{k.default_count / k.best_count:.2f}x" if k.default_count and k.best_count else "-"
        rows.append({"kernel": k.kernel, "default": k.default_count, "best": k.best_count, "speedup": speed,
                     "schedule": k.best.describe() if k.best else None, "measured": k.measured, "cached": k.skipped,
                     "not_applicable": k.not_applicable, "wrong": k.wrong})
    if args.json:
        print_json({"board": report.board, "target": report.target, "unit": report.unit, "records": str(records),
                    "measured": report.measured, "seconds": report.seconds, "kernels": rows})
        return 0
    from ._common import print_table

    print_table(
        ["KERNEL", f"DEFAULT ({report.unit or 'count'})", "BEST", "SPEEDUP", "SCHEDULE"],
        [[r["kernel"], f"{r['default']:,.0f}" if r["default"] else "(cached)", f"{r['best']:,.0f}" if r["best"] else "-",
          r["speedup"], r["schedule"] or "-"] for r in rows],
    )
    print(f"{report.measured} candidates measured on {report.board} in {report.seconds:.0f} s ({rate:.1f} per minute); "
          f"records: {records}; apply them with: microtvm compile {model} -o model.tar --target {report.target} --records {records}")
    return 0
