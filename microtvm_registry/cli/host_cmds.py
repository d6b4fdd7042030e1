"""``microtvm run`` and ``microtvm demo``: run kernels in a project from the command line.

``run`` feeds .npy files to a function of a built project (host, or a flashed cortex-m board)
and writes its outputs as .npy. ``demo`` is the whole loop with nothing but pip packages:
compile a small network with today's apache-tvm, export it to Model Library Format, generate a
project from the packaged ``host`` template (or ``cortex-m`` with ``--board``), build it, run it
and check the answer against numpy. numpy and tvm are imported inside the handlers only.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..formats.names import printable
from ..errors import MicrotvmError, OptionError, first_line
from ._common import (add_json_flag, add_option_flag, parse_key_values, print_json, resolve_auto_port, session_project, timeout_seconds,
                      usable_folder)

#: Same value as device.session.DEFAULT_REPLY_TIMEOUT_SEC (not imported: keeps the parser light).
_DEFAULT_REPLY_TIMEOUT = 300.0

TVM_MISSING = "apache-tvm is not installed; pip install 'microtvm-registry[tvm]'"



def register(subparsers) -> None:
    """Add ``run`` and ``demo``."""
    run = subparsers.add_parser(
        "run",
        help="run a function of a built project on .npy inputs",
        description=(
            "Run a function of a built project (host, or a flashed cortex-m board): inputs from .npy files; "
            "outputs printed (small ones; all with --json) and, with --output-dir, written as .npy."
        ),
    )
    run.add_argument("project_dir", metavar="PROJECT_DIR", help="a generated and built (and, for a board, flashed) project")
    run.add_argument(
        "-i",
        "--input",
        dest="inputs",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="an input argument, repeatable (just FILE.npy for a model's only input)",
    )
    run.add_argument("-f", "--function", help="function to run (default: the model's only function)")
    run.add_argument("--output-dir", default=None, metavar="DIR",
                     help="write each output as DIR/OUTPUT.npy (without it nothing is written: small outputs are printed, --json prints all)")
    run.add_argument("--quantize-inputs", action="store_true",
                     help="float .npy inputs for a quantized input are quantized with its scale and zero point")
    run.add_argument("--dequantize-outputs", action="store_true",
                     help="print quantized outputs as real numbers, (q - zero point) x scale (the .npy files keep the integers)")
    run.add_argument(
        "--time",
        action="store_true",
        help="also time the function on the device (its own counter: instructions under QEMU -icount, cycles on a real board)",
    )
    run.add_argument(
        "--timeout",
        type=timeout_seconds,
        default=_DEFAULT_REPLY_TIMEOUT,
        metavar="SECONDS",
        help=f"how long the device may take to answer each request (default {_DEFAULT_REPLY_TIMEOUT:g}; 0 = no limit)",
    )
    add_option_flag(run)  # open_transport options, e.g. -o serial_port=/dev/ttyACM0 (or auto) for a real board
    add_json_flag(run)
    run.set_defaults(handler=cmd_run)

    demo = subparsers.add_parser(
        "demo",
        help="compile a small network with apache-tvm, run it in a host project or on a board, check it against numpy",
        description=(
            "Compile dense + bias_add + relu with apache-tvm (target c), export it to Model Library Format, "
            "generate a project from the packaged host template (or cortex-m for --board), build it, run it "
            "and compare with numpy."
        ),
    )
    demo.add_argument(
        "--board",
        default="host",
        metavar="BOARD",
        help="host (default), or a board of the cortex-m template, e.g. mps2-an386 (emulated by QEMU)",
    )
    demo.add_argument("--workdir", metavar="DIR", help="work in DIR (kept) instead of a temporary folder")
    demo.add_argument("--keep", action="store_true", help="keep the temporary work folder and print its path")
    demo.set_defaults(handler=cmd_demo)


# ------------------------------------------------------------------------------------------ run


#: ``-i FILE.npy`` without a name: the function's only input.
ONLY_INPUT = ""


def _parse_inputs(pairs: List[str]) -> Dict[str, Path]:
    inputs: Dict[str, Path] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep:
            name, file = ONLY_INPUT, pair
        if (sep and not name) or not file:
            raise OptionError(f"--input {pair!r} is not of the form NAME=FILE.npy (or FILE.npy for a model's only input)")
        if name in inputs:
            raise OptionError(f"--input {name or 'FILE.npy'} is given twice; give each input once")
        inputs[name] = Path(file)
    return inputs


def _bind_only_input(arrays: Dict[str, Any], fn: Any) -> Dict[str, Any]:
    """``-i FILE.npy`` (no name) given to the function's one input; one line when it has more."""
    if ONLY_INPUT not in arrays:
        return arrays
    names = [a.name for a in fn.inputs]
    if len(names) != 1:
        raise OptionError(
            f"{fn.name} takes {len(names)} inputs ({', '.join(names)}); give each as -i NAME=FILE.npy"
        )
    bound = dict(arrays)
    bound[names[0]] = bound.pop(ONLY_INPUT)
    return bound


