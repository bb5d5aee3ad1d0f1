"""Lowering rules, registered by op name, and what they receive.

Three kinds of rule, from most to least fusable:

* ``view_rule``: the output is a re-strided view of an input (Reshape, Transpose, Slice, ...): no code.
* ``index_rule``: the output is an index expression over inputs (elementwise, broadcast, concat, ...):
  returns ``TExpr``s; the program builder either materializes them in a loop nest or inlines them
  into their consumers (fusion).
* ``kernel_rule``: the op needs its own loop structure (GEMM, conv, pooling, reductions): returns a
  statement that writes the outputs through ``Sink``s, which apply any fused epilogue.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..codegen.targets import Target
from ..errors import CompileError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Node
from .kir import Buffer, Expr, Stmt, cast
from .tensor import TExpr, View

if TYPE_CHECKING:
    from .program import ProgramBuilder


Epilogue = Callable[[Sequence[Expr], Expr], Expr]


@dataclass
class Sink:
    """Where a kernel rule writes one output: a view plus an optional fused epilogue."""

    view: View
    dtype: DType  # dtype the rule computes in (the op's output dtype)
    epilogue: Epilogue | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.view.shape

    def value(self, idx: Sequence[Expr], v: Expr) -> Expr:
        if self.epilogue is not None:
            v = self.epilogue(idx, v)
        return cast(v, self.view.dtype)

    def store(self, idx: Sequence[Expr], v: Expr) -> Stmt:
        return self.view.store(idx, self.value(idx, v))


@dataclass
class LowerCtx:
    target: Target
    model: str
    node: Node
    builder: ProgramBuilder
    options: dict = field(default_factory=dict)
    # set by a kernel rule whose code stores every output element exactly once (no overlapping tiles, no
    # partial sums in the output): the memory planner may then write the output over a dying input
    stores_once: bool = False

    def lanes(self, dtype: DType) -> int:
        return self.target.lanes(dtype)

    def fail(self, msg: str, exc: type[Exception] = CompileError):
        raise exc(f"{node_context(self.model, self.node.name, self.node.op)}: {msg}")

    def unsupported(self, msg: str):
        self.fail(msg, UnsupportedError)

    def attr(self, key: str, default=None):
        return self.node.attrs.get(key, default)

    def const_view(self, data: np.ndarray, name: str) -> View:
        """Compile-time data (e.g. pre-packed weights) as a constant buffer."""
        return self.builder.add_const(np.ascontiguousarray(data), name)

    def workspace(self, dtype: DType, numel: int, name: str) -> Buffer:
        """Scratch memory in the arena, live only while this node's kernel runs."""
        return self.builder.add_workspace(dtype, numel, name)

    @property
    def parallel_threshold(self) -> int:
        """Minimum work (flops or elements) for a loop to be worth a parallel region."""
        return int(self.options.get("parallel_threshold", 1 << 17))

    def check_range(self, values: TExpr, tensor: str, what: str, ranges: Sequence[tuple[int, int, str]]) -> None:
        """Require every element of ``values`` (this node's input ``tensor``) to lie in its range, checked at run
        time by a kernel before this node's (``lower/checks.py``): ``ranges`` holds one ``(lo, hi, about)`` for
        all elements or one per position along the last axis. The node's code may then index with the values
        unclamped: it only runs when the check passed. Constant values are checked now (``ShapeError``)."""
        self.builder.add_check(self.node, values, tensor, what, ranges)


IndexRule = Callable[[LowerCtx, Node, list[TExpr]], list[TExpr]]
ViewRule = Callable[[LowerCtx, Node, list[TExpr]], list[View] | None]
KernelFn = Callable[[LowerCtx, Node, list[TExpr], list[Sink]], Stmt]


@dataclass(frozen=True)
class FusionCaps:
    """What the fusion pass may group into a kernel op's kernel (the flags of ``kernel_rule``)."""

    epilogue: bool = False
    prologue: bool = False
    epilogue_reads_tensors: bool = False
    epilogue_casts: bool = False

    def __post_init__(self):
        # the pass builds kernel groups only around ops that take an epilogue: without it the other
        # flags would be declared and silently never used
        if (self.prologue or self.epilogue_reads_tensors or self.epilogue_casts) and not self.epilogue:
            raise ValueError("prologue, epilogue_reads_tensors and epilogue_casts need epilogue=True")


