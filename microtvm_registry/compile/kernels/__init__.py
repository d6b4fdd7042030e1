"""Kernel providers: what computes one planned call.

The plan is a list of calls, each naming its provider. Today's provider is ``tvm``: a kernel
apache-tvm generated as C, called through the runtime's function table. A kernel library
(CMSIS-NN's ``arm_convolve_wrapper_s8(...)`` with its scratch buffer from the plan) is the same
kind of thing: a provider writes the C that makes its calls and names the sources a build needs,
and the model's C (model_c) only strings the calls together, times them and stops at the first
that fails. A provider never decides memory: every buffer it touches is a slot of the plan.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Protocol, Sequence

from ...formats.plan import Call


class KernelProvider(Protocol):
    """What a provider answers for the model's C (see the module docstring)."""

    name: str

    def declarations(self, model: str, calls: Sequence[Call]) -> List[str]:
        """C lines at file scope before the calls: includes, externs, tables."""
        ...

    def call_body(self, model: str, call: Call, n: int, tensor: Callable[[str], str]) -> List[str]:
        """C statements of call ``n`` ending in ``return <int32 status>;``. ``tensor(slot)`` is the
        C expression of the plan slot's DLTensor (its ``data`` pointer is ``tensor(slot).data``)."""
        ...


def providers() -> Dict[str, KernelProvider]:
    from .cmsis_nn import LibraryKernels
    from .tvm import TvmKernels

    return {TvmKernels.name: TvmKernels(), LibraryKernels.name: LibraryKernels()}


def provider(name: str) -> KernelProvider:
    found = providers()
    if name not in found:
        from ...errors import ModelError

        raise ModelError(f"the plan names kernel provider {name!r}, which this microtvm-registry does not have; one of: {', '.join(found)}")
    return found[name]
