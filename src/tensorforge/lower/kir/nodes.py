"""Kernel-IR nodes: expressions, statements, buffers and kernels (see the package docstring)."""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from ...ir.dtype import DType
from ...ir.scalar_ops import SCALAR_OPS

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


def _build():
    from . import build  # the constructors (build.py imports this module)

    return build


class Expr:
    """Base of all expressions. Arithmetic operators build (and locally simplify) ``Bin`` nodes."""

    __slots__ = ()
    dtype: DType
    lanes: int

    def __add__(self, o):
        return _build().binop("add", self, o)

    def __radd__(self, o):
        return _build().binop("add", o, self)

    def __sub__(self, o):
        return _build().binop("sub", self, o)

    def __rsub__(self, o):
        return _build().binop("sub", o, self)

    def __mul__(self, o):
        return _build().binop("mul", self, o)

    def __rmul__(self, o):
        return _build().binop("mul", o, self)

    def __truediv__(self, o):
        return _build().binop("div", self, o)

    def __rtruediv__(self, o):
        return _build().binop("div", o, self)

    def __floordiv__(self, o):
        return _build().binop("floordiv", self, o)

    def __mod__(self, o):
        return _build().binop("mod", self, o)

    def __neg__(self):
        return _build().unop("neg", self)


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
        return Load(self, _build().as_expr(index))


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


def _set(node, **derived) -> None:
    """Store the derived fields of a frozen node. ``dtype`` and ``lanes`` are computed once, when the node is
    built from its (already built) operands: computed on demand they would walk the operands again at every
    query, which is exponential on a DAG (Relu reads its input twice) and recursive on a long chain."""
    for k, v in derived.items():
        object.__setattr__(node, k, v)


def _op_dtype(op: str, a: Expr) -> DType:
    return BOOL if SCALAR_OPS[op].predicate else a.dtype


@dataclass(frozen=True, eq=False, slots=True)
class Bin(Expr):
    """``op`` of the scalar-op table applied to ``a`` and ``b`` (the table gives the result dtype)."""

    op: str
    a: Expr
    b: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=_op_dtype(self.op, self.a), lanes=max(self.a.lanes, self.b.lanes))


@dataclass(frozen=True, eq=False, slots=True)
class Cmp(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=_op_dtype(self.op, self.a), lanes=max(self.a.lanes, self.b.lanes))


@dataclass(frozen=True, eq=False, slots=True)
class Un(Expr):
    op: str
    a: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=_op_dtype(self.op, self.a), lanes=self.a.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.a.dtype, lanes=max(self.cond.lanes, self.a.lanes, self.b.lanes))


@dataclass(frozen=True, eq=False, slots=True)
class Cast(Expr):
    a: Expr
    dtype: DType
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, lanes=self.a.lanes)


@dataclass(frozen=True, eq=False, slots=True)
class Bitcast(Cast):
    """The same bits read as another type of the same width (ONNX BitCast); a Cast everywhere else."""


@dataclass(frozen=True, eq=False, slots=True)
class Fma(Expr):
    """a * b + c, fused (one rounding)."""

    a: Expr
    b: Expr
    c: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.c.dtype, lanes=max(self.a.lanes, self.b.lanes, self.c.lanes))


@dataclass(frozen=True, eq=False, slots=True)
class Dot(Expr):
    """Integer dot-accumulate (VNNI ``vpdpbusd``, ``vpmaddwd``, AArch64 ``sdot``): lane ``i`` of the result is
    ``acc[i] + sum_{j<G} a[G*i + j] * b[G*i + j]``, the products exact and widened to ``acc``'s dtype, with
    ``G = max(a.lanes, b.lanes) // acc.lanes`` (each operand's signedness from its dtype). An operand of ``G``
    lanes is one group, the same for every lane (the broadcast operand of a micro-kernel)."""

    acc: Expr
    a: Expr
    b: Expr
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.acc.dtype, lanes=self.acc.lanes)

    @property
    def group(self) -> int:
        return max(self.a.lanes, self.b.lanes) // self.acc.lanes

    @staticmethod
    def numpy(acc, a, b):
        """The reference semantics on numpy arrays (``acc`` [L], ``a``/``b`` [G*L] or [G])."""
        import numpy as np

        L = len(acc)
        G = max(len(a), len(b)) // L
        a2 = np.broadcast_to(np.asarray(a, np.int64).reshape(-1, G), (L, G))
        b2 = np.broadcast_to(np.asarray(b, np.int64).reshape(-1, G), (L, G))
        return (np.asarray(acc, np.int64) + (a2 * b2).sum(axis=1)).astype(np.asarray(acc).dtype)


@dataclass(frozen=True, eq=False, slots=True)
class TileDot(Expr):
    """AMX tile multiply-accumulate: ``acc`` is a 16x16 int32 tile (as 256 lanes, row-major) plus
    ``A[16 x 64 bytes] @ B``, A's rows at ``a`` (a scalar Load naming the first byte) ``a_stride`` elements
    apart, B's 16 rows of 16 columns x 4 bytes (k-groups of 4 per column, VNNI layout) at ``b``, ``b_stride``
    apart: ``out[m][n] = acc[m][n] + sum_k A[m][k] * B[k//4][n][k%4]`` (``tdpb{s,u}{s,u}d`` by the operands'
    signedness)."""

    acc: Expr
    a: Load
    b: Load
    a_stride: int
    b_stride: int
    dtype: DType = field(init=False)
    lanes: int = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.acc.dtype, lanes=self.acc.lanes)

    @staticmethod
    def numpy(acc, a_tile, b_tile):
        """acc [16, 16] + a_tile [16, 64] @ b_tile [16, 16, 4] (read as [64, 16]) in exact integers."""
        import numpy as np

        b = np.asarray(b_tile, np.int64).transpose(0, 2, 1).reshape(64, 16)
        return (np.asarray(acc, np.int64) + np.asarray(a_tile, np.int64) @ b).astype(np.asarray(acc).dtype)


@dataclass(frozen=True, eq=False, slots=True)
class Broadcast(Expr):
    a: Expr
    lanes: int
    dtype: DType = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.a.dtype)


@dataclass(frozen=True, eq=False, slots=True)
class Ramp(Expr):
    """The vector ``base, base+stride, ..., base+(lanes-1)*stride`` (i64)."""

    base: Expr
    stride: int
    lanes: int
    dtype = I64


@dataclass(frozen=True, eq=False, slots=True)
class HReduce(Expr):
    """Reduce the lanes of a vector to a scalar with ``op``, a reducible op of the scalar-op table."""

    op: str
    a: Expr
    lanes = 1
    dtype: DType = field(init=False)

    def __post_init__(self):
        _set(self, dtype=self.a.dtype)


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
        from ..printer import format_kernel

        return format_kernel(self)
