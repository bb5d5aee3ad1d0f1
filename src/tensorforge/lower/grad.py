"""Lowering of the backward ops of ``ops/grad.py``.

Both adjoints of convolution are GEMMs over the same implicit im2col matrix as the forward pass
(``lower/conv.py``), built from the shared ``emit_gemm`` / ``emit_pack_b``:

* ``ConvGradWeight``: ``dW[g] (Mg x Cg*K) += dY[g] (Mg x P) @ col[g]ᵀ (P x Cg*K)``, the packing step reading
  the input through the window (with padding) as it goes — ``col`` is never stored;
* ``ConvGradInput``: ``col[g] = W[g]ᵀ (Cg*K x Mg) @ dY[g] (Mg x P)`` into scratch, then ``col2im`` gathers
  every input position's contributions (no scatter, so it parallelizes over images and channels).

Images are processed in chunks whose packed operands fit a scratch budget; within a chunk they are folded
into the GEMM's K (weights) or N (input) dimension. Pooling adjoints scatter-add per (image, channel)
plane, one plane per thread. ``SliceGrad`` is an index expression (zero outside the slice).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ops.grad import slice_grad_params
from ..ops.nn import Window, _conv_window, pool_window
from . import kir as K
from .gemm import GemmSpec, emit_gemm, emit_pack, emit_pack_b, plan_gemm
from .kir import Assign, Const, Decl, Expr, For, If, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, Sink, index_rule, kernel_rule
from .schedule import loop_vars, parallel_axis, pointwise_nest
from .shape_ops import flat_index, unflatten
from .tensor import TExpr, View

SCRATCH_ELEMS = 1 << 20  # packed-operand budget per chunk of images (elements)


def _images_per_chunk(n_img: int, per_image: int) -> int:
    """The largest divisor of the batch whose packed operands fit the scratch budget."""
    best = 1
    for d in range(1, n_img + 1):
        if n_img % d == 0 and d * per_image <= SCRATCH_ELEMS:
            best = d
    return best


def _no_epilogue(ctx: LowerCtx, sink: Sink) -> View:
    if sink.epilogue is not None:
        ctx.fail("a fused epilogue cannot be applied to an accumulated gradient")
    return sink.view


def _zero(ctx: LowerCtx, view: View) -> Stmt:
    return pointwise_nest(view.shape, lambda idx: view.store(idx, K.const(0, view.dtype)), ctx.lanes(view.dtype),
                          ctx.parallel_threshold)  # fmt: skip


def _im2col_value(x: TExpr, win: Window, img: Expr, c: Expr, kk: Sequence[Expr], osp: Sequence[Expr]) -> Expr:
    """The input element that kernel offset ``kk`` meets at output position ``osp`` (0 in the padding)."""
    pos, valid = [], None
    for d in range(len(win.kernel)):
        p = binop("add", binop("sub", binop("mul", osp[d], win.strides[d]), win.pads_begin[d]),
                  binop("mul", kk[d], win.dilations[d]))  # fmt: skip
        if win.pads_begin[d] or win.pads_end[d] or (win.out_size[d] - 1) * win.strides[d] + (
                win.kernel[d] - 1) * win.dilations[d] >= win.in_size[d]:  # fmt: skip
            ok = K.binop("and", K.cmp("ge", p, Const(0)), K.cmp("lt", p, Const(win.in_size[d])))
            valid = ok if valid is None else K.binop("and", valid, ok)
            p = K.maximum(Const(0), K.minimum(p, Const(win.in_size[d] - 1)))
        pos.append(p)
    v = x([img, c, *pos])
    return v if valid is None else K.select(valid, v, K.const(0, v.dtype))


@kernel_rule("ConvGradWeight")
def _conv_grad_weight(ctx: LowerCtx, node, ins: list[TExpr], outs: list[Sink]) -> Stmt:
    dy, x = ins
    out = _no_epilogue(ctx, outs[0])
    w_shape = tuple(int(d) for d in node.attrs["shape"])
    win = _conv_window(None, x.shape, w_shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    n_img, cg, mg = x.shape[0], x.shape[1] // group, w_shape[0] // group
    kd = cg * int(np.prod(win.kernel))  # GEMM N: (channel, kernel offset)
    P = int(np.prod(win.out_size))
    cdt = outs[0].dtype.compute
    plan = plan_gemm(ctx, cdt, mg, kd, P)
    np_n, mt_n = -(-kd // plan.NR), -(-mg // plan.MR)
    ib = _images_per_chunk(n_img, group * (np_n * plan.NR + mt_n * plan.MR) * P)
    kdim = ib * P  # GEMM K: (image in chunk, output position)
    bp = ctx.workspace(cdt, group * np_n * plan.NR * kdim, f"{node.name}_colT")
    ap = ctx.workspace(cdt, group * mt_n * plan.MR * kdim, f"{node.name}_dYpack")
    chunk = Var("chunk")
    parallel = 2 * group * mg * kd * kdim >= ctx.parallel_threshold * 8

    def split(k: Expr) -> tuple[Expr, Expr]:
        img = binop("add", binop("mul", chunk, ib), binop("floordiv", k, P)) if ib > 1 else chunk
        return img, (binop("mod", k, P) if ib > 1 else k)

    def a_src(g: Expr, k: Expr, m: Expr) -> Expr:  # A[m, k] = dY[image, g*mg + m, position]
        img, p = split(k)
        return dy([img, binop("add", binop("mul", g, mg), m), *unflatten(p, win.out_size)])

    def src(g: Expr, k: Expr, n: Expr) -> Expr:
        img, p = split(k)
        ck = unflatten(n, (cg, *win.kernel))
        return _im2col_value(x, win, img, binop("add", binop("mul", g, cg), ck[0]), ck[1:], unflatten(p, win.out_size))

    out2 = out.reshape((w_shape[0], kd))

    def store(g: Expr, m: Expr, n: Expr, v: Expr) -> Stmt:
        idx = [binop("add", binop("mul", g, mg), m), n]
        return out2.store(idx, K.cast(binop("add", K.cast(out2.load(idx), cdt), v), out2.dtype))

    spec = GemmSpec(mg, kd, kdim, group, cdt, None, ap, mt_n * kdim * plan.MR, bp, np_n * kdim * plan.NR, store)
    body = K.seq(
        emit_pack(ctx, a_src, group, mg, kdim, plan.MR, ap, parallel, vector_over="k"),
        emit_pack_b(ctx, src, group, kdim, kd, plan.NR, bp, parallel),
        emit_gemm(ctx, plan, spec, parallel),
    )
    return K.seq(_zero(ctx, out), For(chunk, Const(0), Const(n_img // ib), body))


@kernel_rule("ConvGradInput")
def _conv_grad_input(ctx: LowerCtx, node, ins: list[TExpr], outs: list[Sink]) -> Stmt:
    dy, w = ins
    out = _no_epilogue(ctx, outs[0])
    x_shape = tuple(int(d) for d in node.attrs["shape"])
    win = _conv_window(None, x_shape, w.shape, node.attrs)
    group = int(node.attrs.get("group", 1))
    n_img, c_in = x_shape[:2]
    cg, mg = c_in // group, w.shape[0] // group
    ksize = int(np.prod(win.kernel))
    kd = cg * ksize  # GEMM M: (channel, kernel offset)
    P = int(np.prod(win.out_size))
    cdt = outs[0].dtype.compute
    plan = plan_gemm(ctx, cdt, kd, P, mg)
    per_image = group * (kd * P + -(-P // plan.NR) * plan.NR * mg)
    ib = _images_per_chunk(n_img, per_image)
    ncols = ib * P  # GEMM N: (image in chunk, output position)
    np_n, mt_n = -(-ncols // plan.NR), -(-kd // plan.MR)
    bp = ctx.workspace(cdt, group * np_n * plan.NR * mg, f"{node.name}_dYpack")
    ap = ctx.workspace(cdt, group * mt_n * plan.MR * mg, f"{node.name}_Wpack")
    col = ctx.workspace(cdt, group * kd * ncols, f"{node.name}_col")
    colv = View.of(col, (group, kd, ncols))
    chunk = Var("chunk")
    parallel = 2 * group * kd * ncols * mg >= ctx.parallel_threshold * 8
    w2 = w.view.reshape((w.shape[0], kd)) if w.view is not None else None

    def a_src(g: Expr, k: Expr, m: Expr) -> Expr:  # A[m, k] = W[g*mg + k, m] (m: channel x kernel offset)
        row = binop("add", binop("mul", g, mg), k)
        return w2.load([row, m]) if w2 is not None else w([row, *unflatten(m, (cg, *win.kernel))])

    def src(g: Expr, k: Expr, n: Expr) -> Expr:  # B[k, n] = dY[image, g*mg + k, position]
        img = binop("add", binop("mul", chunk, ib), binop("floordiv", n, P)) if ib > 1 else chunk
        p = binop("mod", n, P) if ib > 1 else n
        return dy([img, binop("add", binop("mul", g, mg), k), *unflatten(p, win.out_size)])

    def store(g: Expr, m: Expr, n: Expr, v: Expr) -> Stmt:
        return colv.store([g, m, n], v)

    spec = GemmSpec(kd, ncols, mg, group, cdt, None, ap, mt_n * mg * plan.MR, bp, np_n * mg * plan.NR, store)
    pack_w = emit_pack(ctx, a_src, group, kd, mg, plan.MR, ap, parallel)  # once: the weights do not change
    gemm = K.seq(emit_pack_b(ctx, src, group, mg, ncols, plan.NR, bp, parallel), emit_gemm(ctx, plan, spec, parallel))
    col2im = _col2im(ctx, out, colv, win, chunk, ib, cg, ksize)
    return K.seq(pack_w, For(chunk, Const(0), Const(n_img // ib), K.seq(gemm, col2im)))


def _col2im(ctx: LowerCtx, out: View, col: View, win: Window, chunk: Var, ib: int, cg: int, ksize: int) -> Stmt:
    """dX[img, c, i...] = sum over kernel offsets k whose output position o = (i + pad - k*dil) / stride is
    whole and in range of col[group, (c % cg, k), (img % ib, o)]."""
    sp = len(win.kernel)
    il, c = Var("il"), Var("c")
    iv = loop_vars(sp)
    kv = [Var(f"k{d}") for d in range(sp)]
    acc = Var("acc", col.dtype)
    valid: Expr | None = None
    opos = []
    for d in range(sp):
        t = binop("sub", binop("add", iv[d], win.pads_begin[d]), binop("mul", kv[d], win.dilations[d]))
        s = win.strides[d]
        q = binop("floordiv", t, s) if s > 1 else t
        ok = K.binop("and", K.cmp("ge", t, Const(0)), K.cmp("lt", q, Const(win.out_size[d])))
        if s > 1:
            ok = K.binop("and", ok, K.cmp("eq", binop("mod", t, s), Const(0)))
        valid = ok if valid is None else K.binop("and", valid, ok)
        opos.append(K.maximum(Const(0), K.minimum(q, Const(win.out_size[d] - 1))))
    P = int(np.prod(win.out_size))
    g = binop("floordiv", c, cg) if col.shape[0] > 1 else Const(0)
    krow = binop("add", binop("mul", binop("mod", c, cg), ksize), flat_index(kv, win.kernel))
    ncol = binop("add", binop("mul", il, P), flat_index(opos, win.out_size))
    v = col.load([g, krow, ncol])
    upd: Stmt = Assign(acc, binop("add", acc, K.select(valid, v, K.const(0, v.dtype))))
    for d in reversed(range(sp)):
        upd = For(kv[d], Const(0), Const(win.kernel[d]), upd)
    img = binop("add", binop("mul", chunk, ib), il)
    body: Stmt = K.seq(Decl(acc, K.const(0, col.dtype)), upd, out.store([img, c, *iv], K.cast(acc, out.dtype)))
    loops = [(il, ib), (c, out.shape[1]), *zip(iv, win.in_size)]
    par = parallel_axis([n for _, n in loops[:2]], ksize * int(np.prod(win.in_size)), ctx.parallel_threshold)
    for d in reversed(range(len(loops))):
        var, n = loops[d]
        body = For(var, Const(0), Const(n), body, LoopKind.PARALLEL if d == par else LoopKind.SERIAL)
    return body


# -- pooling ----------------------------------------------------------------------------------------
def _krange(o: Expr, s: int, p: int, d: int, size: int, k: int) -> tuple[Expr, Expr]:
    """[lo, hi) of the kernel offsets whose input position o*s - p + kk*d lies in [0, size)."""
    a = binop("sub", Const(p), binop("mul", o, s))
    lo = K.maximum(Const(0), binop("floordiv", binop("add", K.maximum(a, Const(0)), d - 1), d))
    hi = K.minimum(Const(k), binop("floordiv", binop("add", K.maximum(binop("add", Const(size - 1), a), Const(-1)), d),
                                   d))  # fmt: skip
    return lo, hi


def _pool_grad(ctx: LowerCtx, node, dy: TExpr, x: TExpr | None, sink: Sink, win: Window, kind: str) -> Stmt:
    out = _no_epilogue(ctx, sink)
    sp = len(win.kernel)
    n, c = out.shape[:2]
    plane = int(np.prod(win.in_size))
    flat_out = out.reshape((n, c, plane))
    nv, cv = Var("n"), Var("c")
    ov = loop_vars(sp)
    kv = [Var(f"k{d}") for d in range(sp)]
    ranges = [_krange(ov[d], win.strides[d], win.pads_begin[d], win.dilations[d], win.in_size[d], win.kernel[d])
              for d in range(sp)]  # fmt: skip
    pos = [binop("add", binop("sub", binop("mul", ov[d], win.strides[d]), win.pads_begin[d]),
                 binop("mul", kv[d], win.dilations[d])) for d in range(sp)]  # fmt: skip
    fpos = flat_index(pos, win.in_size)
    dt = out.dtype

    def add_at(index: Expr, value: Expr) -> Stmt:
        idx = [nv, cv, index]
        return flat_out.store(idx, binop("add", flat_out.load(idx), K.cast(value, dt)))

    g = dy([nv, cv, *ov])
    if kind == "max":
        best, arg, v = Var("best", x.dtype), Var("arg"), Var("v", x.dtype)
        take = K.cmp("gt", v, best)
        scan: Stmt = K.seq(Decl(v, x([nv, cv, *pos])), Assign(arg, K.select(take, fpos, arg)),
                           Assign(best, K.select(take, v, best)))  # fmt: skip
        for d in reversed(range(sp)):
            scan = For(kv[d], ranges[d][0], ranges[d][1], scan)
        window = K.seq(Decl(best, K.const(float("-inf"), x.dtype)), Decl(arg, Const(-1)), scan,
                       If(K.cmp("ge", arg, Const(0)), add_at(arg, g)))  # fmt: skip
    else:
        cnt: Expr = Const(1)
        for d in range(sp):
            if node.attrs.get("count_include_pad", 0):
                lo, hi = _krange(ov[d], win.strides[d], 0, win.dilations[d],
                                 win.in_size[d] + win.pads_begin[d] + win.pads_end[d], win.kernel[d])  # fmt: skip
            else:
                lo, hi = ranges[d]
            cnt = binop("mul", cnt, binop("sub", hi, lo))
        share = Var("share", dy.dtype)
        spread: Stmt = add_at(fpos, share)
        for d in reversed(range(sp)):
            spread = For(kv[d], ranges[d][0], ranges[d][1], spread)
        window = K.seq(Decl(share, binop("div", g, K.cast(K.maximum(cnt, Const(1)), dy.dtype))), spread)
    for d in reversed(range(sp)):
        window = For(ov[d], Const(0), Const(win.out_size[d]), window)
    p = Var("p")
    zero = For(p, Const(0), Const(plane), flat_out.store([nv, cv, p], K.const(0, dt)), LoopKind.VECTOR, 1,
               ctx.lanes(dt))  # fmt: skip
    body: Stmt = K.seq(zero, window)
    work = int(np.prod(win.out_size)) * int(np.prod(win.kernel)) + plane
    par = parallel_axis([n, c], work, ctx.parallel_threshold)
    body = For(cv, Const(0), Const(c), body, LoopKind.PARALLEL if par == 1 else LoopKind.SERIAL)
    return For(nv, Const(0), Const(n), body, LoopKind.PARALLEL if par == 0 else LoopKind.SERIAL)


@kernel_rule("MaxPoolGrad")
def _maxpool_grad(ctx: LowerCtx, node, ins, outs):
    dy, x = ins
    return _pool_grad(ctx, node, dy, x, outs[0], pool_window(None, x.shape, node.attrs), "max")


@kernel_rule("AveragePoolGrad")
def _avgpool_grad(ctx: LowerCtx, node, ins, outs):
    shape = tuple(int(d) for d in node.attrs["shape"])
    return _pool_grad(ctx, node, ins[0], None, outs[0], pool_window(None, shape, node.attrs), "avg")


# -- slicing ----------------------------------------------------------------------------------------
@index_rule("SliceGrad")
def _slice_grad(ctx: LowerCtx, node, ins):
    dy = ins[0]
    params = slice_grad_params(node.attrs)
    shape = tuple(node.outputs[0].shape)

    def fn(idx):
        src, valid = [], None
        for i, (start, step, n), size in zip(idx, params, shape):
            if (start, step, n) == (0, 1, size):
                src.append(i)
                continue
            d = binop("sub", i, start) if step > 0 else binop("sub", Const(start), i)
            s = abs(step)
            q = binop("floordiv", d, s) if s > 1 else d
            ok = K.binop("and", K.cmp("ge", d, Const(0)), K.cmp("lt", q, Const(n)))
            if s > 1:
                ok = K.binop("and", ok, K.cmp("eq", binop("mod", d, s), Const(0)))
            valid = ok if valid is None else K.binop("and", valid, ok)
            src.append(K.maximum(Const(0), K.minimum(q, Const(max(n - 1, 0)))))
        v = dy(src)
        return v if valid is None else K.select(valid, v, K.const(0, v.dtype))

    return [TExpr.compute(shape, dy.dtype, fn)]
