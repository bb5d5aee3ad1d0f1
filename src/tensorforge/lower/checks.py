"""Run-time checks of values that index: an out-of-range index is an error, never a clamp.

ONNX (and ONNX Runtime) reject a Gather index, a ScatterND index tuple, a ReverseSequence length or a
MaxUnpool position outside its valid range; clamping it would return a plausible wrong answer. The ops
whose valid input depends on such values declare a ``RangeCheck`` (``LowerCtx.check_range``). Each check
is a small kernel of its own, placed before the kernel that uses the values:

* one vectorized pass over the checked tensor keeps its minimum and maximum (two vector instructions per
  vector of indices, however many elements each index selects; computed indices are recomputed, cheap
  elementwise code);
* only when these are out of range, a scalar pass finds the first offending element and records it in
  the program's **status word**: ``STATUS_WORDS`` i64 at ``Program.status_offset`` in the arena — the
  error code, the check's id (its index in ``Program.checks``), the offending value and its flat position
  in the checked tensor.

The entry tests the code after each checking kernel and returns it at once, so no later kernel runs on a
bad index: the kernels that read or write at the indices need no clamp and never touch memory outside a
buffer. Indices known at compile time are checked at compile time (no kernel); a tensor checked again
against the same range (a gather's gradient scatters at the gather's own indices) is checked once. The
check table travels with the program (saved in the artifact): the runtime turns a status into a message
naming the model, the node, the op, the value, where it was and the valid range.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import node_context
from . import kir as K
from .kir import I64, Assign, Buffer, Const, Decl, Expr, For, If, LoopKind, Stmt, Store, Var
from .shape_ops import unflatten
from .tensor import TExpr, View
from .vectorize import identity

STATUS_WORDS = 4  # code, check id, offending value, its flat position
INDEX_OUT_OF_RANGE = 1  # the one error code so far: a value that indexes is outside its valid range


@dataclass(frozen=True)
class RangeCheck:
    """Every element of a node's input ``tensor`` (shape ``shape``) must lie in a range. ``ranges`` holds
    one ``(lo, hi, about)`` for every element, or one per position along the last axis (GatherND's index
    tuples: component k indexes data axis k); ``about`` says what the range comes from."""

    node: str
    op: str
    tensor: str
    shape: tuple[int, ...]
    what: str  # what one element is: "index", "sequence length", ...
    ranges: tuple[tuple[int, int, str], ...]

    def range_at(self, position: int) -> tuple[int, int, str]:
        return self.ranges[position % len(self.ranges)]

    def message(self, model: str, value: int, position: int) -> str:
        """The error of ``value`` found at flat ``position`` of the tensor."""
        where = self.tensor
        if self.shape:
            where += str([int(i) for i in np.unravel_index(position, self.shape)])
        return self._text(model, str(value), where, self.range_at(position), str)

    def c_formats(self, model: str) -> list[str]:
        """The message as printf formats (one per range) taking the value and the flat position (``%lld``)."""
        esc = lambda s: s.replace("%", "%%")  # noqa: E731
        where = f"{esc(self.tensor)} {list(self.shape)} (flat position %lld)"
        return [self._text(model, "%lld", where, r, esc) for r in self.ranges]

    def _text(self, model: str, value: str, where: str, r: tuple[int, int, str], esc: Callable[[str], str]) -> str:
        lo, hi, about = r
        return (f"{esc(node_context(model, self.node, self.op))}: {esc(self.what)} {value} at {where} is out of "
                f"range [{lo}, {hi}] ({esc(about)})")  # fmt: skip

    def to_json(self) -> list:
        return [self.node, self.op, self.tensor, list(self.shape), self.what, [list(r) for r in self.ranges]]

    @staticmethod
    def from_json(d: Sequence) -> RangeCheck:
        node, op, tensor, shape, what, ranges = d
        return RangeCheck(node, op, tensor, tuple(int(s) for s in shape), what,
                          tuple((int(lo), int(hi), str(a)) for lo, hi, a in ranges))  # fmt: skip

    def first_bad(self, values: np.ndarray) -> int | None:
        """The flat position of the first element of ``values`` out of range (compile-time constants)."""
        flat = np.asarray(values).astype(np.int64).reshape(-1)
        m = len(self.ranges)
        lo = np.array([r[0] for r in self.ranges])[np.arange(flat.size) % m]
        hi = np.array([r[1] for r in self.ranges])[np.arange(flat.size) % m]
        bad = np.flatnonzero((flat < lo) | (flat > hi))
        return int(bad[0]) if bad.size else None


def check_kernel(values: TExpr, check: RangeCheck, check_id: int, status: Buffer, lanes: int) -> Stmt:
    """The kernel of one check (see the module docstring): a vectorized min/max pass per range, and on
    failure a scalar pass recording the first offending element in ``status``."""
    m = len(check.ranges)
    shape = values.shape
    n = values.numel
    comps = [values] if m == 1 else [_component(values, k) for k in range(m)]
    stmts: list[Stmt] = []
    bad: Expr | None = None
    for t, (lo, hi, _) in zip(comps, check.ranges):
        r, small, big = Var("r"), Var("lo", t.dtype), Var("hi", t.dtype)
        v = t(unflatten(r, t.shape))
        vec = lanes > 1 and t.numel >= lanes
        body = K.seq(Assign(small, K.minimum(small, v)), Assign(big, K.maximum(big, v)))
        stmts += [Decl(small, identity("min", t.dtype)), Decl(big, identity("max", t.dtype)),
                  For(r, Const(0), Const(t.numel), body, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1,
                      lanes if vec else 1)]  # fmt: skip
        out = K.binop("or", K.cmp("lt", K.cast(small, I64), Const(lo)), K.cmp("gt", K.cast(big, I64), Const(hi)))
        bad = out if bad is None else K.binop("or", bad, out)
    # the slow pass, only taken on failure: the first offending element in row-major order
    found, p = Var("found"), Var("p")
    record = []
    for k in range(m):
        pos = K.binop("add", K.binop("mul", p, m), Const(k)) if m > 1 else p
        v = K.cast(values(unflatten(pos, shape)), I64)
        lo, hi, _ = check.ranges[k]
        out = K.binop("or", K.cmp("lt", v, Const(lo)), K.cmp("gt", v, Const(hi)))
        first = K.binop("and", K.cmp("eq", found, Const(0)), out)
        record.append(If(first, K.seq(Store(status, Const(2), v), Store(status, Const(3), pos),
                                      Assign(found, Const(1)))))  # fmt: skip
    slow = K.seq(Decl(found, Const(0)), For(p, Const(0), Const(n // m), K.seq(record)),
                 Store(status, Const(1), Const(check_id)),
                 Store(status, Const(0), Const(INDEX_OUT_OF_RANGE)))  # fmt: skip
    return K.seq(*stmts, If(bad, slow))


def _component(t: TExpr, k: int) -> TExpr:
    """Position ``k`` along the last axis of ``t``, as a tensor of the leading dims."""
    if t.view is not None:
        v = t.view
        return TExpr.from_view(View(v.buf, v.shape[:-1], v.strides[:-1], v.offset + k * v.strides[-1]))
    return TExpr.compute(t.shape[:-1], t.dtype, lambda idx: t([*idx, Const(k)]))


def dedupe_key(values: TExpr, check: RangeCheck) -> tuple | None:
    """What makes two checks the same: the elements read (a stored tensor's buffer and layout) and the
    ranges. None for computed values (never merged)."""
    v = values.view
    if v is None:
        return None
    ranges = tuple((lo, hi) for lo, hi, _ in check.ranges)
    if v.is_contiguous and len(ranges) == 1:
        return (id(v.buf), v.offset, v.numel, ranges)
    keep = [(d, s) for d, s in zip(v.shape, v.strides) if d != 1]
    return (id(v.buf), v.offset, tuple(keep), ranges)


__all__ = ["INDEX_OUT_OF_RANGE", "STATUS_WORDS", "RangeCheck", "check_kernel", "dedupe_key"]
