"""Traversal of kernel IR: children and walks, variable substitution, the buffers a statement touches, and
affine decomposition of index expressions."""

from __future__ import annotations

from collections.abc import Iterator

from .build import binop
from .nodes import (
    I64,
    Assign,
    Bin,
    Broadcast,
    Buffer,
    Cast,
    Cmp,
    Const,
    Decl,
    Expr,
    Fma,
    For,
    HReduce,
    If,
    Load,
    Prefetch,
    Ramp,
    Select,
    Seq,
    Stmt,
    Store,
    Un,
    Var,
)


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Load):
        return (e.index,) if e.mask is None else (e.index, e.mask)
    if isinstance(e, Bin | Cmp):
        return (e.a, e.b)
    if isinstance(e, Un | Cast | Broadcast | HReduce):
        return (e.a,)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    if isinstance(e, Fma):
        return (e.a, e.b, e.c)
    if isinstance(e, Ramp):
        return (e.base,)
    return ()


def walk_expr(e: Expr) -> Iterator[Expr]:
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(children(x))


def stmt_exprs(s: Stmt) -> Iterator[Expr]:
    """The expressions directly held by a statement (not those of nested statements)."""
    if isinstance(s, Store):
        yield s.index
        yield s.value
        if s.mask is not None:
            yield s.mask
    elif isinstance(s, For):
        yield s.start
        yield s.stop
    elif isinstance(s, Decl):
        yield s.init
    elif isinstance(s, Assign):
        yield s.value
    elif isinstance(s, If):
        yield s.cond
    elif isinstance(s, Prefetch):
        yield s.index


def sub_stmts(s: Stmt) -> tuple[Stmt, ...]:
    if isinstance(s, Seq):
        return s.body
    if isinstance(s, For):
        return (s.body,)
    if isinstance(s, If):
        return (s.then,) if s.orelse is None else (s.then, s.orelse)
    return ()


def walk_stmt(s: Stmt) -> Iterator[Stmt]:
    stack = [s]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(reversed(sub_stmts(x)))


def expr_vars(e: Expr) -> set[Var]:
    return {x for x in walk_expr(e) if isinstance(x, Var)}


def uses_var(e: Expr, v: Var) -> bool:
    return any(x is v for x in walk_expr(e))


def substitute(e: Expr, mapping: dict[Var, Expr]) -> Expr:
    """Replace variables in ``e`` (rebuilding only the parts that change)."""
    if isinstance(e, Var):
        return mapping.get(e, e)
    if isinstance(e, Const):
        return e
    if isinstance(e, Load):
        i = substitute(e.index, mapping)
        m = None if e.mask is None else substitute(e.mask, mapping)
        return e if (i is e.index and m is e.mask) else Load(e.buf, i, e.lanes, m)
    if isinstance(e, Bin):
        a, b = substitute(e.a, mapping), substitute(e.b, mapping)
        if a is e.a and b is e.b:
            return e
        if a.lanes == 1 and b.lanes == 1:
            return binop(e.op, a, b)
        return Bin(e.op, a, b)
    if isinstance(e, Cmp):
        a, b = substitute(e.a, mapping), substitute(e.b, mapping)
        return e if (a is e.a and b is e.b) else Cmp(e.op, a, b)
    if isinstance(e, Un):
        a = substitute(e.a, mapping)
        return e if a is e.a else Un(e.op, a)
    if isinstance(e, Select):
        c, a, b = (substitute(x, mapping) for x in (e.cond, e.a, e.b))
        return e if (c is e.cond and a is e.a and b is e.b) else Select(c, a, b)
    if isinstance(e, Cast):
        a = substitute(e.a, mapping)
        return e if a is e.a else type(e)(a, e.dtype)
    if isinstance(e, Fma):
        a, b, c = (substitute(x, mapping) for x in (e.a, e.b, e.c))
        return e if (a is e.a and b is e.b and c is e.c) else Fma(a, b, c)
    if isinstance(e, Broadcast):
        a = substitute(e.a, mapping)
        return e if a is e.a else Broadcast(a, e.lanes)
    if isinstance(e, Ramp):
        a = substitute(e.base, mapping)
        return e if a is e.base else Ramp(a, e.stride, e.lanes)
    if isinstance(e, HReduce):
        a = substitute(e.a, mapping)
        return e if a is e.a else HReduce(e.op, a)
    raise TypeError(f"substitute: unknown expression {type(e).__name__}")


def substitute_stmt(s: Stmt, mapping: dict[Var, Expr]) -> Stmt:
    sub = lambda e: substitute(e, mapping)  # noqa: E731
    if isinstance(s, Store):
        return Store(s.buf, sub(s.index), sub(s.value), None if s.mask is None else sub(s.mask))
    if isinstance(s, Seq):
        return Seq(tuple(substitute_stmt(x, mapping) for x in s.body))
    if isinstance(s, For):
        return For(s.var, sub(s.start), sub(s.stop), substitute_stmt(s.body, mapping), s.kind, s.step, s.lanes)
    if isinstance(s, Decl):
        return Decl(s.var, sub(s.init))
    if isinstance(s, Assign):
        return Assign(s.var, sub(s.value))
    if isinstance(s, If):
        return If(
            sub(s.cond),
            substitute_stmt(s.then, mapping),
            None if s.orelse is None else substitute_stmt(s.orelse, mapping),
        )
    if isinstance(s, Prefetch):
        return Prefetch(s.buf, sub(s.index))
    raise TypeError(f"substitute_stmt: unknown statement {type(s).__name__}")


def buffers_of(s: Stmt) -> list[Buffer]:
    """Every buffer a statement touches, in first-use order."""
    seen: dict[int, Buffer] = {}
    for st in walk_stmt(s):
        if isinstance(st, Store | Prefetch):
            seen.setdefault(id(st.buf), st.buf)
        for e in stmt_exprs(st):
            for x in walk_expr(e):
                if isinstance(x, Load):
                    seen.setdefault(id(x.buf), x.buf)
    return list(seen.values())


def linear_in(e: Expr, v: Var) -> tuple[int, Expr] | None:
    """If ``e == coef * v + rest`` with ``rest`` independent of ``v``, return ``(coef, rest)``."""
    if not uses_var(e, v):
        return 0, e
    if e is v:
        return 1, Const(0)
    if isinstance(e, Bin) and e.dtype is I64:
        if e.op in ("add", "sub"):
            la, lb = linear_in(e.a, v), linear_in(e.b, v)
            if la is None or lb is None:
                return None
            if e.op == "add":
                return la[0] + lb[0], binop("add", la[1], lb[1])
            return la[0] - lb[0], binop("sub", la[1], lb[1])
        if e.op == "mul":
            if isinstance(e.b, Const) and e.b.lanes == 1:
                la = linear_in(e.a, v)
                if la is None:
                    return None
                return la[0] * e.b.value, binop("mul", la[1], e.b.value)
            if isinstance(e.a, Const) and e.a.lanes == 1:
                lb = linear_in(e.b, v)
                if lb is None:
                    return None
                return lb[0] * e.a.value, binop("mul", lb[1], e.a.value)
    return None
