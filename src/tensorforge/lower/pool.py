"""MaxPool / AveragePool for any number of spatial dims.

Each spatial axis is split into borders (window clipped to the input, bounds per output position) and an
interior (window whole): in the interior of all axes the window is a constant, unrolled, with no bounds
checks; the last axis's interior is vectorized (stride-s loads become contiguous loads and a shuffle,
the tail of a row one masked iteration). Averages divide by a constant there.
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


MAX_UNROLL_WINDOW = 16  # window sizes up to this are unrolled where their bounds are constant


def lower_pool(ctx: LowerCtx, x, sink: Sink, win: Window, kind: str, count_include_pad: bool) -> Stmt:
    """Every spatial axis is split into a leading border, an interior and a trailing border. Where all
    axes are interior the window is a compile-time constant (unrolled, no bounds, no divisions); the last
    axis's interior is a vector loop (contiguous or stride-s loads, the row's tail a masked iteration)."""
    dt = x.dtype
    sp = len(win.kernel)
    n, c = x.shape[:2]
    out_sp = win.out_size
    lanes = ctx.lanes(dt)
    combine = "max" if kind == "max" else "add"
    nv, cv = Var("n"), Var("c")
    ov = loop_vars(sp)
    last = sp - 1

    def window_body(interior: tuple[bool, ...]) -> Stmt:
        """One output element at (nv, cv, ov...); ``interior[d]``: the window is whole along axis d."""
        acc = Var("acc", dt)
        kv = [Var(f"k{d}") for d in range(sp)]
        in_idx: list[Expr] = [nv, cv]
        ranges = []
        for d in range(sp):
            pos = binop("add", binop("sub", binop("mul", ov[d], win.strides[d]), win.pads_begin[d]),
                        binop("mul", kv[d], win.dilations[d]))  # fmt: skip
            in_idx.append(pos)
            if interior[d]:
                ranges.append((Const(0), Const(win.kernel[d])))
            else:
                ranges.append(_kbounds(ov[d], win.strides[d], win.pads_begin[d], win.dilations[d],
                                       win.in_size[d], win.kernel[d]))  # fmt: skip
        xv = x(in_idx)
        fast_max = kind == "max" and dt.is_float
        nan = Var("nan", DType.BOOL)
        if fast_max:
            # a plain compare-and-select max (one vmaxps) plus a NaN flag, instead of the NaN-propagating
            # maximum (four instructions on x86): the window's result is NaN if any input was
            upd: Stmt = K.seq(Assign(acc, K.select(K.cmp("gt", xv, acc), xv, acc)),
                              Assign(nan, K.binop("or", nan, K.unop("isnan", xv))))  # fmt: skip
        else:
            upd = Assign(acc, K.binop(combine, acc, xv))
        for d in reversed(range(sp)):
            unroll = interior[d] and win.kernel[d] <= MAX_UNROLL_WINDOW
            upd = For(kv[d], ranges[d][0], ranges[d][1], upd, LoopKind.UNROLL if unroll else LoopKind.SERIAL)
        stmts: list[Stmt] = [Decl(acc, identity(combine, dt))]
        if fast_max:
            stmts.append(Decl(nan, K.const(False, DType.BOOL)))
        stmts.append(upd)
        res: Expr = acc if not fast_max else K.select(nan, K.const(float("nan"), dt), acc)
        if kind == "avg":
            cnt: Expr = Const(1)
            for d in range(sp):
                if interior[d]:
                    cnt = binop("mul", cnt, Const(win.kernel[d]))
                elif count_include_pad:
                    # window positions inside the padded input [-p_begin, size + p_end)
                    lo, hi = _kbounds(ov[d], win.strides[d], 0, win.dilations[d],
                                      win.in_size[d] + win.pads_begin[d] + win.pads_end[d], win.kernel[d])  # fmt: skip
                    cnt = binop("mul", cnt, binop("sub", hi, lo))
                else:
                    cnt = binop("mul", cnt, binop("sub", ranges[d][1], ranges[d][0]))
            if isinstance(cnt, Const):
                res = K.binop("mul", acc, K.const(1.0 / max(cnt.value, 1), dt))
            else:
                res = K.binop("div", acc, K.cast(K.maximum(cnt, Const(1)), dt))
        stmts.append(sink.store([nv, cv, *ov], res))
        return K.seq(stmts)

    def split(d: int, interior: tuple[bool, ...]) -> Stmt:
        """Loops over output axes d.. (border / interior / border segments)."""
        lo, hi = _interior(win, d)
        size = out_sp[d]
        parts = []
        for a, b, inside in ((0, lo, False), (lo, hi, True), (max(hi, lo), size, False)):
            if b <= a:
                continue
            flags = (*interior, inside)
            body = window_body(flags) if d == last else split(d + 1, flags)
            vec = d == last and inside and lanes > 1 and (b - a >= lanes or ctx.target.masked_ops)
            parts.append(For(ov[d], Const(a), Const(b), body, LoopKind.VECTOR if vec else LoopKind.SERIAL, 1,
                             lanes if vec else 1))  # fmt: skip
        return K.seq(parts) if parts else K.Seq(())

    body = split(0, ())
    outer = [n, c]
    work = int(__import__("numpy").prod(out_sp)) * max(1, int(__import__("numpy").prod(win.kernel)))
    par = parallel_axis(outer, work, ctx.parallel_threshold)
    for d in reversed(range(2)):
        body = For([nv, cv][d], Const(0), Const(outer[d]), body, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    ctx.stores_once = True
    return body


@kernel_rule("MaxPool", epilogue=True)
def _maxpool(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    if x.dtype is DType.BOOL:
        ctx.fail("MaxPool of bool tensors is not defined")
    win = pool_window(None, x.shape, {**node.attrs})
    return lower_pool(ctx, x, outs[0], win, "max", False)


@kernel_rule("AveragePool", epilogue=True)
def _avgpool(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    win = pool_window(None, x.shape, {**node.attrs})
    return lower_pool(ctx, x, outs[0], win, "avg", bool(node.attrs.get("count_include_pad", 0)))
