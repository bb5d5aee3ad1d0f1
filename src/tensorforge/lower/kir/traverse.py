"""Traversal of kernel IR: children and walks, rebuilding and variable substitution, the buffers a statement
touches, and affine decomposition of index expressions.

Expressions are DAGs (a subexpression used twice is one object) and may be thousands of nodes deep (a
long fused chain), so every walk here visits each distinct node once and none recurses on expression
depth. Statements recurse: their nesting is that of loop nests, a few levels."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

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
    Dot,
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
    TileDot,
    Un,
    Var,
)

T = TypeVar("T")


def children(e: Expr) -> tuple[Expr, ...]:
    """The operands of ``e``, in order (what every walk follows; looked up by the node's class)."""
    f = _OPERANDS.get(type(e))
    if f is None:
        f = _OPERANDS[type(e)] = _operands_of(type(e))
    return f(e)


def _operands_of(cls: type) -> Callable[[Expr], tuple[Expr, ...]]:
    if hasattr(cls, "operands"):  # an extension node (e.g. lower/gpu_kir.py's Shfl) lists its own
        return cls.operands
    if issubclass(cls, Load):
        return lambda e: (e.index,) if e.mask is None else (e.index, e.mask)
    if issubclass(cls, Bin | Cmp):
        return lambda e: (e.a, e.b)
    if issubclass(cls, Un | Cast | Broadcast | HReduce):
        return lambda e: (e.a,)
    if issubclass(cls, Select):
        return lambda e: (e.cond, e.a, e.b)
    if issubclass(cls, Fma):
        return lambda e: (e.a, e.b, e.c)
    if issubclass(cls, Dot | TileDot):
        return lambda e: (e.acc, e.a, e.b)
    if issubclass(cls, Ramp):
        return lambda e: (e.base,)
    return lambda e: ()


_OPERANDS: dict[type, Callable[[Expr], tuple[Expr, ...]]] = {}


def walk_expr(e: Expr, seen: set[int] | None = None) -> Iterator[Expr]:
    """Every distinct node of ``e`` once, depth first from the root (the last operand first).

    Expressions are DAGs: Relu reads its input twice, so a fused chain of n Relus has 2^n paths, and a walk
    of the tree would take that long. A node is visited at its first occurrence in the tree walk and skipped
    afterwards (with everything below it, all visited by then), so the order of first occurrences is the
    tree walk's. ``seen`` (ids of nodes) carries over between walks: its nodes are skipped."""
    seen = set() if seen is None else seen
    stack = [e]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        stack.extend(children(x))


def transform(e: Expr, fn: Callable[[Expr, tuple], T], memo: dict[int, T] | None = None,
              descend: Callable[[Expr], bool] | None = None) -> T:  # fmt: skip
    """``fn(node, results of its operands)`` applied bottom-up to every distinct node of ``e`` once, operands
    first and in order (without recursion: a chain may be thousands of nodes deep). A node shared by several
    parents gives one result, shared by the parents. ``memo`` (id of a node -> its result) may carry over
    between calls on expressions that stay alive meanwhile (the statements of one kernel). Where
    ``descend(node)`` is false the node's operands are left alone and ``fn`` gets no results for them."""
    memo = {} if memo is None else memo
    stack = [e]
    operands: dict[int, tuple[Expr, ...]] = {}  # of the nodes expanded, whose operands come first
    while stack:
        x = stack[-1]
        k = id(x)
        if k in memo:
            stack.pop()
            continue
        kids = operands.get(k)
        if kids is None:
            kids = operands[k] = children(x) if descend is None or descend(x) else ()
            for c in reversed(kids):
                if id(c) not in memo:
                    stack.append(c)
            if stack[-1] is not x:
                continue
        stack.pop()
        memo[k] = fn(x, tuple([memo[id(c)] for c in kids]))
    return memo[id(e)]


def rebuild(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``e`` with its operands (``children(e)``) replaced by ``kids``: ``e`` itself when none changed."""
    if all(k is c for k, c in zip(kids, children(e))):
        return e
    if hasattr(e, "with_operands"):  # an extension node
        return e.with_operands(kids)
    if isinstance(e, Load):
        return Load(e.buf, kids[0], e.lanes, kids[1] if len(kids) > 1 else None)
    if isinstance(e, Bin):
        a, b = kids
        return binop(e.op, a, b) if a.lanes == 1 and b.lanes == 1 else Bin(e.op, a, b)
    if isinstance(e, Cmp):
        return Cmp(e.op, *kids)
    if isinstance(e, Un):
        return Un(e.op, kids[0])
    if isinstance(e, Select):
        return Select(*kids)
    if isinstance(e, Cast):
        return type(e)(kids[0], e.dtype)
    if isinstance(e, Fma):
        return Fma(*kids)
    if isinstance(e, Dot):
        return Dot(*kids)
    if isinstance(e, TileDot):
        return TileDot(*kids, e.a_stride, e.b_stride)
    if isinstance(e, Broadcast):
        return Broadcast(kids[0], e.lanes)
    if isinstance(e, Ramp):
        return Ramp(kids[0], e.stride, e.lanes)
    if isinstance(e, HReduce):
        return HReduce(e.op, kids[0])
    raise TypeError(f"rebuild: unknown expression {type(e).__name__}")


def reaching(roots: Iterable[Expr], pred: Callable[[Expr], bool]) -> set[int]:
    """Ids of the nodes of ``roots`` from which a node satisfying ``pred`` is reachable (itself included)."""
    hit: set[int] = set()

    def mark(x: Expr, kids: tuple[Expr, ...]) -> Expr:
        if pred(x) or any(id(c) in hit for c in kids):
            hit.add(id(x))
        return x

    memo: dict[int, Expr] = {}
    for e in roots:
        transform(e, mark, memo)
    return hit


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
    elif hasattr(s, "exprs"):  # an extension statement (e.g. lower/gpu_kir.py's Barrier)
        yield from s.exprs()


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


def substitute(e: Expr, mapping: dict[Var, Expr], memo: dict[int, Expr] | None = None) -> Expr:
    """Replace variables in ``e`` (rebuilding only the parts that change, each shared part once)."""
    return transform(e, lambda x, kids: mapping.get(x, x) if isinstance(x, Var) else rebuild(x, kids), memo)


def map_stmt(s: Stmt, fe: Callable[[Expr], Expr], fb: Callable[[Buffer], Buffer] = lambda b: b) -> Stmt:
    """A copy of statement ``s`` with every expression it holds (nested statements included) replaced by
    ``fe(expr)`` and every buffer it stores to by ``fb(buffer)``."""
    m = lambda x: map_stmt(x, fe, fb)  # noqa: E731
    if isinstance(s, Store):
        return Store(fb(s.buf), fe(s.index), fe(s.value), None if s.mask is None else fe(s.mask))
    if isinstance(s, Seq):
        return Seq(tuple(m(x) for x in s.body))
    if isinstance(s, For):
        return For(s.var, fe(s.start), fe(s.stop), m(s.body), s.kind, s.step, s.lanes)
    if isinstance(s, Decl):
        return Decl(s.var, fe(s.init))
    if isinstance(s, Assign):
        return Assign(s.var, fe(s.value))
    if isinstance(s, If):
        return If(fe(s.cond), m(s.then), None if s.orelse is None else m(s.orelse))
    if isinstance(s, Prefetch):
        return Prefetch(fb(s.buf), fe(s.index))
    if hasattr(s, "map_exprs"):  # an extension statement
        return s.map_exprs(fe, fb, m)
    raise TypeError(f"map_stmt: unknown statement {type(s).__name__}")


def substitute_stmt(s: Stmt, mapping: dict[Var, Expr]) -> Stmt:
    memo: dict[int, Expr] = {}  # one for the whole statement: parts shared between its expressions stay shared
    return map_stmt(s, lambda e: substitute(e, mapping, memo))


def buffers_of(s: Stmt) -> list[Buffer]:
    """Every buffer a statement touches, in first-use order."""
    seen: dict[int, Buffer] = {}
    visited: set[int] = set()  # expression nodes, over all the statements
    for st in walk_stmt(s):
        if isinstance(st, Store | Prefetch):
            seen.setdefault(id(st.buf), st.buf)
        for e in stmt_exprs(st):
            for x in walk_expr(e, visited):
                if isinstance(x, Load):
                    seen.setdefault(id(x.buf), x.buf)
    return list(seen.values())


def linear_in(e: Expr, v: Var) -> tuple[int, Expr] | None:
    """If ``e == coef * v + rest`` with ``rest`` independent of ``v``, return ``(coef, rest)``.

    Decomposed bottom-up over the nodes that use ``v`` (each once), the others being ``(0, node)``."""
    parts: dict[int, tuple[int, Expr] | None] = {}  # of the nodes that use v

    def part(x: Expr) -> tuple[int, Expr] | None:
        return parts[id(x)] if id(x) in parts else (0, x)

    def decompose(x: Expr, kids: tuple[Expr, ...]) -> Expr:
        if x is v or any(id(c) in parts for c in kids):
            parts[id(x)] = _linear_step(x, v, part)
        return x

    transform(e, decompose)
    return part(e)


def _linear_step(e: Expr, v: Var, part: Callable[[Expr], tuple[int, Expr] | None]) -> tuple[int, Expr] | None:
    """``linear_in`` of ``e`` (which uses ``v``) from those of its operands (``part``)."""
    if e is v:
        return 1, Const(0)
    if isinstance(e, Bin) and e.dtype is I64:
        if e.op in ("add", "sub"):
            la, lb = part(e.a), part(e.b)
            if la is None or lb is None:
                return None
            if e.op == "add":
                return la[0] + lb[0], binop("add", la[1], lb[1])
            return la[0] - lb[0], binop("sub", la[1], lb[1])
        if e.op == "mul":
            if isinstance(e.b, Const) and e.b.lanes == 1:
                la = part(e.a)
                return None if la is None else (la[0] * e.b.value, binop("mul", la[1], e.b.value))
            if isinstance(e.a, Const) and e.a.lanes == 1:
                lb = part(e.b)
                return None if lb is None else (lb[0] * e.a.value, binop("mul", lb[1], e.a.value))
    return None