@dataclass(frozen=True)
class KernelRule:
    """One op's entry in ``KERNEL_RULES``: the rule and everything declared with it."""

    fn: KernelFn
    caps: FusionCaps


INDEX_RULES: dict[str, IndexRule] = {}
VIEW_RULES: dict[str, ViewRule] = {}
KERNEL_RULES: dict[str, KernelRule] = {}


def index_rule(*ops: str):
    def deco(fn):
        for op in ops:
            INDEX_RULES[op] = fn
        return fn

    return deco


def view_rule(*ops: str):
    def deco(fn):
        for op in ops:
            VIEW_RULES[op] = fn
        return fn

    return deco


def kernel_rule(*ops: str, epilogue: bool = False, prologue: bool = False, epilogue_reads_tensors: bool = False,
                epilogue_casts: bool = False):  # fmt: skip
    """Register ``fn(ctx, node, ins, sinks) -> Stmt`` as the kernel rule of ``ops``. The rule gets its
    inputs as ``TExpr``s (a stored view or a computed expression: ``TExpr.view`` says which).

    The fusion flags say what the rule's code allows ``passes/fuse.py`` to group into its kernel
    (``lower/fusion.py`` lowers such groups). They are declared here, with the code they describe, and
    default to off: an op without them is correct and simply never fused, so set each one its code
    satisfies:

    * ``epilogue``: every final value goes through ``Sink.store`` or ``Sink.value`` (never
      ``sink.view`` directly), so elementwise consumers of the output (bias, activation, scaling) are
      applied to each value right before its store. Lowering a fused group whose rule never calls its
      ``Sink`` fails with a ``CompileError``.
    * ``prologue`` (with ``epilogue``): the rule reads each input element a small, fixed number of
      times, so an elementwise producer of an input is computed on the fly as it is read, cheaper than
      storing it. Not for rules that read inputs many times (GEMM and conv re-read them across tiles,
      pooling windows may overlap): they would recompute the producer on every read.
    * ``epilogue_reads_tensors`` (with ``epilogue``): the epilogue may also read another full-size
      tensor (a residual add). Declare it where the rule stores its output in an order that reads such
      a tensor well (e.g. conv: contiguous pixel runs per channel); otherwise the pass keeps full-size
      operands computed elsewhere out of the epilogue.
    * ``epilogue_casts`` (with ``epilogue``): the epilogue may change the dtype (an int32 accumulator
      rescaled in float32 and requantized to uint8): the rule computes in ``Sink.dtype`` and never assumes
      the stored view has that dtype (partial sums of a split K go to a workspace then).
    """
    caps = FusionCaps(epilogue, prologue, epilogue_reads_tensors, epilogue_casts)

    def deco(fn):
        entry = KernelRule(fn, caps)
        for op in ops:
            KERNEL_RULES[op] = entry
        return fn

    return deco


# Kernel rules of another kind of machine, chosen by the target description (``Target.schedules``): family ->
# op -> rule, used instead of the op's own rule (``lower/gpu_gemm.py`` registers the GPU's). A family's rule
# honours the fusion flags declared with the op's own rule (they do not depend on the target).
SCHEDULE_RULES: dict[str, dict[str, KernelFn]] = {}


def schedule_rule(family: str, *ops: str):
    """Register ``fn(ctx, node, ins, sinks) -> Stmt`` as the rule of ``ops`` on targets of schedule ``family``."""

    def deco(fn):
        for op in ops:
            if op not in KERNEL_RULES:
                raise ValueError(f"{family} schedule for {op}, which has no kernel rule of its own")
            SCHEDULE_RULES.setdefault(family, {})[op] = fn
        return fn

    return deco


def kernel_fn(op: str, target: Target) -> KernelFn:
    """The kernel rule of ``op`` for ``target``: its schedule family's, else the op's own."""
    fn = SCHEDULE_RULES.get(target.schedules, {}).get(op)
    return fn if fn is not None else KERNEL_RULES[op].fn


def kernel_caps(op: str) -> FusionCaps | None:
    """The fusion capabilities declared with ``op``'s kernel rule; None when ``op`` has no kernel rule.

    The one question the fusion pass asks about kernel ops, so that what fuses is decided where each
    rule is registered.
    """
    rule = KERNEL_RULES.get(op)
    return None if rule is None else rule.caps


def has_lowering(op: str) -> bool:
    return op in INDEX_RULES or op in VIEW_RULES or op in KERNEL_RULES
