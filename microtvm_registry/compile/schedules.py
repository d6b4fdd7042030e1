"""Schedules for the kernels of a compiled model: a small, named space of TIR transformations that
a tuner measures on the device and ``compile --records`` re-applies.

Why a space of our own rather than MetaSchedule: in apache-tvm 0.27 a tune_tir with a custom
runner crashes in the wheel's IR serializer (``tvm.ir.save_json``), and what makes TVM's default
lowering slow on a microcontroller is known and few: the padding copied into a workspace buffer,
elementwise epilogues (bias, ReLU, requantization) that each make a pass over a full-size
intermediate, and tight reduction loops. A recipe is plain data, so a record says exactly what
was measured and applying it again is deterministic:

* ``inline``: every block that can be computed inline is (the padding and elementwise stages);
* ``epilogue_at``: the remaining epilogue is computed inside the main block's N-th loop, so the
  intermediate shrinks to what one iteration writes (0: not moved);
* ``unroll``: the innermost reduction loop is split by this factor and the inner part unrolled
  (1: not unrolled);
* ``tile``: register blocking: the output-channel loop is split by ``|tile|`` and its inner part
  moved inside the reduction and unrolled, so each input value loaded serves that many outputs;
  the accumulators live in a small local buffer written back once per pass (registers, once
  unrolled), or in memory for a negative ``tile`` (0: not tiled).

A recipe that does not apply to a kernel (no reduction, a loop too short) raises
ScheduleNotApplicable and is skipped.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

class ScheduleNotApplicable(Exception):
    """The recipe does not fit this kernel."""


@dataclass(frozen=True)
class Recipe:
    inline: bool = False
    epilogue_at: int = 0
    unroll: int = 1
    tile: int = 0

    @property
    def is_default(self) -> bool:
        return not self.inline and self.epilogue_at == 0 and self.unroll == 1 and self.tile == 0

    def describe(self) -> str:
        if self.is_default:
            return "default lowering"
        parts = []
        if self.inline:
            parts.append("inline padding and elementwise stages")
        if self.epilogue_at:
            parts.append(f"epilogue inside loop {self.epilogue_at}")
        if self.unroll > 1:
            parts.append(f"innermost reduction unrolled x{self.unroll}")
        if self.tile:
            where = "in registers" if self.tile > 0 else "accumulated in memory"
            parts.append(f"{abs(self.tile)} output channels per pass, {where}")
        return ", ".join(parts)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Recipe":
        """A recipe from a record; ValueError for values we never write ("false" as a string, a
        negative loop, a float), since applying them would do something no one measured."""
        inline = data.get("inline", False)
        if not isinstance(inline, bool):
            raise ValueError(f"inline {inline!r} is not true or false")
        values = {}
        for key, default, lo, hi in (("epilogue_at", 0, 0, 8), ("unroll", 1, 1, 64), ("tile", 0, -64, 64)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{key} {value!r} is not an integer from {lo} to {hi}")
            values[key] = value
        return cls(inline, values["epilogue_at"], values["unroll"], values["tile"])

    def key(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)


def candidates(limit: Optional[int] = None) -> List[Recipe]:
    """The space, most promising first (inlining first; the default lowering is the baseline)."""
    # tile > 0: accumulators in registers; < 0: blocked, but accumulating in memory
    tiled = [Recipe(True, 0, 1, tile) for tile in (8, 4, 16, -8, 2)] + [Recipe(True, 0, 4, tile) for tile in (8, 4, 16)]
    plain = [
        Recipe(inline, at, unroll)
        for inline, at, unroll in itertools.product((True, False), (1, 2, 3, 0), (1, 4, 2))
        if not (not inline and at == 0 and unroll == 1)
    ]
    space = tiled[:2] + plain[:4] + tiled[2:] + plain[4:]
    return space if limit is None else space[:limit]


def _reduction_block(sch: Any, blocks: List[Any]) -> Optional[Any]:
    for block in blocks:
        sblock = sch.get(block)
        if any(int(iv.iter_type) == 2 for iv in sblock.iter_vars):  # 2: CommReduce
            return block
    return None


#: How much larger (in TVMScript text) inlining may make a kernel before a stage is left alone.
INLINE_GROWTH = 4


def apply(func: Any, recipe: Recipe) -> Any:
    """``func`` scheduled by ``recipe`` (a new PrimFunc); ScheduleNotApplicable when it does not fit."""
    if recipe.is_default:
        return func
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root")
    if recipe.inline:
        # A stage read several times by its consumer is copied into it once per read: along a
        # chain of such stages (TFLite's fixed-point softmax and logistic) the expression doubles
        # at each step, and tuning KWS grew past 10 GB before this. An inline that would grow the
        # kernel's text past INLINE_GROWTH times is not made: that stage stays a stage.
        size = len(sch.mod.script())
        for block in list(sch.get_child_blocks(root)):
            trial = sch.copy()  # the copy keeps the random variables (block handles) valid
            try:
                trial.compute_inline(block)
            except Exception:  # noqa: BLE001 - a block that cannot be inlined stays
                continue
            if len(trial.mod.script()) <= INLINE_GROWTH * size:
                sch = trial
    blocks = list(sch.get_child_blocks(root))
    main = _reduction_block(sch, blocks)
    if recipe.epilogue_at or recipe.unroll > 1 or recipe.tile:
        if main is None:
            raise ScheduleNotApplicable("the kernel has no reduction")
    if recipe.tile:
        _tile(sch, main, abs(recipe.tile), local=recipe.tile > 0)
    if recipe.epilogue_at:
        after = blocks[blocks.index(main) + 1 :] if main in blocks else []
        if len(after) != 1:
            raise ScheduleNotApplicable("the kernel has no single epilogue after its reduction")
        if _written_shape(sch, after[0]) != _written_shape(sch, main):
            # a padding fused into the epilogue writes a larger tensor than the reduction: moved
            # inside the reduction's loops, TVM computes only the part those loops reach and the
            # border is never written (VWW's 1x1 convolutions with the next layer's pad)
            raise ScheduleNotApplicable("the epilogue writes a tensor of another shape than the reduction (a fused pad)")
        loops = sch.get_loops(main)
        spatial = [lp for lp, iv in zip(loops, sch.get(main).iter_vars) if int(iv.iter_type) == 0]
        if recipe.epilogue_at > len(spatial):
            raise ScheduleNotApplicable("the reduction has fewer spatial loops")
        try:
            sch.reverse_compute_at(after[0], spatial[recipe.epilogue_at - 1])
        except Exception as err:  # noqa: BLE001 - TVM's ScheduleError and friends
            raise ScheduleNotApplicable(str(err).splitlines()[0]) from None
    if recipe.unroll > 1:
        # the innermost loop that is neither unrolled already (a tile's channel block) nor of
        # length 1 (a pointwise conv's kernel loops): a reduction loop, the spatial ones being outer
        target = None
        for loop in reversed(list(sch.get_loops(main))):
            stmt = sch.get(loop)
            try:
                extent = int(stmt.extent)
            except (TypeError, ValueError):
                raise ScheduleNotApplicable("a loop has no constant extent") from None
            if "unroll" in str(stmt.kind).lower() or extent == 1:
                continue
            target = (loop, extent)
            break
        if target is None:
            raise ScheduleNotApplicable("no loop to unroll")
        loop, extent = target
        if extent < recipe.unroll or extent % recipe.unroll:
            raise ScheduleNotApplicable(f"the innermost loop ({extent}) does not split by {recipe.unroll}")
        _outer, inner_part = sch.split(loop, factors=[None, recipe.unroll])
        sch.unroll(inner_part)
    return sch.mod["main"]


def _written_shape(sch: Any, block: Any) -> Tuple[int, ...]:
    """The shape of the buffer a block writes (apache-tvm 0.27: a region's ``source``)."""
    writes = sch.get(block).writes
    if not writes:
        return ()
    buffer = getattr(writes[0], "source", None)
    if buffer is None:  # older apache-tvm
        buffer = writes[0].buffer
    return tuple(int(d) for d in buffer.shape)


def _tile(sch: Any, main: Any, factor: int, local: bool) -> None:
    """Register blocking of the output-channel loop (see the module docstring)."""
    loops = list(sch.get_loops(main))
    kinds = [int(iv.iter_type) for iv in sch.get(main).iter_vars]
    if len(kinds) != len(loops):
        raise ScheduleNotApplicable("the reduction's loops do not map one to one on its iterators")
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0]
    if len(spatial) < 2 or 2 not in kinds:
        raise ScheduleNotApplicable("no output-channel loop to tile")
    if kinds != sorted(kinds) or any(k not in (0, 2) for k in kinds):
        raise ScheduleNotApplicable("the reduction's loops are not spatial-then-reduction")
    n_spatial = len(spatial)
    c = 1 if n_spatial >= 4 else n_spatial - 1  # NCHW: the channel loop; a matmul: its columns
    try:
        extent = int(sch.get(loops[c]).extent)
    except (TypeError, ValueError):
        raise ScheduleNotApplicable("the channel loop has no constant extent") from None
    if extent < factor or extent % factor:
        raise ScheduleNotApplicable(f"{extent} channels do not split by {factor}")
    try:
        sch.split(loops[c], factors=[None, factor])
        # LoopRVs are handles, not comparable across calls: work by position from here.
        loops = list(sch.get_loops(main))  # spatial (with the channel split in two), then reduction
        inner = loops[c + 1]
        sch.reorder(*loops[c + 2 :], inner)
        if local:
            # accumulate in a small local buffer (registers, once unrolled), written back per pass;
            # the epilogue (bias, ReLU, requantization) then rides on the write-back, so the
            # full-size intermediate and its extra pass are gone
            write_back = sch.cache_write(main, 0, "local")
            sch.reverse_compute_at(write_back, list(sch.get_loops(main))[n_spatial - 1])
            for consumer in sch.get_consumers(write_back):
                if _written_shape(sch, consumer) != _written_shape(sch, main):
                    continue  # a fused pad: it stays a pass of its own (see apply's epilogue_at)
                try:
                    sch.reverse_compute_inline(consumer)
                except Exception:  # noqa: BLE001 - an epilogue that cannot ride along stays a pass of its own
                    pass
        sch.decompose_reduction(main, list(sch.get_loops(main))[n_spatial])
        sch.unroll(list(sch.get_loops(main))[-1])
    except Exception as err:  # noqa: BLE001 - TVM's ScheduleError and friends
        raise ScheduleNotApplicable(str(err).splitlines()[0]) from None


def workload(name: str, func: Any) -> Dict[str, Any]:
    """What identifies a kernel across models and runs: its operator, arguments and IR hash."""
    import importlib

    try:
        structural_hash = importlib.import_module("tvm_ffi").structural_hash  # apache-tvm 0.27 moved it out of tvm.ir
    except (ImportError, AttributeError):  # pragma: no cover - older apache-tvm
        structural_hash = importlib.import_module("tvm.ir").structural_hash

    base = name.rstrip("0123456789")
    args = [[list(int(d) for d in p.shape), str(p.dtype)] for p in func.params]
    # without the symbol: the same computation under another name is the same workload
    unnamed = func.without_attr("global_symbol") if hasattr(func, "without_attr") else func
    return {"operator": base, "args": args, "hash": f"{structural_hash(unnamed) & 0xFFFFFFFFFFFFFFFF:016x}"}
