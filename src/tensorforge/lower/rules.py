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


IndexRule = Callable[[LowerCtx, Node, list[TExpr]], list[TExpr]]
ViewRule = Callable[[LowerCtx, Node, list[TExpr]], list[View] | None]
KernelRule = Callable[[LowerCtx, Node, list[TExpr], list[Sink]], Stmt]

INDEX_RULES: dict[str, IndexRule] = {}
VIEW_RULES: dict[str, ViewRule] = {}
KERNEL_RULES: dict[str, KernelRule] = {}
# kernel rules that need materialized (View) inputs rather than arbitrary TExprs
NEEDS_VIEWS: set[str] = set()


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


def kernel_rule(*ops: str, needs_views: bool = False):
    def deco(fn):
        for op in ops:
            KERNEL_RULES[op] = fn
            if needs_views:
                NEEDS_VIEWS.add(op)
        return fn

    return deco


def has_lowering(op: str) -> bool:
    return op in INDEX_RULES or op in VIEW_RULES or op in KERNEL_RULES
