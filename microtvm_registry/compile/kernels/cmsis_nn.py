"""The ``cmsis-nn`` kernel provider: a TFLite int8 layer CMSIS-NN computes becomes one call of its s8
API (``arm_convolve_wrapper_s8`` and friends pick its fastest variant for the core), with every
parameter fixed at compile time.

How a call reaches the firmware:

* the frontend asks :class:`CmsisNN` for the layer (``conv2d``, ``depthwise_conv2d``,
  ``fully_connected``, ``avg_pool2d``, ``max_pool2d``, ``softmax``, ``add``); where CMSIS-NN
  computes it, the layer is emitted into Relax as ``call_dps_packed`` of a wrapper of ours, whose
  arguments are the input, the constants (weights, bias, per-channel multipliers and shifts: flash)
  and, before the output, the scratch buffer the library asks for, sized by the library itself for
  the target's core (library.HostProgram). TVM's memory planning then places that scratch in the
  one static arena like any tensor, reusing the space of tensors dead at that call.
* each wrapper is C of ours (``<model>_cmsis_nn.c`` in the MLF): the layer's parameter structs as
  static constants, and the library call on the slots' data. It has the function table's calling
  convention too, so a session calls and times one layer as it does a TVM kernel.
* the MLF's metadata names the library (name, version, content id) and the sources the calls need;
  a template copies those from the verified cache entry into the project and builds them.

Arithmetic: CMSIS-NN's s8 kernels compute TFLite's (TFLite Micro links them), so outputs equal
TFLite Micro's; the tests check that against the tflite-micro interpreter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...formats.mlf import SYMBOL_PREFIX, ArgInfo, FunctionInfo
from ...formats.plan import Call
from .library import HostProgram, KernelLibrary, entry_files

if TYPE_CHECKING:  # pragma: no cover
    from ...targets import Core

NAME = "cmsis-nn"
#: The registry entry and the version compile uses unless the project's microtvm.lock pins
#: another: the commit TensorFlow Lite Micro pins, which tflm-anchor.json was measured with.
LIBRARY = "arm/cmsis-nn"
DEFAULT_SPEC = f"{LIBRARY}@==7.0.0.post20260617"

#: The library's functions our wrappers call, per layer kind.
ENTRIES = {
    "conv2d": "arm_convolve_wrapper_s8",
    "depthwise_conv2d": "arm_depthwise_conv_wrapper_s8",
    "fully_connected": "arm_fully_connected_s8",
    "fully_connected_per_channel": "arm_fully_connected_per_channel_s8",
    "avg_pool2d": "arm_avgpool_s8",
    "max_pool2d": "arm_max_pool_s8",
    "softmax": "arm_softmax_s8",
    "add": "arm_elementwise_add_s8",
}

# The host program answering buffer sizes (and FC kernel sums on MVE) with the library's own
# functions: one request per line, one line of integers per answer.
DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "arm_nnfunctions.h"

static cmsis_nn_dims read_dims(void) {
  cmsis_nn_dims d;
  if (scanf("%d %d %d %d", &d.n, &d.h, &d.w, &d.c) != 4) exit(2);
  return d;
}

static int read_int(void) {
  int v;
  if (scanf("%d", &v) != 1) exit(2);
  return v;
}

int main(void) {
  char op[32], variant[16];
  while (scanf("%31s %15s", op, variant) == 2) {
    int dsp = !strcmp(variant, "dsp"), mve = !strcmp(variant, "mve");
    if (!strcmp(op, "conv2d")) {
      cmsis_nn_conv_params p;
      memset(&p, 0, sizeof p);
      p.input_offset = read_int(); p.output_offset = read_int();
      p.stride.w = read_int(); p.stride.h = read_int(); p.padding.w = read_int(); p.padding.h = read_int();
      p.dilation.w = read_int(); p.dilation.h = read_int();
      p.activation.min = -128; p.activation.max = 127;
      cmsis_nn_dims in = read_dims(), f = read_dims(), out = read_dims();
      printf("%d\n", (int)(dsp ? arm_convolve_wrapper_s8_get_buffer_size_dsp(&p, &in, &f, &out)
                          : mve ? arm_convolve_wrapper_s8_get_buffer_size_mve(&p, &in, &f, &out)
                                : arm_convolve_wrapper_s8_get_buffer_size(&p, &in, &f, &out)));
    } else if (!strcmp(op, "depthwise_conv2d")) {
      cmsis_nn_dw_conv_params p;
      memset(&p, 0, sizeof p);
      p.input_offset = read_int(); p.output_offset = read_int(); p.ch_mult = read_int();
      p.stride.w = read_int(); p.stride.h = read_int(); p.padding.w = read_int(); p.padding.h = read_int();
      p.dilation.w = read_int(); p.dilation.h = read_int();
      p.activation.min = -128; p.activation.max = 127;
      cmsis_nn_dims in = read_dims(), f = read_dims(), out = read_dims();
      printf("%d\n", (int)(dsp ? arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp(&p, &in, &f, &out)
                          : mve ? arm_depthwise_conv_wrapper_s8_get_buffer_size_mve(&p, &in, &f, &out)
                                : arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &f, &out)));
    } else if (!strcmp(op, "fully_connected")) {
      cmsis_nn_dims f = read_dims();
      printf("%d\n", (int)(dsp ? arm_fully_connected_s8_get_buffer_size_dsp(&f)
                          : mve ? arm_fully_connected_s8_get_buffer_size_mve(&f)
                                : arm_fully_connected_s8_get_buffer_size(&f)));
    } else if (!strcmp(op, "avg_pool2d")) {
      int out_w = read_int(), ch = read_int();
      printf("%d\n", (int)(dsp ? arm_avgpool_s8_get_buffer_size_dsp(out_w, ch)
                          : mve ? arm_avgpool_s8_get_buffer_size_mve(out_w, ch)
                                : arm_avgpool_s8_get_buffer_size(out_w, ch)));
    } else if (!strcmp(op, "vector_sum")) {
      int cols = read_int(), rows = read_int(), lhs = read_int(), rhs = read_int(), has_bias = read_int();
      int8_t* data = malloc((size_t)cols * rows + 1);
      int32_t* bias = malloc(sizeof(int32_t) * (size_t)rows + 4);
      int32_t* sums = malloc(sizeof(int32_t) * (size_t)rows + 4);
      for (int i = 0; i < cols * rows; ++i) data[i] = (int8_t)read_int();
      for (int i = 0; has_bias && i < rows; ++i) bias[i] = read_int();
      arm_vector_sum_s8(sums, cols, rows, data, lhs, rhs, has_bias ? bias : NULL);
      for (int i = 0; i < rows; ++i) printf("%d%c", (int)sums[i], i + 1 < rows ? ' ' : '\n');
      free(data); free(bias); free(sums);
    } else {
      return 3;
    }
    fflush(stdout);
  }
  return 0;
}
"""

