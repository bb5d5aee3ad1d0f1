"""Loop-nest schedules shared by lowering rules: which loop is vectorized, which is parallel."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .kir import Const, Expr, For, LoopKind, Stmt, Var, binop, minimum

VAR_NAMES = "ijklmnopqrstuvw"


def loop_vars(n: int) -> list[Var]:
    return [Var(VAR_NAMES[d % len(VAR_NAMES)] + ("" if d < len(VAR_NAMES) else str(d))) for d in range(n)]


def parallel_axis(shape: Sequence[int], work_per_elem: int, threshold: int, max_axes: int | None = None) -> int | None:
    """The outermost axis worth splitting across threads, or None when the nest is too small.

    Picks the first axis with extent >= 2 among the first ``max_axes`` axes.
    """
    total = 1
    for d in shape:
        total *= d
    if total * max(work_per_elem, 1) < threshold:
        return None
    limit = len(shape) if max_axes is None else min(max_axes, len(shape))
    for i in range(limit):
        if shape[i] >= 2:
            return i
    return None


def pointwise_nest(
    shape: Sequence[int],
    body: Callable[[list[Expr]], Stmt],
    lanes: int,
    threshold: int,
    work_per_elem: int = 1,
    vector_ok: bool = True,
) -> Stmt:
    """``for i0.. for i_{n-1}: body(idx)`` with the last loop vectorized and an outer loop parallel.

    When only the last axis is large (e.g. a 1-D tensor), it is split into parallel chunks of vector
    loops.
    """
    shape = list(shape)
    n = len(shape)
    if n == 0:
        return body([])
    total = 1
    for d in shape:
        total *= d
    par = parallel_axis(shape, work_per_elem, threshold, max_axes=n - 1)
    last = shape[-1]
    vec = vector_ok and lanes > 1 and last >= lanes
    if par is None and total * max(work_per_elem, 1) >= threshold and last >= 4 * max(lanes, 1):
        # split the last axis: parallel over chunks, vector inside each chunk
        chunk = max(lanes * 64, -(-last // 64))
        chunk = -(-chunk // max(lanes, 1)) * max(lanes, 1)
        vars_ = loop_vars(n)
        outer = Var("c")
        inner = vars_[-1]
        flat = binop("add", binop("mul", outer, chunk), inner)
        stmt = body([*vars_[:-1], flat])
        stop = minimum(Const(chunk), binop("sub", Const(last), binop("mul", outer, chunk)))
        stmt = For(inner, Const(0), stop, stmt, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, lanes if vec else 1)
        stmt = For(outer, Const(0), Const(-(-last // chunk)), stmt, LoopKind.PARALLEL)
        for d in reversed(range(n - 1)):
            stmt = For(vars_[d], Const(0), Const(shape[d]), stmt)
        return stmt
    vars_ = loop_vars(n)
    stmt = body(list(vars_))
    for d in reversed(range(n)):
        kind, nl = LoopKind.SERIAL, 1
        if d == n - 1 and vec:
            kind, nl = LoopKind.VECTOR, lanes
        elif d == par:
            kind = LoopKind.PARALLEL
        stmt = For(vars_[d], Const(0), Const(shape[d]), stmt, kind, 1, nl)
    return stmt
