"""The ``tvm`` kernel provider: PrimFuncs apache-tvm lowers, built as ONE C module (separately
built modules each define the same library-context symbols and do not link) with TVM's runtime
asserts off (the plan fixes every shape; the C then needs only the workspace functions and
libm), and called through the runtime's function table (``mtvm_call``)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Sequence

from ...formats.mlf import SYMBOL_PREFIX
from ...formats.plan import Call


class TvmKernels:
    name = "tvm"

    def declarations(self, model: str, calls: Sequence[Call]) -> List[str]:
        kernels = sorted({c.kernel for c in calls if c.provider == self.name})
        lines = [f"extern int32_t {SYMBOL_PREFIX}{k}(void* self, void* args, int32_t num_args, void* result);" for k in kernels]
        lines += [f'static const mtvm_function_entry {model}_k_{k} = {{"{k}", {SYMBOL_PREFIX}{k}, -1}};' for k in kernels]
        return lines

    def call_body(self, model: str, call: Call, n: int, tensor: Callable[[str], str]) -> List[str]:
        args = ", ".join(f"&{tensor(a)}" for a in call.args)
        return [
            f"  static DLTensor* args[{len(call.args)}] = {{{args}}};",
            f"  return mtvm_call(&{model}_k_{call.kernel}, args, {len(call.args)});",
        ]


def kernel_funcs(mod: Any) -> Dict[str, Any]:
    """The kernels (PrimFuncs) of a lowered module, by name, each with its own global symbol."""
    import tvm

    return {
        gvar.name_hint: func.with_attr("global_symbol", gvar.name_hint)
        for gvar, func in mod.functions.items()
        if isinstance(func, tvm.tirx.PrimFunc)
    }


def build_kernels(prim_funcs: Dict[str, Any]) -> str:
    """The C source of all ``prim_funcs`` as ONE module, runtime asserts off."""
    import tvm

    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        built = tvm.tirx.build(tvm.IRModule(prim_funcs), target="c")
    return built.inspect_source()
