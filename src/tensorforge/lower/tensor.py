"""Tensors as the lowering sees them.

``View`` is a materialized tensor: a buffer plus a strided layout (reshape, transpose, broadcast and
slice of a view are new views — no copy, no kernel). ``TExpr`` is any tensor a lowering rule can read:
a view, a compile-time constant, or an expression not materialized at all (a fused producer), given as
a function from an index tuple to a scalar kernel-IR expression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType
from .kir import Buffer, Const, Expr, Load, Store, as_expr, binop, const


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    s = 1
    for d in reversed(shape):
        strides.append(s)
        s *= d
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    buf: Buffer
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0

    @staticmethod
    def of(buf: Buffer, shape: Sequence[int]) -> View:
        return View(buf, tuple(shape), contiguous_strides(shape), 0)

    @property
    def dtype(self) -> DType:
        return self.buf.dtype

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_contiguous(self) -> bool:
        return all(st == cs for st, cs, d in zip(self.strides, contiguous_strides(self.shape), self.shape) if d != 1)

    def index(self, idx: Sequence[Expr | int]) -> Expr:
        e: Expr = Const(self.offset)
        for i, st, d in zip(idx, self.strides, self.shape):
            if d == 1 or st == 0:
                continue
            e = binop("add", e, binop("mul", as_expr(i), st))
        return e

    def load(self, idx: Sequence[Expr | int]) -> Expr:
        return Load(self.buf, self.index(idx))

    def store(self, idx: Sequence[Expr | int], value: Expr) -> Store:
        return Store(self.buf, self.index(idx), value)

    # -- views without copies -----------------------------------------------------------------------
    def reshape(self, shape: Sequence[int]) -> View | None:
        if not self.is_contiguous:
            return None
        return View(self.buf, tuple(shape), contiguous_strides(shape), self.offset)

    def transpose(self, perm: Sequence[int]) -> View:
        return View(self.buf, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm), self.offset)

    def broadcast_to(self, shape: Sequence[int]) -> View:
        pad = len(shape) - len(self.shape)
        strides = [0] * pad + list(self.strides)
        src = [1] * pad + list(self.shape)
        for i, (s, d) in enumerate(zip(src, shape)):
            if s == 1 and d != 1:
                strides[i] = 0
        return View(self.buf, tuple(shape), tuple(strides), self.offset)

    def slice(self, params: Sequence[tuple[int, int, int, int]]) -> View:
        """params per axis: (start, stop, step, out_len)."""
        off = self.offset
        strides = []
        shape = []
        for (start, _stop, step, n), st in zip(params, self.strides):
            if n > 0:
                off += start * st
            strides.append(st * step)
            shape.append(n)
        return View(self.buf, tuple(shape), tuple(strides), off)


IndexFn = Callable[[Sequence[Expr]], Expr]


@dataclass(frozen=True)
class TExpr:
    """A tensor readable inside a kernel: ``texpr(idx)`` is its element at ``idx`` (a scalar Expr)."""

    shape: tuple[int, ...]
    dtype: DType
    fn: IndexFn
    view: View | None = None
    const: np.ndarray | None = None

    def __call__(self, idx: Sequence[Expr | int]) -> Expr:
        return self.fn([as_expr(i) for i in idx])

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @staticmethod
    def from_view(view: View, const_data: np.ndarray | None = None) -> TExpr:
        return TExpr(view.shape, view.dtype, view.load, view, const_data)

    @staticmethod
    def scalar(value, dtype: DType, shape: Sequence[int] = ()) -> TExpr:
        c = const(value.item() if isinstance(value, np.generic | np.ndarray) else value, dtype)
        arr = np.full(tuple(shape), value, dtype=dtype.np)
        return TExpr(tuple(shape), dtype, lambda idx: c, None, arr)

    @staticmethod
    def compute(shape: Sequence[int], dtype: DType, fn: IndexFn) -> TExpr:
        return TExpr(tuple(shape), dtype, fn)


def broadcast_index(idx: Sequence[Expr], in_shape: Sequence[int], out_shape: Sequence[int]) -> list[Expr]:
    """Map an output index to the index of a numpy-broadcast input."""
    pad = len(out_shape) - len(in_shape)
    out = []
    for i, d in enumerate(in_shape):
        out.append(Const(0) if d == 1 else idx[pad + i])
    return out


def broadcast(t: TExpr, shape: Sequence[int]) -> TExpr:
    """``t`` read as if broadcast to ``shape``."""
    shape = tuple(shape)
    if t.shape == shape:
        return t
    in_shape = t.shape
    if t.view is not None:
        return TExpr.from_view(t.view.broadcast_to(shape))
    return TExpr(shape, t.dtype, lambda idx: t.fn(broadcast_index(idx, in_shape, shape)))
