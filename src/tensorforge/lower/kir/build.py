"""Constructors of kernel IR with light local simplification: integer index arithmetic is folded and kept
small and affine (unflattened digits added back collapse to the flat index), and Python numbers become
constants of the other operand's dtype."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ...ir.dtype import DType
from ...ir.scalar_ops import Kind, scalar_op
from .nodes import BOOL, I64, Bin, Cast, Cmp, Const, Expr, For, LoopKind, Select, Seq, Stmt, Un, Var


def as_expr(x, dtype: DType | None = None) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, bool):
        return Const(x, dtype or BOOL)
    if isinstance(x, int):
        return Const(x, dtype or I64)
    if isinstance(x, float):
        return Const(x, dtype or DType.F32)
    raise TypeError(f"cannot make a kernel-IR expression of {x!r}")


def const(value, dtype: DType) -> Const:
    if dtype is BOOL:
        return Const(bool(value), dtype)
    if dtype.is_float:
        return Const(float(value), dtype)
    return Const(int(value), dtype)


def _coerce_pair(a, b) -> tuple[Expr, Expr]:
    if isinstance(a, Expr) and not isinstance(b, Expr):
        return a, const(b, a.dtype)
    if isinstance(b, Expr) and not isinstance(a, Expr):
        return const(a, b.dtype), b
    return as_expr(a), as_expr(b)


def _is_const(e: Expr, v=None) -> bool:
    return isinstance(e, Const) and e.lanes == 1 and (v is None or e.value == v)


def binop(op: str, a, b) -> Expr:
    a, b = _coerce_pair(a, b)
    if a.dtype != b.dtype:
        raise TypeError(f"kernel IR {op}: dtype mismatch {a.dtype} vs {b.dtype}")
    if a.dtype is I64 and a.lanes == 1 and b.lanes == 1:
        # fold integer index arithmetic
        if isinstance(a, Const) and isinstance(b, Const):
            x, y = a.value, b.value
            if op == "add":
                return Const(x + y)
            if op == "sub":
                return Const(x - y)
            if op == "mul":
                return Const(x * y)
            if op == "floordiv" and y != 0:
                return Const(x // y)
            if op == "mod" and y != 0:
                return Const(x % y)
            if op == "min":
                return Const(min(x, y))
            if op == "max":
                return Const(max(x, y))
        if op == "add":
            if _is_const(a, 0):
                return b
            if _is_const(b, 0):
                return a
            merged = _merge_div_mod(a, b)
            if merged is not None:
                return merged
            # (x + c1) + c2 -> x + (c1 + c2)
            if isinstance(b, Const) and isinstance(a, Bin) and a.op == "add" and _is_const(a.b):
                return binop("add", a.a, a.b.value + b.value)
            if isinstance(a, Const):
                return binop("add", b, a)
        if op == "sub":
            if _is_const(b, 0):
                return a
            if isinstance(b, Const):
                return binop("add", a, -b.value)
        if op == "mul":
            if _is_const(a, 0) or _is_const(b, 0):
                return Const(0)
            if _is_const(a, 1):
                return b
            if _is_const(b, 1):
                return a
            if isinstance(a, Const):
                return binop("mul", b, a)
        if op in ("floordiv",) and _is_const(b, 1):
            return a
        if op == "mod" and _is_const(b, 1):
            return Const(0)
    scalar_op(op, Kind.BINARY)
    return Bin(op, a, b)


def _term(e: Expr) -> tuple[str, Expr, int, int, int] | None:
    """An index term as (form, x, a, b, k): "div": (x // a) * k; "mod": (x % a) * k; "divmod": (x // a % b) * k."""
    k = 1
    if isinstance(e, Bin) and e.op == "mul" and _is_const(e.b):
        e, k = e.a, e.b.value
    if not isinstance(e, Bin) or not _is_const(e.b) or e.b.value <= 0:
        return None
    if e.op == "floordiv":
        return ("div", e.a, e.b.value, 0, k)
    if e.op == "mod":
        x = e.a
        if isinstance(x, Bin) and x.op == "floordiv" and _is_const(x.b) and x.b.value > 0:
            return ("divmod", x.a, x.b.value, e.b.value, k)
        return ("mod", x, e.b.value, 0, k)
    return None


def _recombine(p: Expr, q: Expr) -> Expr | None:
    """Undo the split of an index into digits (unflatten) when both digits are added back:
    (x // c) * (c*s) + (x % c) * s = x * s   and   (x // a % b) * (a*s) + (x % a) * s = (x % (a*b)) * s."""
    tp, tq = _term(p), _term(q)
    if tp is None or tq is None or tq[0] != "mod" or tp[1] is not tq[1] or tp[2] != tq[2]:
        return None
    s = tq[4]
    if tp[4] != tp[2] * s:
        return None
    if tp[0] == "div":
        return binop("mul", tp[1], s)
    if tp[0] == "divmod":
        return binop("mul", binop("mod", tp[1], tp[2] * tp[3]), s)
    return None


def _merge_div_mod(a: Expr, b: Expr) -> Expr | None:
    """Index sums built from unflattened digits collapse back to the flat index (so that a loop over a
    flattened row stays a unit-stride, vectorizable access)."""
    for x, y in ((a, b), (b, a)):
        r = _recombine(x, y)
        if r is not None:
            return r
    if isinstance(a, Bin) and a.op == "add":
        for x, y in ((a.b, b), (b, a.b)):
            r = _recombine(x, y)
            if r is not None:
                return binop("add", a.a, r)
    return None


def unop(op: str, a) -> Expr:
    a = as_expr(a)
    scalar_op(op, Kind.UNARY)
    if op == "neg" and isinstance(a, Const) and a.lanes == 1:
        return Const(-a.value, a.dtype)
    return Un(op, a)


def cmp(op: str, a, b) -> Expr:
    a, b = _coerce_pair(a, b)
    scalar_op(op, Kind.COMPARE)
    if a.dtype != b.dtype:
        raise TypeError(f"kernel IR {op}: dtype mismatch {a.dtype} vs {b.dtype}")
    return Cmp(op, a, b)


def select(c, a, b) -> Expr:
    a, b = _coerce_pair(a, b)
    c = as_expr(c)
    if _is_const(c):
        return a if c.value else b
    return Select(c, a, b)


def cast(a: Expr, dtype: DType) -> Expr:
    if a.dtype == dtype:
        return a
    if isinstance(a, Const) and a.lanes == 1:
        return const(a.value, dtype)
    return Cast(a, dtype)


def minimum(a, b) -> Expr:
    return binop("min", a, b)


def maximum(a, b) -> Expr:
    return binop("max", a, b)


def seq(*stmts: Stmt | Iterable[Stmt] | None) -> Stmt:
    flat: list[Stmt] = []
    for s in stmts:
        if s is None:
            continue
        if isinstance(s, Seq):
            flat.extend(s.body)
        elif isinstance(s, Stmt):
            flat.append(s)
        else:
            for t in s:
                if isinstance(t, Seq):
                    flat.extend(t.body)
                elif t is not None:
                    flat.append(t)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def loop(var: Var, stop, body: Stmt, kind: LoopKind = LoopKind.SERIAL, start=0, lanes: int = 1) -> For:
    return For(var, as_expr(start), as_expr(stop), body, kind, 1, lanes)


def loop_nest(extents: Sequence[int], make_body, names: str = "ijklmnopqrstuvw", kinds=None) -> Stmt:
    """Nested loops over ``extents``; ``make_body(vars)`` gives the innermost statement."""
    vars_ = [Var(names[i % len(names)] + ("" if i < len(names) else str(i))) for i in range(len(extents))]
    body = make_body(vars_)
    for d in reversed(range(len(extents))):
        kind = kinds[d] if kinds else LoopKind.SERIAL
        lanes = 0
        if isinstance(kind, tuple):
            kind, lanes = kind
        body = For(vars_[d], Const(0), Const(extents[d]), body, kind, 1, lanes or 1)
    return body
