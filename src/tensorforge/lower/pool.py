"""MaxPool / AveragePool for any number of spatial dims.

The window bounds of the outer spatial dims are clipped per output row (no per-element checks), and the
last spatial dim is split into a left border, an interior and a right border: the interior loop has no
bounds checks and is vectorized with contiguous (stride-1) or strided loads; only the borders check.
"""

from __future__ import annotations

from ..ir.dtype import DType
from ..ops.nn import Window, pool_window
from . import kir as K
from .kir import Assign, Const, Decl, Expr, For, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, Sink, kernel_rule
from .schedule import loop_vars, parallel_axis
from .vectorize import identity


def _kbounds(o: Expr, s: int, p: int, d: int, size: int, k: int) -> tuple[Expr, Expr]:
    """[lo, hi) of kernel offsets whose input position o*s - p + kk*d lies in [0, size)."""
    a = binop("sub", Const(p), binop("mul", o, s))  # p - o*s
    lo = K.maximum(Const(0), binop("floordiv", binop("add", K.maximum(a, Const(0)), d - 1), d))
    b = binop("add", Const(size - 1), a)  # size-1 + p - o*s
    hi = K.minimum(Const(k), binop("floordiv", binop("add", K.maximum(b, Const(-1)), d), d))
    return lo, hi


def _interior(win: Window, axis: int) -> tuple[int, int]:
    """Output positions [lo, hi) along ``axis`` whose whole window is inside the input."""
    s, p, d, k, size = win.strides[axis], win.pads_begin[axis], win.dilations[axis], win.kernel[axis], win.in_size[axis]
    n = win.out_size[axis]
    lo = -(-p // s)
    hi = (size - 1 + p - (k - 1) * d) // s + 1 if size - 1 + p - (k - 1) * d >= 0 else 0
    lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
    return lo, max(lo, hi)


def lower_pool(ctx: LowerCtx, x, sink: Sink, win: Window, kind: str, count_include_pad: bool) -> Stmt:
    dt = x.dtype
    sp = len(win.kernel)
    n, c = x.shape[:2]
    out_sp = win.out_size
    lanes = ctx.lanes(dt)
    combine = "max" if kind == "max" else "add"
    acc_dt = dt
    nv, cv = Var("n"), Var("c")
    ov = loop_vars(sp)
    last = sp - 1

    def window_body(o_last_kind: str) -> Stmt:
        """Body for one output element at (nv, cv, ov...) — 'interior' or 'border' along the last dim."""
        acc = Var("acc", acc_dt)
        kv = [Var(f"k{d}") for d in range(sp)]
        in_idx: list[Expr] = [nv, cv]
        ranges = []
        for d in range(sp):
            pos = binop("add", binop("sub", binop("mul", ov[d], win.strides[d]), win.pads_begin[d]),
                        binop("mul", kv[d], win.dilations[d]))  # fmt: skip
            in_idx.append(pos)
            if d < last or o_last_kind == "border":
                ranges.append(_kbounds(ov[d], win.strides[d], win.pads_begin[d], win.dilations[d],
                                       win.in_size[d], win.kernel[d]))  # fmt: skip
            else:
                ranges.append((Const(0), Const(win.kernel[d])))
        upd: Stmt = Assign(acc, K.binop(combine, acc, x(in_idx)))
        for d in reversed(range(sp)):
            upd = For(kv[d], ranges[d][0], ranges[d][1], upd)
        stmts: list[Stmt] = [Decl(acc, identity(combine, acc_dt)), upd]
        res: Expr = acc
        if kind == "avg":
            cnt: Expr = Const(1)
            for d in range(sp):
                if count_include_pad:
                    # window positions inside the padded input [-p_begin, size + p_end)
                    lo, hi = _kbounds(ov[d], win.strides[d], 0, win.dilations[d],
                                      win.in_size[d] + win.pads_begin[d] + win.pads_end[d], win.kernel[d])  # fmt: skip
                    cnt = binop("mul", cnt, binop("sub", hi, lo))
                else:
                    cnt = binop("mul", cnt, binop("sub", ranges[d][1], ranges[d][0]))
            res = K.binop("div", acc, K.cast(K.maximum(cnt, Const(1)), acc_dt))
        stmts.append(sink.store([nv, cv, *ov], res))
        return K.seq(stmts)

    lo, hi = _interior(win, last)
    n_last = out_sp[last]
    parts = []
    if lo > 0:
        parts.append(For(ov[last], Const(0), Const(lo), window_body("border")))
    if hi > lo:
        vec = hi - lo >= lanes > 1
        parts.append(For(ov[last], Const(lo), Const(hi), window_body("interior"),
                         LoopKind.VECTOR if vec else LoopKind.SERIAL, 1, lanes if vec else 1))  # fmt: skip
    if n_last > hi:
        parts.append(For(ov[last], Const(max(hi, lo)), Const(n_last), window_body("border")))
    body: Stmt = K.seq(parts) if parts else K.Seq(())
    outer = [n, c, *out_sp[:last]]
    outer_vars = [nv, cv, *ov[:last]]
    work = n_last * max(1, int(__import__("numpy").prod(win.kernel)))
    par = parallel_axis(outer, work, ctx.parallel_threshold)
    for d in reversed(range(len(outer))):
        body = For(outer_vars[d], Const(0), Const(outer[d]), body, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    return body


@kernel_rule("MaxPool")
def _maxpool(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    if x.dtype is DType.BOOL:
        ctx.fail("MaxPool of bool tensors is not defined")
    win = pool_window(None, x.shape, {**node.attrs})
    return lower_pool(ctx, x, outs[0], win, "max", False)


@kernel_rule("AveragePool")
def _avgpool(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    win = pool_window(None, x.shape, {**node.attrs})
    return lower_pool(ctx, x, outs[0], win, "avg", bool(node.attrs.get("count_include_pad", 0)))
