"""Kernel IR: the loop-level language every target lowers.

A kernel is a statement tree over flat buffers:

* expressions: ``Const``, ``Var``, ``Load``, ``Bin``, ``Un``, ``Cmp``, ``Select``, ``Cast``, ``Fma``,
  and the explicit-vector forms ``Broadcast``, ``Ramp`` and ``HReduce``;
* statements: ``For`` (kind serial / parallel / vector / unroll), ``Store``, ``Decl`` / ``Assign`` of
  local variables, ``If`` and ``Seq``.

Expressions are scalar unless they carry ``lanes > 1``. A ``For`` of kind ``VECTOR`` is written with
scalar semantics and turned into explicit lane code by ``lower.vectorize``; hand-written kernels (the
GEMM micro-kernel) use lane types directly. Indices are element offsets (not bytes) of type i64.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from ..ir.dtype import DType

I64 = DType.I64
BOOL = DType.BOOL


class LoopKind(enum.Enum):
    SERIAL = "for"
    PARALLEL = "parallel for"
    VECTOR = "vector for"
    UNROLL = "unroll for"


# ---------------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------------


class Expr:
    """Base of all expressions. Arithmetic operators build (and locally simplify) ``Bin`` nodes."""

    __slots__ = ()
    dtype: DType
    lanes: int

    def __add__(self, o):
        return binop("add", self, o)

    def __radd__(self, o):
        return binop("add", o, self)

    def __sub__(self, o):
        return binop("sub", self, o)

    def __rsub__(self, o):
        return binop("sub", o, self)

    def __mul__(self, o):
        return binop("mul", self, o)

    def __rmul__(self, o):
        return binop("mul", o, self)

    def __truediv__(self, o):
        return binop("div", self, o)

    def __rtruediv__(self, o):
        return binop("div", o, self)

    def __floordiv__(self, o):
        return binop("floordiv", self, o)

    def __mod__(self, o):
        return binop("mod", self, o)

    def __neg__(self):
        return unop("neg", self)


@dataclass(frozen=True, eq=False, slots=True)
class Const(Expr):
    value: int | float | bool
    dtype: DType = I64
    lanes: int = 1


_var_ids = itertools.count()


@dataclass(frozen=True, eq=False, slots=True)
class Var(Expr):
    name: str
    dtype: DType = I64
    lanes: int = 1
    uid: int = field(default_factory=lambda: next(_var_ids))


@dataclass(frozen=True, eq=False, slots=True)
class Buffer:
    """A flat array a kernel reads or writes; the runtime binds it to a pointer."""

    name: str
    dtype: DType
    numel: int

    def __getitem__(self, index) -> Load:
        return Load(self, as_expr(index))


@dataclass(frozen=True, eq=False, slots=True)
class Load(Expr):
    """``buf[index]``; with ``lanes > 1`` and a scalar index, ``lanes`` contiguous elements; with a
    vector index, a gather. A vector ``mask`` (bool lanes) reads only the lanes that are set (the others
    are 0 and their addresses are never touched)."""

    buf: Buffer
    index: Expr
    lanes: int = 1
    mask: Expr | None = None

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.buf.dtype


BIN_OPS = {
    "add", "sub", "mul", "div", "mod", "floordiv", "min", "max", "pow",
    "and", "or", "xor", "shl", "shr", "fmod",
}  # fmt: skip
CMP_OPS = {"lt", "le", "gt", "ge", "eq", "ne"}
UN_OPS = {
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "erf", "floor", "ceil", "round",
    "trunc", "not", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh",
    "atanh", "isnan", "isinf", "isposinf", "isneginf", "sign", "log1p", "expm1", "recip",
}  # fmt: skip


@dataclass(frozen=True, eq=False, slots=True)
class Bin(Expr):
    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Cmp(Expr):
    op: str
    a: Expr
    b: Expr

    dtype = BOOL

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Un(Expr):
    op: str
    a: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return BOOL if self.op in ("isnan", "isinf", "isposinf", "isneginf") else self.a.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.a.lanes


@dataclass(frozen=True, eq=False, slots=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.cond.lanes, self.a.lanes, self.b.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Cast(Expr):
    a: Expr
    dtype: DType

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return self.a.lanes


@dataclass(frozen=True, eq=False, slots=True)
class Bitcast(Cast):
    """The same bits read as another type of the same width (ONNX BitCast); a Cast everywhere else."""


@dataclass(frozen=True, eq=False, slots=True)
class Fma(Expr):
    """a * b + c, fused (one rounding)."""

    a: Expr
    b: Expr
    c: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.c.dtype

    @property
    def lanes(self) -> int:  # type: ignore[override]
        return max(self.a.lanes, self.b.lanes, self.c.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Broadcast(Expr):
    a: Expr
    lanes: int

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype


@dataclass(frozen=True, eq=False, slots=True)
class Ramp(Expr):
    """The vector ``base, base+stride, ..., base+(lanes-1)*stride`` (i64)."""

    base: Expr
    stride: int
    lanes: int
    dtype = I64


@dataclass(frozen=True, eq=False, slots=True)
class HReduce(Expr):
    """Reduce the lanes of a vector to a scalar with ``op`` (add, mul, min, max, and, or)."""

    op: str
    a: Expr
    lanes = 1

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.a.dtype


# ---------------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------------


class Stmt:
    __slots__ = ()


@dataclass(frozen=True, eq=False, slots=True)
class Store(Stmt):
    """``buf[index] = value``; vector forms as ``Load``, and a ``mask`` writes only the lanes set."""

    buf: Buffer
    index: Expr
    value: Expr
    mask: Expr | None = None


@dataclass(frozen=True, eq=False, slots=True)
class Seq(Stmt):
    body: tuple[Stmt, ...]


@dataclass(frozen=True, eq=False, slots=True)
class For(Stmt):
    var: Var
    start: Expr
    stop: Expr
    body: Stmt
    kind: LoopKind = LoopKind.SERIAL
    step: int = 1
    lanes: int = 1  # vector width for VECTOR loops


@dataclass(frozen=True, eq=False, slots=True)
class Decl(Stmt):
    """Declare a mutable local variable with an initial value (lives until the end of the kernel)."""

    var: Var
    init: Expr


@dataclass(frozen=True, eq=False, slots=True)
class Assign(Stmt):
    var: Var
    value: Expr


@dataclass(frozen=True, eq=False, slots=True)
class If(Stmt):
    cond: Expr
    then: Stmt
    orelse: Stmt | None = None


@dataclass(frozen=True, eq=False, slots=True)
class Prefetch(Stmt):
    """Hint to bring ``buf[index]`` into cache (no semantic effect)."""

    buf: Buffer
    index: Expr


@dataclass(eq=False)
class Kernel:
    """One function of generated code. ``labels`` name the graph nodes it implements."""

    name: str
    params: list[Buffer]
    body: Stmt
    labels: list[str] = field(default_factory=list)
    flops: int = 0
    bytes: int = 0  # bytes moved to/from memory at least once (for roofline numbers)
    workspace: list[Buffer] = field(default_factory=list)  # scratch buffers (arena-backed)

    def __str__(self) -> str:
        from .printer import format_kernel

        return format_kernel(self)


# ---------------------------------------------------------------------------------------------------
# Construction helpers with light simplification (keeps index arithmetic small and affine)
# ---------------------------------------------------------------------------------------------------


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
    if op not in BIN_OPS:
        raise ValueError(f"unknown binary op {op}")
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
    if op not in UN_OPS:
        raise ValueError(f"unknown unary op {op}")
    if op == "neg" and isinstance(a, Const) and a.lanes == 1:
        return Const(-a.value, a.dtype)
    return Un(op, a)


def cmp(op: str, a, b) -> Expr:
    a, b = _coerce_pair(a, b)
    if op not in CMP_OPS:
        raise ValueError(f"unknown comparison {op}")
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


# ---------------------------------------------------------------------------------------------------
# Traversal
# ---------------------------------------------------------------------------------------------------


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