def _save_npy(path: Path, array: Any) -> None:
    """Write beside the target and rename, so a failure never leaves half a file; a symlink
    planted at the name is replaced, never written through."""
    import io

    import numpy as np

    from ..files import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue(), follow_symlinks=False)


def output_files(out_dir: Path, names: List[str]) -> Dict[str, Path]:
    """Each output's file inside ``out_dir``: named from a C-safe identifier (an output's name
    is the model's data: ``../../x`` or ``/abs/x`` must not choose where a file goes)."""
    from ..formats.names import c_identifiers

    return {name: out_dir / f"{stem}.npy" for name, stem in zip(names, c_identifiers(names))}


def _read_npy(np: Any, name: str, file: Any) -> Any:
    """One array from a .npy file, whatever the file is called: np.load opens a zip (an .npz
    renamed .npy, or any zip) as an archive, which is not an input."""
    what = f"input {name} from {file}" if name != ONLY_INPUT else f"input file {file}"
    fix = "pass a .npy file (-i FILE.npy, or -i NAME=FILE.npy), written by numpy.save"
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise MicrotvmError(f"cannot read {what}: {printable(first_line(err))}; {fix}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    close = getattr(loaded, "close", None)
    held = list(getattr(loaded, "files", []))
    if close is not None:
        close()
    inside = f" holding {', '.join(printable(h) for h in held[:5])}{', ...' if len(held) > 5 else ''}" if held else ""
    raise MicrotvmError(f"{what} is a zip archive{inside}, not one array (an .npz renamed .npy?); {fix}, one per input")


def cmd_run(args: argparse.Namespace) -> int:
    project_dir = session_project(args.project_dir)
    import numpy as np

    from ..device.session import Session

    if args.output_dir is not None:
        usable_folder(args.output_dir, "--output-dir", create=False)  # before the device does any work
    input_files = _parse_inputs(args.inputs)
    arrays = {}
    for name, file in input_files.items():
        arrays[name] = _read_npy(np, name, file)
    written: List[Dict[str, Any]] = []
    timing = None
    per_call: List[Any] = []
    with Session.open(project_dir, resolve_auto_port(parse_key_values(args.options)), timeout_sec=args.timeout) as sess:
        names = [f.name for f in sess.functions]
        function = args.function
        if function is None and sess.model is not None:
            function = sess.model["function"]  # a compiled model: the whole inference
        if function is None:
            if len(names) != 1:
                raise OptionError(f"the model has {len(names)} functions ({', '.join(names)}); pick one with --function")
            function = names[0]
        arrays = _bind_only_input(arrays, sess.function(function))
        if args.quantize_inputs:
            arrays = _quantize_inputs(arrays, sess, function)
        outputs = sess.run(function, arrays)
        sess_model = sess.model
        if args.time:
            fn = sess.function(function)
            given = [arrays[a.name] if a.role != "output" else outputs[a.name] for a in fn.args]
            timing = sess.time_evaluator(function, number=RUN_TIME_NUMBER, repeat=RUN_TIME_REPEAT)(*given)
            if sess.model is not None and function == sess.model["function"]:
                per_call = sess.call_times()
    shown = _dequantized(outputs, sess_model, function) if args.dequantize_outputs else outputs
    paths = output_files(Path(args.output_dir), list(outputs)) if args.output_dir is not None else {}
    for name, value in outputs.items():
        item: Dict[str, Any] = {"name": name, "dtype": str(value.dtype), "shape": list(value.shape)}
        if name in paths:
            _save_npy(paths[name], value)
            item["path"] = str(paths[name])
        written.append(item)
    if getattr(args, "json", False):
        for item in written:
            item["values"] = shown[item["name"]].tolist()
            if shown[item["name"]] is not outputs[item["name"]]:
                item["dequantized"] = True
        result: Dict[str, Any] = {"function": function, "outputs": written}
        if timing is not None:
            result["time"] = {
                "unit": timing.unit,
                "mean_count": timing.mean_count,
                "mean_seconds": timing.mean,
                "counts": list(timing.counts),
                "seconds": list(timing.results),
                "number": timing.number,
            }
            if per_call:
                result["time"]["calls"] = [{"kernel": k, "count": c, "unit": u} for k, c, u in per_call]
        print_json(result)
    else:
        for item in written:
            value = shown[item["name"]]
            if "path" in item:
                print(f"wrote {printable(item['path'])} ({item['dtype']}, shape {tuple(item['shape'])})")
            elif value.size <= PRINTED_VALUES:
                print(f"output {printable(item['name'])} ({item['dtype']}, shape {tuple(item['shape'])}): {value.reshape(-1).tolist()}")
            else:
                print(f"output {printable(item['name'])} ({item['dtype']}, shape {tuple(item['shape'])}): {value.size:,} values; "
                      "--output-dir DIR writes them as .npy, --json prints them")
        if timing is not None:
            where = "on the device" if timing.unit in ("instructions", "cycles") else "in the host process (wall clock)"
            print(f"time of {function} {where}: {describe_timing(timing)} (mean of {len(timing.results)} x {timing.number})")
            for n, (kernel, count, unit) in enumerate(per_call):
                print(f"  call {n}: {kernel}: {count:,.0f} {unit}")
    return 0


RUN_TIME_NUMBER, RUN_TIME_REPEAT = 10, 3
#: Outputs of at most this many values are printed (a classifier's scores); larger ones are not.
PRINTED_VALUES = 64


def _dequantized(outputs: Dict[str, Any], model: Optional[Dict[str, Any]], function: str) -> Dict[str, Any]:
    """The model's quantized outputs as real numbers; everything else as it is."""
    if model is None or model.get("function") != function:
        raise OptionError("--dequantize-outputs needs a compiled model's own function (its outputs' scale and zero point)")
    facts = {str(f["c_name"]): f for f in model.get("outputs") or []}
    shown = {}
    for name, value in outputs.items():
        fact = facts.get(name)
        if fact is not None and fact.get("scale") is not None:
            value = (value.astype("float64") - int(fact["zero_point"])) * float(fact["scale"])
        shown[name] = value
    return shown


def _quantize_inputs(arrays: Dict[str, Any], sess: Any, function: str) -> Dict[str, Any]:
    """Float arrays given for the model's quantized inputs, quantized with their scale and zero point."""
    from ..verify.samples import quantize

    model = sess.model
    if model is None or model.get("function") != function:
        raise OptionError("--quantize-inputs needs a compiled model's own function (its inputs' scale and zero point)")
    facts = {}
    for fact in model.get("inputs") or []:
        facts[str(fact["name"])] = fact
        facts[str(fact["c_name"])] = fact
    out = {}
    for name, value in arrays.items():
        fact = facts.get(name)
        if fact is not None and value.dtype.kind == "f" and fact.get("scale") is not None:
            value = quantize(value, fact, f"input {name}")
        out[name] = value
    return out


def describe_timing(timing: Any) -> str:
    """A device timing in the words that say what was counted (never instructions as cycles)."""
    if timing.unit in ("instructions", "cycles"):
        return (
            f"{timing.mean_count:.0f} {timing.unit} per call"
            + (" (QEMU -icount: exact), " if timing.unit == "instructions" else ", ")
            + f"{timing.mean * 1e6:.1f} us at the board's clock"
        )
    return f"{timing.mean * 1e6:.2f} us"


# ----------------------------------------------------------------------------------------- demo

BATCH, IN_FEATURES, OUT_FEATURES = 4, 64, 32


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", file=sys.stderr, flush=True)


def build_demo_module() -> Any:
    """dense, bias_add and relu as separate kernels, plus the three fused into one."""
    import tvm
    from tvm import te

    x = te.placeholder((BATCH, IN_FEATURES), name="x", dtype="float32")
    w = te.placeholder((OUT_FEATURES, IN_FEATURES), name="w", dtype="float32")
    b = te.placeholder((OUT_FEATURES,), name="b", dtype="float32")
    k = te.reduce_axis((0, IN_FEATURES), name="k")
    dense = te.compute((BATCH, OUT_FEATURES), lambda i, j: te.sum(x[i, k] * w[j, k], axis=k), name="dense_out")
    h = te.placeholder((BATCH, OUT_FEATURES), name="h", dtype="float32")
    biased = te.compute((BATCH, OUT_FEATURES), lambda i, j: h[i, j] + b[j], name="bias_out")
    g = te.placeholder((BATCH, OUT_FEATURES), name="g", dtype="float32")
    relu = te.compute((BATCH, OUT_FEATURES), lambda i, j: te.max(g[i, j], tvm.tirx.const(0, "float32")), name="relu_out")
    # Fused: the intermediate tensors stay inside the kernel.
    k2 = te.reduce_axis((0, IN_FEATURES), name="k2")
    fdense = te.compute((BATCH, OUT_FEATURES), lambda i, j: te.sum(x[i, k2] * w[j, k2], axis=k2), name="fdense")
    fout = te.compute(
        (BATCH, OUT_FEATURES), lambda i, j: te.max(fdense[i, j] + b[j], tvm.tirx.const(0, "float32")), name="y"
    )
    return tvm.IRModule(
        {
            "dense": te.create_prim_func([x, w, dense]),
            "bias_add": te.create_prim_func([h, b, biased]),
            "relu": te.create_prim_func([g, relu]),
            "dense_bias_relu": te.create_prim_func([x, w, b, fout]),
        }
    )


def _check_board_tools(board: str) -> None:
    """Before any work: the tools a board needs (its family's toolchain, and its emulator for an
    emulated board), each missing one named with the packages that provide it."""
    import json
    import shutil

    from ..packaged import get_packaged_resource
    from ..targets import family_of

    with open(get_packaged_resource("templates/cortex-m/boards.json"), encoding="utf-8") as fh:
        boards = {b["name"]: b for b in json.load(fh)["boards"]}
    if board not in boards:
        raise OptionError(f"--board {board!r} is not a board of the cortex-m template; boards: host, {', '.join(sorted(boards))}")
    family = family_of(boards[board]["core"])
    needs = [family.toolchain] + ([family.emulator] if family.emulator and boards[board].get("qemu") else [])
    missing = [tool for tool in needs if shutil.which(tool.tools[0]) is None]
    if missing:
        packages = [p for tool in missing for p in tool.packages]
        raise MicrotvmError(
            f"--board {board} needs {', '.join(t.tools[0] for t in missing)}; install with: apt-get install {' '.join(packages)}"
        )


def _demo_project(template_name: str, mlf_path: Path, project_dir: Path, board: Optional[str]) -> Any:
    """Generated, built and (on a board) flashed project from the packaged template."""
    from ..packaged import get_packaged_resource
    from ..project import generate_project

    options = {"board": board} if board else None
    project = generate_project(get_packaged_resource(f"templates/{template_name}"), mlf_path, project_dir, options)
    try:
        project.build()
        if board:
            project.flash()
    except BaseException:
        project.close()
        raise
    return project


def _demo_kernels(workdir: Path, board: Optional[str], step: Callable[[str], None]) -> bool:
    """Part 1: dense, bias_add, relu and their fusion, written in TVM's TE, checked against numpy."""
    import numpy as np
    import tvm

    from ..compile.mlf import export_model_library_format
    from ..device.session import Session

    where = board or "host"
    step(f"compiling dense, bias_add, relu and their fusion with apache-tvm {tvm.__version__} (target c)")
    mlf_path = export_model_library_format(build_demo_module(), workdir / "model.tar", model_name="demo")
    name = "cortex-m" if board else "host"
    step(f"generating, building{' and flashing' if board else ''} a {name} project for {where} (Model Library Format {mlf_path.name})")
    project = _demo_project(name, mlf_path, workdir / f"{where}-project", board)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, IN_FEATURES), dtype=np.float32)
    w = rng.standard_normal((OUT_FEATURES, IN_FEATURES), dtype=np.float32)
    b = rng.standard_normal((OUT_FEATURES,), dtype=np.float32)
    expected = np.maximum(x @ w.T + b, 0)
    step(f"running the kernels on {where}{' over its serial line' if board else ''} and comparing with numpy")
    try:
        with Session.open(project) as sess:
            h = sess.run("dense", {"x": x, "w": w})["dense_out"]
            g = sess.run("bias_add", {"h": h, "b": b})["bias_out"]
            separate = sess.run("relu", {"g": g})["relu_out"]
            fused = sess.run("dense_bias_relu", {"x": x, "w": w, "b": b})["y"]
            number = 10 if board else 100
            timing = sess.time_evaluator("dense_bias_relu", number=number, repeat=3)(x, w, b, np.zeros_like(expected))
    finally:
        project.close()
    err_separate = float(np.max(np.abs(separate - expected)))
    err_fused = float(np.max(np.abs(fused - expected)))
    ok = bool(np.allclose(separate, expected, rtol=1e-4, atol=1e-4) and np.allclose(fused, expected, rtol=1e-4, atol=1e-4))
    print(
        f"  separate kernels: max abs error {err_separate:.3g}; fused kernel: max abs error {err_fused:.3g}; "
        f"fused kernel time on the device {describe_timing(timing)} (mean of {len(timing.results)} x {timing.number})",
        file=sys.stderr,
    )
    where_words = f"on {board}" if board else "on the host device"
    print(f"demo: dense+bias+relu {where_words} vs numpy: max abs error {max(err_separate, err_fused):.3g}: {'OK' if ok else 'FAIL'}")
    return ok


