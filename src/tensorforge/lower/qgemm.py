"""Lowering rules of the integer ops MatMulInteger and ConvInteger (``ops/quant.py``).

Two routes:

* the int8 kernels (``lower/int8_gemm.py``): 8-bit operands packed for the target's dot-product
  instructions (AMX tiles, AVX-512 VNNI / AVX-VNNI, AVX2 ``vpmaddwd``, a widening generic path
  elsewhere), zero points folded into compile-time row/column-sum corrections, int32 accumulation and the
  fused epilogue through the output ``Sink``;
* the generic route (shapes the int8 kernels do not take, e.g. a run-time B of a batched product, 3-D
  convolutions, GPU targets): the zero-point-shifted operands as int32 expressions through the ordinary
  GEMM / implicit-im2col convolution, exact in int32.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ops.nn import _conv_window
from . import int8_gemm as G8
from . import kir as K
from .conv import _conv_generic
from .gemm import _fold_rows, lower_matmul
from .qconv import _zp_const, int8_isa, lower_conv_integer
from .rules import LowerCtx, kernel_rule
from .shape_ops import unflatten
from .tensor import TExpr, broadcast_index

I32, I16 = DType.I32, DType.I16


def zero_point_texpr(zp: TExpr | None, operand_shape, per_row: bool) -> TExpr | None:
    """A zero point as a tensor broadcasting against its operand: a vector of A's is per row (``[M]`` read
    as ``[M, 1]``); any other shape broadcasts numpy-style."""
    if zp is None:
        return None
    if per_row and zp.rank == 1 and len(operand_shape) >= 2:
        const = None if zp.const is None else zp.const.reshape(-1, 1)
        return TExpr((zp.shape[0], 1), zp.dtype, lambda idx: zp([idx[0]]), None, const)
    return zp


def shifted(x: TExpr, zp: TExpr | None) -> TExpr:
    """``int32(x) - int32(zp)`` as an expression (constant when both are)."""
    shape = x.shape
    if zp is None:
        const = None if x.const is None else x.const.astype(np.int32)
        return TExpr(shape, I32, lambda idx: K.cast(x(idx), I32), None, const)
    zshape = zp.shape

    def fn(idx):
        z = zp(broadcast_index(idx, zshape, shape)) if zshape else zp([])
        return K.binop("sub", K.cast(x(idx), I32), K.cast(z, I32))

    const = None
    if x.const is not None and zp.const is not None:
        const = (x.const.astype(np.int32) - zp.const.astype(np.int32)).astype(np.int32)
        const = np.broadcast_to(const, shape)
    return TExpr(shape, I32, fn, None, const)


def generic_matmul_integer(ctx: LowerCtx, ins: list[TExpr], sink) -> K.Stmt:
    a, b = ins[0], ins[1]
    azp = zero_point_texpr(ins[2] if len(ins) > 2 else None, a.shape, True)
    bzp = ins[3] if len(ins) > 3 else None
    return lower_matmul(ctx, shifted(a, azp), shifted(b, bzp), sink)


def generic_conv_integer(ctx: LowerCtx, node, ins: list[TExpr], sink) -> K.Stmt:
    x, w = ins[0], ins[1]
    xzp = ins[2] if len(ins) > 2 else None
    wzp = ins[3] if len(ins) > 3 else None
    if wzp is not None and wzp.rank == 1 and wzp.shape[0] > 1:
        zc = None if wzp.const is None else wzp.const.reshape((-1,) + (1,) * (w.rank - 1))
        wzp = TExpr((wzp.shape[0],) + (1,) * (w.rank - 1), wzp.dtype, lambda idx: ins[3]([idx[0]]), None, zc)
    if xzp is not None and xzp.rank == 1:
        xzp = TExpr((), xzp.dtype, lambda idx: ins[2]([K.Const(0)]), None, None if ins[2].const is None
                    else ins[2].const.reshape(()))  # fmt: skip
    win = _conv_window(None, x.shape, w.shape, node.attrs)
    ctx.stores_once = True
    return _conv_generic(ctx, node, shifted(x, xzp), shifted(w, wzp), None, sink, win, int(node.attrs.get("group", 1)))


def lower_matmul_integer(ctx: LowerCtx, node, ins: list[TExpr], sink) -> K.Stmt | None:
    """``A[..., M, K] @ B[K, N]`` with a constant B on the int8 kernels (None: not this route)."""
    a, b = ins[0], ins[1]
    isa = int8_isa(ctx)
    za, zb = _zp_const(ins[2] if len(ins) > 2 else None), _zp_const(ins[3] if len(ins) > 3 else None)
    # a zero point of A known only at run time (DynamicQuantizeLinear's): one scalar, corrected in the epilogue
    za_rt = None
    if za is None and int(np.prod(ins[2].shape)) == 1:
        zt = ins[2]
        za_rt = K.cast(zt([K.Const(0)] * zt.rank), I32)
        za = np.zeros((), np.int64)
    if isa == "generic" or b.const is None or b.rank != 2 or a.rank < 2 or za is None or zb is None:
        return None
    lead = a.shape[:-1]
    Mt, Kd, N = int(np.prod(lead)), a.shape[-1], b.shape[1]
    # zero points as vectors over the folded rows of A / the columns of B (or one element)
    za = za.reshape(-1) if za.size == 1 else np.broadcast_to(
        za.reshape(-1, 1) if za.ndim == 1 else za, (*lead, 1)).reshape(-1)  # fmt: skip
    za = za[:1].reshape(()) if za.size == 1 or np.all(za == za[0]) else za
    zb = np.broadcast_to(zb.reshape(-1), (N,)) if zb.size > 1 else zb.reshape(())
    opa, opb = G8.operands(isa, a.dtype, b.dtype, za, zb, "b")
    plan = G8.plan_int8(ctx, isa, Mt, N, Kd, a_rows=True)
    Kp = -(-Kd // plan.KS) * plan.KS
    name = node.name
    bs = G8.store_value(b.const, opb, zb)
    bp = ctx.const_view(G8.pack_b_panels_const(bs, plan, Kp), f"{name}_Bpacked").buf
    af = _fold_rows(a)
    stmts: list[K.Stmt] = []
    work = 2 * Mt * N * Kd
    parallel = G8.is_parallel(ctx, work)

    def a_stored(m, k):
        z = None
        if opa.dtype is I16 and za_rt is not None:  # AVX2 subtracts the zero point while widening
            z = K.cast(za_rt, I16)
        elif opa.dtype is I16 and np.any(za):
            z = (
                K.const(int(za), I16)
                if za.ndim == 0
                else K.Load(ctx.const_view(za.astype(np.int16), f"{name}_za").buf, m)
            )
        return G8.store_expr(af([m, k]), opa, z)

    v = af.view
    in_place = (v is not None and v.is_contiguous and a.dtype is opa.dtype and opa.shift == 0 and Kd % plan.KS == 0
                and Mt % plan.MR == 0)  # fmt: skip
    a_tiles = isa == "amx" and bool((ctx.options.get("int8_gemm") or {}).get("a_pack", not in_place))
    if a_tiles:  # packed A tiles take the plan of a packed A
        plan = G8.plan_int8(ctx, isa, Mt, N, Kd)
    Mp = -(-Mt // plan.MR) * plan.MR
    if in_place and not a_tiles:
        abuf, aoff = v.buf, K.Const(v.offset)
    elif a_tiles:
        abuf, aoff = ctx.workspace(opa.dtype, Mp * Kp, f"{name}_Apack"), K.Const(0)
        stmts.append(G8.emit_pack_a_tiles(ctx, a_stored, Mt, Kd, Mp, Kp, plan.MR, abuf, parallel))
    else:
        abuf, aoff = ctx.workspace(opa.dtype, Mp * Kp, f"{name}_Apack"), K.Const(0)
        stmts.append(G8.emit_pack_a_rows(ctx, a_stored, Mt, Kd, Mp, Kp, abuf, parallel))
    corr = G8.Corrections()
    if opa.dtype is not I16:
        cs = bs.astype(np.int64).sum(axis=0)  # column sums of the stored B (over the real K)
        zbp = np.broadcast_to(opb.zp, (N,))
        if za_rt is not None:  # z'A = zA + shift at run time: z'A * (K z'B - colsum(B'))
            zrow = K.binop("add", za_rt, K.const(int(opa.zp), I32)) if int(opa.zp) else za_rt
            corr.terms.append((zrow, G8._vec(ctx, Kd * zbp - cs, -(-N // plan.NR) * plan.NR, f"{name}_colcorr")))
        elif opa.zp.ndim == 0:
            colc = -int(opa.zp) * cs + Kd * int(opa.zp) * zbp
            if np.any(colc):
                corr.terms.append((None, G8._vec(ctx, colc, -(-N // plan.NR) * plan.NR, f"{name}_colcorr")))
        else:
            corr.terms.append((G8._vec(ctx, opa.zp, Mp, f"{name}_za"),
                               G8._vec(ctx, Kd * zbp - cs, -(-N // plan.NR) * plan.NR, f"{name}_colcorr")))  # fmt: skip
        if not opb.zero:  # the run-time row sums of the stored A, times -z'B
            rs = ctx.workspace(I32, Mp, f"{name}_rowsums")
            stmts.append(G8.emit_row_sums(ctx, a_stored, Mt, Kd, rs))
            corr.terms.append((rs, G8._vec(ctx, -zbp, -(-N // plan.NR) * plan.NR, f"{name}_zb")))

    def store(m, n, val):
        idx = [*unflatten(m, lead), n] if len(lead) > 1 else [m, n]
        return sink.store(idx, val)

    ctx.stores_once = True
    g = G8.Int8Gemm(Mt, N, Kp, abuf, aoff, bp, K.Const(0), store, corr, a_tiles=a_tiles)
    stmts.append(G8.emit_int8_gemm(ctx, plan, g, parallel))
    return K.seq(stmts)


@kernel_rule("MatMulInteger", epilogue=True, epilogue_reads_tensors=True, epilogue_casts=True)
def _matmul_integer(ctx: LowerCtx, node, ins, outs):
    stmt = lower_matmul_integer(ctx, node, ins, outs[0])
    return stmt if stmt is not None else generic_matmul_integer(ctx, ins, outs[0])


@kernel_rule("ConvInteger", epilogue=True, epilogue_reads_tensors=True, epilogue_casts=True)
def _conv_integer(ctx: LowerCtx, node, ins, outs):
    stmt = lower_conv_integer(ctx, node, ins, outs[0])
    return stmt if stmt is not None else generic_conv_integer(ctx, node, ins, outs[0])