DRIVER_ENTRIES = [
    "arm_convolve_wrapper_s8_get_buffer_size", "arm_convolve_wrapper_s8_get_buffer_size_dsp",
    "arm_convolve_wrapper_s8_get_buffer_size_mve", "arm_depthwise_conv_wrapper_s8_get_buffer_size",
    "arm_depthwise_conv_wrapper_s8_get_buffer_size_dsp", "arm_depthwise_conv_wrapper_s8_get_buffer_size_mve",
    "arm_fully_connected_s8_get_buffer_size", "arm_fully_connected_s8_get_buffer_size_dsp",
    "arm_fully_connected_s8_get_buffer_size_mve", "arm_avgpool_s8_get_buffer_size", "arm_avgpool_s8_get_buffer_size_dsp",
    "arm_avgpool_s8_get_buffer_size_mve", "arm_vector_sum_s8",
]


def _dims(n: int, h: int, w: int, c: int) -> Tuple[int, int, int, int]:
    return (int(n), int(h), int(w), int(c))


def _c_dims(name: str, d: Tuple[int, int, int, int]) -> str:
    return f"  static const cmsis_nn_dims {name} = {{.n = {d[0]}, .h = {d[1]}, .w = {d[2]}, .c = {d[3]}}};"


@dataclass
class LibraryCall:
    """One layer CMSIS-NN computes: the wrapper's symbol, what it calls, and its arguments' roles
    (in the call's order: inputs, then the scratch buffer if any, then the output)."""

    symbol: str
    kind: str
    params: Dict[str, Any]
    args: List[Tuple[str, Tuple[int, ...], str]]  # (role, shape, dtype)
    scratch_bytes: int = 0

    def function(self) -> FunctionInfo:
        infos = []
        for i, (role, shape, dtype) in enumerate(self.args):
            infos.append(ArgInfo(role, shape, dtype, "output" if i == len(self.args) - 1 else "input"))
        return FunctionInfo(self.symbol, tuple(infos), 0)