def _demo_target(board: Optional[str]) -> str:
    if not board:
        return "host"
    from ..boards.database import load_board_database

    return load_board_database().get(board).core


def _demo_tflite(workdir: Path, board: Optional[str], step: Callable[[str], None]) -> bool:
    """Part 2: an int8 keyword-spotting .tflite (built in code, TFLite's own schema) compiled
    whole, run on the device, checked against TensorFlow Lite Micro's interpreter: bit for bit."""
    import numpy as np

    from ..compile.model import compile_model
    from ..compile.sample_models import demo_kws_tflite
    from ..device.session import Session

    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise MicrotvmError("the TFLite demo needs tflite-micro (TFLite Micro's interpreter); pip install 'microtvm-registry[tvm]'") from None
    where, target = board or "host", _demo_target(board)
    model_path = workdir / "kws.tflite"
    model_path.write_bytes(demo_kws_tflite())
    step(f"compiling an int8 keyword-spotting model ({model_path.name}, built in code) for {target}: TFLite Micro's arithmetic")
    compiled = compile_model(model_path, workdir / "kws-tflite.tar", target=target)
    name = "cortex-m" if board else "host"
    project = _demo_project(name, compiled.path, workdir / f"{where}-tflite-project", board)
    features = np.random.default_rng(2).uniform(-2, 2, (1, 10, 6, 1)).astype(np.float32)
    interpreter = runtime.Interpreter.from_file(str(model_path))
    interpreter.set_input(features, 0)
    interpreter.invoke()
    expected = interpreter.get_output(0)
    step(f"running it on {where} and comparing with TensorFlow Lite Micro's interpreter")
    try:
        with Session.open(project) as sess:
            got = sess.run(compiled.name, {"features": features})["probabilities"]
    finally:
        project.close()
    ok = bool(np.array_equal(got, expected))
    where_words = f"on {board}" if board else "on the host device"
    print(f"demo: int8 .tflite model {where_words} vs TensorFlow Lite Micro: {'identical' if ok else 'DIFFERENT'}: {'OK' if ok else 'FAIL'}")
    return ok


