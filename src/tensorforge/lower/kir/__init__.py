"""Kernel IR: the loop-level language every target lowers.

A kernel is a statement tree over flat buffers:

* expressions: ``Const``, ``Var``, ``Load``, ``Bin``, ``Un``, ``Cmp``, ``Select``, ``Cast``, ``Fma``, the integer
  dot-accumulates ``Dot`` (VNNI-style) and ``TileDot`` (AMX),
  and the explicit-vector forms ``Broadcast``, ``Ramp`` and ``HReduce``;
* statements: ``For`` (kind serial / parallel / vector / unroll), ``Store``, ``Decl`` / ``Assign`` of
  local variables, ``If`` and ``Seq``.

Expressions are scalar unless they carry ``lanes > 1``. A ``For`` of kind ``VECTOR`` is written with
scalar semantics and turned into explicit lane code by ``lower.vectorize``; hand-written kernels (the
GEMM micro-kernel) use lane types directly. Indices are element offsets (not bytes) of type i64.

``Bin``, ``Cmp`` and ``Un`` name an op of the scalar-op table (``ir/scalar_ops.py``, re-exported here).
The package: ``nodes.py`` (the node classes), ``build.py`` (constructors that simplify locally),
``traverse.py`` (walks, substitution, affine index analysis).
"""

from ...ir.scalar_ops import SCALAR_OPS, Kind, ScalarOp, scalar_op
from .build import as_expr, binop, cast, cmp, const, loop, loop_nest, maximum, minimum, select, seq, unop
from .nodes import (
    BOOL,
    I64,
    Assign,
    Bin,
    Bitcast,
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
    Kernel,
    Load,
    LoopKind,
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
from .traverse import (
    buffers_of,
    children,
    expr_vars,
    linear_in,
    map_stmt,
    reaching,
    rebuild,
    stmt_exprs,
    sub_stmts,
    substitute,
    substitute_stmt,
    transform,
    uses_var,
    walk_expr,
    walk_stmt,
)

__all__ = [
    "BOOL",
    "I64",
    "SCALAR_OPS",
    "Assign",
    "Bin",
    "Bitcast",
    "Broadcast",
    "Buffer",
    "Cast",
    "Cmp",
    "Const",
    "Decl",
    "Dot",
    "Expr",
    "Fma",
    "For",
    "HReduce",
    "If",
    "Kernel",
    "Kind",
    "Load",
    "LoopKind",
    "Prefetch",
    "Ramp",
    "ScalarOp",
    "Select",
    "Seq",
    "Stmt",
    "Store",
    "TileDot",
    "Un",
    "Var",
    "as_expr",
    "binop",
    "buffers_of",
    "cast",
    "children",
    "cmp",
    "const",
    "expr_vars",
    "linear_in",
    "loop",
    "loop_nest",
    "map_stmt",
    "maximum",
    "minimum",
    "reaching",
    "rebuild",
    "scalar_op",
    "select",
    "seq",
    "stmt_exprs",
    "sub_stmts",
    "substitute",
    "substitute_stmt",
    "transform",
    "unop",
    "uses_var",
    "walk_expr",
    "walk_stmt",
]