@dataclass
class CmsisNN:
    """The layers of one compile that CMSIS-NN computes (the frontend asks; see the module
    docstring). ``core``: the target's, for the scratch sizes the library asks for on it."""

    library: KernelLibrary
    core: "Core"
    calls: List[LibraryCall] = field(default_factory=list)
    _pending: List[Tuple[str, str]] = field(default_factory=list)  # (request, symbol) for batched sizes

    name = NAME

    @property
    def variant(self) -> str:
        return "mve" if self.core.mve else "dsp" if self.core.dsp else "plain"

    def _helper(self) -> HostProgram:
        return HostProgram(self.library, "cmsis-nn-sizes", DRIVER, DRIVER_ENTRIES)

    def _size(self, request: str) -> int:
        (answer,) = self._helper().ask([request])
        return answer[0]

    # ------------------------------------------------------------------ layers

    def _emit(self, lowering: Any, kind: str, inputs: Sequence[Any], out_shape: Sequence[int], params: Dict[str, Any],
              roles: Sequence[str], scratch: int) -> Any:
        """The layer as ``call_dps_packed`` of its wrapper; the scratch buffer is a second output
        before the real one, so the plan places it in the arena and the output stays last."""
        from tvm import relax

        symbol = f"cmsis_nn_{kind}_{len(self.calls)}"
        args: List[Tuple[str, Tuple[int, ...], str]] = []
        for role, value in zip(roles, inputs):
            ty = value.ty
            args.append((role, tuple(int(d) for d in ty.shape.values), str(ty.dtype)))
        out_ty = relax.TensorType(shape=[int(d) for d in out_shape], dtype="int8")
        if scratch > 0:
            args.append(("scratch", (scratch,), "int8"))
            args.append(("output", tuple(int(d) for d in out_shape), "int8"))
            both = lowering.bb.emit(relax.call_dps_packed(symbol, list(inputs), [relax.TensorType(shape=[scratch], dtype="int8"), out_ty]))
            result = lowering.bb.emit(relax.TupleGetItem(both, 1))
        else:
            args.append(("output", tuple(int(d) for d in out_shape), "int8"))
            result = lowering.bb.emit(relax.call_dps_packed(symbol, list(inputs), out_ty))
        self.calls.append(LibraryCall(symbol, kind, dict(params), args, scratch))
        return result

    def conv2d(self, lowering: Any, x: Any, weights: np.ndarray, bias: Optional[np.ndarray], mults: np.ndarray, shifts: np.ndarray,
               geometry: Dict[str, int], zp_in: int, zp_out: int, lo: int, hi: int, out_shape: Sequence[int]) -> Optional[Any]:
        """A convolution (groups of 1), or None when CMSIS-NN does not take it."""
        if geometry["groups"] != 1:
            return None
        _, H, W, C = (int(d) for d in x.ty.shape.values)
        OC, KH, KW, _ = weights.shape
        _, OH, OW, _ = out_shape
        params = dict(geometry, input_offset=-zp_in, output_offset=zp_out, act_min=lo, act_max=hi,
                      input=_dims(1, H, W, C), filter=_dims(OC, KH, KW, C), output=_dims(1, OH, OW, OC), bias=bias is not None)
        scratch = self._size(
            f"conv2d {self.variant} {-zp_in} {zp_out} {geometry['stride_w']} {geometry['stride_h']} {geometry['pad_w']} "
            f"{geometry['pad_h']} {geometry['dilation_w']} {geometry['dilation_h']} 1 {H} {W} {C} {OC} {KH} {KW} {C} 1 {OH} {OW} {OC}")
        inputs = [x, lowering.const(weights)] + ([lowering.const(bias.astype(np.int32))] if bias is not None else [])
        inputs += [lowering.const(mults.astype(np.int32)), lowering.const(shifts.astype(np.int32))]
        roles = ["input", "weights"] + (["bias"] if bias is not None else []) + ["multipliers", "shifts"]
        return self._emit(lowering, "conv2d", inputs, out_shape, params, roles, scratch)

    def depthwise_conv2d(self, lowering: Any, x: Any, weights: np.ndarray, bias: Optional[np.ndarray], mults: np.ndarray,
                         shifts: np.ndarray, geometry: Dict[str, int], zp_in: int, zp_out: int, lo: int, hi: int,
                         out_shape: Sequence[int]) -> Optional[Any]:
        _, H, W, C = (int(d) for d in x.ty.shape.values)
        _, KH, KW, OC = weights.shape
        _, OH, OW, _ = out_shape
        ch_mult = OC // C
        params = dict(geometry, input_offset=-zp_in, output_offset=zp_out, ch_mult=ch_mult, act_min=lo, act_max=hi,
                      input=_dims(1, H, W, C), filter=_dims(1, KH, KW, OC), output=_dims(1, OH, OW, OC), bias=bias is not None)
        scratch = self._size(
            f"depthwise_conv2d {self.variant} {-zp_in} {zp_out} {ch_mult} {geometry['stride_w']} {geometry['stride_h']} "
            f"{geometry['pad_w']} {geometry['pad_h']} {geometry['dilation_w']} {geometry['dilation_h']} "
            f"1 {H} {W} {C} 1 {KH} {KW} {OC} 1 {OH} {OW} {OC}")
        inputs = [x, lowering.const(weights)] + ([lowering.const(bias.astype(np.int32))] if bias is not None else [])
        inputs += [lowering.const(mults.astype(np.int32)), lowering.const(shifts.astype(np.int32))]
        roles = ["input", "weights"] + (["bias"] if bias is not None else []) + ["multipliers", "shifts"]
        return self._emit(lowering, "depthwise_conv2d", inputs, out_shape, params, roles, scratch)

    def fully_connected(self, lowering: Any, x: Any, weights: np.ndarray, bias: Optional[np.ndarray], mult: int, shift: int,
                        zp_in: int, zp_out: int, lo: int, hi: int,
                        per_channel: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Optional[Any]:
        """An int8 fully connected layer on ``x`` of shape (batches, depth): per tensor
        (``mult``, ``shift``) or per output channel (``per_channel``: multipliers, shifts)."""
        B, IN = (int(d) for d in x.ty.shape.values)
        OUT = int(weights.shape[0])
        params = dict(input_offset=-zp_in, filter_offset=0, output_offset=zp_out, act_min=lo, act_max=hi, multiplier=int(mult),
                      shift=int(shift), input=_dims(B, 1, 1, IN), filter=_dims(IN, 1, 1, OUT), output=_dims(B, 1, 1, OUT),
                      bias=bias is not None, per_channel=per_channel is not None)
        scratch = self._size(f"fully_connected {self.variant} {IN} 1 1 {OUT}")
        inputs = [x, lowering.const(weights)] + ([lowering.const(bias.astype(np.int32))] if bias is not None else [])
        roles = ["input", "weights"] + (["bias"] if bias is not None else [])
        if per_channel is not None:
            inputs += [lowering.const(per_channel[0].astype(np.int32)), lowering.const(per_channel[1].astype(np.int32))]
            roles += ["multipliers", "shifts"]
        if scratch > 0:
            # MVE reads the kernel sums (bias and the input offset folded in) from its buffer: made
            # here by the library's own arm_vector_sum_s8, they are constants in flash
            flat = " ".join(str(int(v)) for v in weights.reshape(-1))
            bias_text = " ".join(str(int(v)) for v in bias.reshape(-1)) if bias is not None else ""
            (sums,) = self._helper().ask([f"vector_sum {self.variant} {IN} {OUT} {-zp_in} 0 {1 if bias is not None else 0} {flat} {bias_text}"])
            inputs.append(lowering.const(np.array(sums, np.int32)))
            roles.append("kernel_sums")
            params["kernel_sums"] = True
        out_shape = (B, OUT)
        return self._emit(lowering, "fully_connected", inputs, out_shape, params, roles, 0)

    def pool2d(self, lowering: Any, x: Any, average: bool, geometry: Dict[str, int], lo: int, hi: int,
               out_shape: Sequence[int]) -> Optional[Any]:
        _, H, W, C = (int(d) for d in x.ty.shape.values)
        _, OH, OW, _ = out_shape
        kind = "avg_pool2d" if average else "max_pool2d"
        params = dict(geometry, act_min=lo, act_max=hi, input=_dims(1, H, W, C), output=_dims(1, OH, OW, C))
        scratch = self._size(f"avg_pool2d {self.variant} {OW} {C}") if average else 0
        return self._emit(lowering, kind, [x], out_shape, params, ["input"], scratch)

    def softmax(self, lowering: Any, x: Any, mult: int, shift: int, diff_min: int) -> Optional[Any]:
        rows, depth = (int(d) for d in x.ty.shape.values)
        params = dict(rows=rows, depth=depth, multiplier=int(mult), shift=int(shift), diff_min=int(diff_min))
        return self._emit(lowering, "softmax", [x], (rows, depth), params, ["input"], 0)

    def add(self, lowering: Any, a: Any, b: Any, quant: Dict[str, int], out_shape: Sequence[int]) -> Optional[Any]:
        """An int8 ADD of two tensors of the output's shape (no broadcasting: TVM does those)."""
        shape = [int(d) for d in out_shape]
        if [int(d) for d in a.ty.shape.values] != shape or [int(d) for d in b.ty.shape.values] != shape:
            return None
        params = dict(quant, size=int(np.prod(shape)))
        return self._emit(lowering, "add", [a, b], shape, params, ["input1", "input2"], 0)

    # ------------------------------------------------------------------ C

    def entry_points(self) -> List[str]:
        return sorted({ENTRIES[c.kind + ("_per_channel" if c.params.get("per_channel") else "")] for c in self.calls})

    def sources(self) -> List[str]:
        """The library's source files the calls need (relative to its folder)."""
        files, _index = entry_files(self.library, self.entry_points())
        return files

    def functions(self) -> List[FunctionInfo]:
        return [c.function() for c in self.calls]

    def source(self, model: str) -> str:
        lines = [
            f"/* {model}: the layers CMSIS-NN computes ({self.library.name} {self.library.version}, content id",
            f" * {self.library.content_id}), one wrapper each (generated by microtvm-registry). */",
            "#include <stdint.h>",
            "#include <stddef.h>",
            '#include "arm_nnfunctions.h"',
            '#include "mtvm_runtime.h"',
            "",
            "static int32_t cmsis_nn_status(arm_cmsis_nn_status status, const char* where) {",
            "  if (status == ARM_CMSIS_NN_SUCCESS) return 0;",
            '  mtvm_set_error("RuntimeError", where);',
            "  return -1;",
            "}",
            "",
        ]
        for call in self.calls:
            lines += _wrapper(call)
        return "\n".join(lines)


def _data(i: int, ctype: str, const: bool = True) -> str:
    return f"({'const ' if const else ''}{ctype}*)t[{i}]->data"


def _wrapper(call: LibraryCall) -> List[str]:
    """The call's two entry points: direct (the model's C) and the function table's."""
    p = call.params
    roles = [role for role, _shape, _dtype in call.args]
    at = {role: i for i, role in enumerate(roles)}
    bias = _data(at["bias"], "int32_t") if "bias" in at else "NULL"
    scratch = (f"t[{at['scratch']}]->data", str(call.scratch_bytes)) if "scratch" in at else ("NULL", "0")
    out = _data(at["output"], "int8_t", const=False)
    body: List[str] = []
    if call.kind in ("conv2d", "depthwise_conv2d"):
        struct = "cmsis_nn_conv_params" if call.kind == "conv2d" else "cmsis_nn_dw_conv_params"
        mult = f".ch_mult = {p['ch_mult']}, " if call.kind == "depthwise_conv2d" else ""
        body += [
            f"  static const {struct} params = {{.input_offset = {p['input_offset']}, .output_offset = {p['output_offset']}, {mult}"
            f".stride = {{.w = {p['stride_w']}, .h = {p['stride_h']}}}, .padding = {{.w = {p['pad_w']}, .h = {p['pad_h']}}}, "
            f".dilation = {{.w = {p['dilation_w']}, .h = {p['dilation_h']}}}, .activation = {{.min = {p['act_min']}, .max = {p['act_max']}}}}};",
            _c_dims("input_dims", p["input"]), _c_dims("filter_dims", p["filter"]), _c_dims("output_dims", p["output"]),
            _c_dims("bias_dims", (1, 1, 1, p["output"][3])),
            f"  cmsis_nn_per_channel_quant_params quant = {{(int32_t*)t[{at['multipliers']}]->data, (int32_t*)t[{at['shifts']}]->data}};",
            f"  cmsis_nn_context ctx = {{{scratch[0]}, {scratch[1]}}};",
            f"  return cmsis_nn_status({'arm_convolve_wrapper_s8' if call.kind == 'conv2d' else 'arm_depthwise_conv_wrapper_s8'}("
            f"&ctx, &params, &quant, &input_dims, {_data(at['input'], 'int8_t')}, &filter_dims, {_data(at['weights'], 'int8_t')}, "
            f"&bias_dims, {bias}, &output_dims, {out}), \"{call.symbol}: CMSIS-NN refused the call\");",
        ]
    elif call.kind == "fully_connected":
        sums = f"(void*)t[{at['kernel_sums']}]->data" if "kernel_sums" in at else "NULL"
        size = f"{p['output'][3]} * (int32_t)sizeof(int32_t)" if "kernel_sums" in at else "0"
        body += [
            f"  static const cmsis_nn_fc_params params = {{.input_offset = {p['input_offset']}, .filter_offset = {p['filter_offset']}, "
            f".output_offset = {p['output_offset']}, .activation = {{.min = {p['act_min']}, .max = {p['act_max']}}}}};",
            (f"  cmsis_nn_per_channel_quant_params quant = {{(int32_t*)t[{at['multipliers']}]->data, (int32_t*)t[{at['shifts']}]->data}};"
             if p.get("per_channel") else
             f"  static const cmsis_nn_per_tensor_quant_params quant = {{.multiplier = {p['multiplier']}, .shift = {p['shift']}}};"),
            _c_dims("input_dims", p["input"]), _c_dims("filter_dims", p["filter"]), _c_dims("output_dims", p["output"]),
            _c_dims("bias_dims", (1, 1, 1, p["output"][3])),
            f"  cmsis_nn_context ctx = {{{sums}, {size}}};",
            f"  return cmsis_nn_status({ENTRIES['fully_connected_per_channel'] if p.get('per_channel') else ENTRIES['fully_connected']}"
            f"(&ctx, &params, &quant, &input_dims, {_data(at['input'], 'int8_t')}, "
            f"&filter_dims, {_data(at['weights'], 'int8_t')}, &bias_dims, {bias}, &output_dims, {out}), \"{call.symbol}: CMSIS-NN refused the call\");",
        ]
    elif call.kind in ("avg_pool2d", "max_pool2d"):
        fn = "arm_avgpool_s8" if call.kind == "avg_pool2d" else "arm_max_pool_s8"
        body += [
            f"  static const cmsis_nn_pool_params params = {{.stride = {{.w = {p['stride_w']}, .h = {p['stride_h']}}}, "
            f".padding = {{.w = {p['pad_w']}, .h = {p['pad_h']}}}, .activation = {{.min = {p['act_min']}, .max = {p['act_max']}}}}};",
            _c_dims("input_dims", p["input"]), _c_dims("filter_dims", (1, p["filter_h"], p["filter_w"], 1)), _c_dims("output_dims", p["output"]),
            f"  cmsis_nn_context ctx = {{{scratch[0]}, {scratch[1]}}};",
            f"  return cmsis_nn_status({fn}(&ctx, &params, &input_dims, {_data(at['input'], 'int8_t')}, &filter_dims, &output_dims, {out}), "
            f"\"{call.symbol}: CMSIS-NN refused the call\");",
        ]
    elif call.kind == "softmax":
        body += [
            f"  arm_softmax_s8({_data(at['input'], 'int8_t')}, {p['rows']}, {p['depth']}, {p['multiplier']}, {p['shift']}, {p['diff_min']}, {out});",
            "  return 0;",
        ]
    elif call.kind == "add":
        body += [
            f"  return cmsis_nn_status(arm_elementwise_add_s8({_data(at['input1'], 'int8_t')}, {_data(at['input2'], 'int8_t')}, "
            f"{p['input1_offset']}, {p['input1_mult']}, {p['input1_shift']}, {p['input2_offset']}, {p['input2_mult']}, {p['input2_shift']}, "
            f"{p['left_shift']}, {out}, {p['output_offset']}, {p['output_mult']}, {p['output_shift']}, {p['act_min']}, {p['act_max']}, "
            f"{p['size']}), \"{call.symbol}: CMSIS-NN refused the call\");",
        ]
    else:  # pragma: no cover - every kind above is emitted by CmsisNN
        raise AssertionError(call.kind)
    n = len(call.args)
    return [
        f"/* {call.kind}: {', '.join(roles)} */",
        f"int32_t {call.symbol}(DLTensor* const* t) {{",
        *body,
        "}",
        "",
        f"int32_t {SYMBOL_PREFIX}{call.symbol}(void* self, void* args, int32_t num_args, void* result) {{",
        "  (void)self;",
        "  (void)result;",
        "  TVMFFIAny* packed = (TVMFFIAny*)args;",
        f"  DLTensor* t[{n}];",
        f"  if (num_args != {n}) {{",
        f'    mtvm_set_error("TypeError", "{call.symbol} takes {n} tensors");',
        "    return -1;",
        "  }",
        f"  for (int32_t i = 0; i < {n}; ++i) t[i] = (DLTensor*)packed[i].v_ptr;",
        f"  return {call.symbol}(t);",
        "}",
        "",
    ]


class LibraryKernels:
    """The provider model_c asks for a library call: the wrapper's direct entry on the slots."""

    name = NAME

    def declarations(self, model: str, calls: Sequence[Call]) -> List[str]:
        return [f"extern int32_t {k}(DLTensor* const* t);" for k in sorted({c.kernel for c in calls if c.provider == self.name})]

    def call_body(self, model: str, call: Call, n: int, tensor: Callable[[str], str]) -> List[str]:
        args = ", ".join(f"&{tensor(a)}" for a in call.args)
        return [
            f"  static DLTensor* const args[{len(call.args)}] = {{{args}}};",
            f"  return {call.kernel}(args);",
        ]