def _demo_model(workdir: Path, board: Optional[str], step: Callable[[str], None]) -> bool:
    """Part 2: a keyword-spotting-shaped ONNX network (built in code) compiled whole with a static
    plan, run on the device, checked against onnxruntime."""
    import numpy as np

    from ..compile.model import compile_model
    from ..compile.sample_models import demo_kws
    from ..device.session import Session

    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise MicrotvmError("the model demo needs onnx and onnxruntime; pip install 'microtvm-registry[tvm]'") from None
    where, target = board or "host", _demo_target(board)
    model_path = workdir / "kws.onnx"
    onnx.save(demo_kws(), str(model_path))
    step(f"compiling a keyword-spotting network ({model_path.name}, built in code) for {target}: static plan, one C module")
    compiled = compile_model(model_path, workdir / "kws.tar", target=target)
    summary = compiled.summary
    print(
        f"  {summary['calls']} kernel calls; weights {summary['weights_bytes']:,} B (flash), arena {summary['arena_bytes']:,} B "
        f"+ workspace {summary['workspace_bytes']:,} B (static RAM)",
        file=sys.stderr,
    )
    name = "cortex-m" if board else "host"
    step(f"generating, building{' and flashing' if board else ''} a {name} project for the model")
    project = _demo_project(name, compiled.path, workdir / f"{where}-kws-project", board)
    x = np.random.default_rng(1).standard_normal((1, 1, 10, 6)).astype(np.float32)
    (expected,) = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    step(f"running the whole network on {where} and comparing with onnxruntime")
    try:
        with Session.open(project) as sess:
            got = sess.run(compiled.name, {"input": x})["probabilities"]
            timing = sess.time_evaluator(compiled.name, number=5 if board else 100, repeat=3)(x, np.zeros_like(expected))
    finally:
        project.close()
    error = float(np.max(np.abs(got - expected)))
    ok = bool(np.allclose(got, expected, rtol=1e-4, atol=1e-5))
    print(f"  one inference on the device: {describe_timing(timing)}", file=sys.stderr)
    where_words = f"on {board}" if board else "on the host device"
    print(f"demo: keyword-spotting network {where_words} vs onnxruntime: max abs error {error:.3g}: {'OK' if ok else 'FAIL'}")
    return ok


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        import numpy  # noqa: F401
        import tvm  # noqa: F401
    except ImportError:
        raise MicrotvmError(TVM_MISSING) from None

    board = None if args.board in (None, "host") else args.board
    if board:
        _check_board_tools(board)
    if args.workdir:
        workdir = usable_folder(args.workdir, "--workdir").absolute()
        temporary = False
    else:
        import tempfile

        workdir = Path(tempfile.mkdtemp(prefix="microtvm-demo-"))
        temporary = True
    where = board or "host"
    for leftover in (workdir / f"{where}-project", workdir / f"{where}-tflite-project", workdir / f"{where}-kws-project"):
        if leftover.exists():
            raise MicrotvmError(f"{leftover} already exists from an earlier demo; remove it or pass another --workdir")
    total = 8
    counter = iter(range(1, total + 1))

    def step(text: str) -> None:
        _step(next(counter), total, text)

    try:
        ok = _demo_kernels(workdir, board, step)
        ok = _demo_tflite(workdir, board, step) and ok
        ok = _demo_model(workdir, board, step) and ok
    finally:
        if temporary and not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        elif temporary:
            print(f"demo: work folder kept at {workdir}", file=sys.stderr)
    return 0 if ok else 1
