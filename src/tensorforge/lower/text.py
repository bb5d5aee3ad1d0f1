"""Lowering of TfIdfVectorizer: per row (rows in parallel), for every pool n-gram (known at compile time)
and every gap, a loop over start positions that counts exact matches into the row's output, then the
TF / IDF / TF-IDF weighting in place. The code is unrolled over the pool: fine for the pools of exported
text models' vocab lookups, large pools would want a hashed lookup instead."""

from __future__ import annotations

import numpy as np

from ..ops.text import pool_ngrams, skips_for
from . import kir as K
from .kir import Const, For, If, LoopKind, Stmt, Var, binop
from .rules import LowerCtx, kernel_rule
from .schedule import parallel_axis


@kernel_rule("TfIdfVectorizer")
def _tfidf(ctx: LowerCtx, node, ins, outs):
    x = ins[0]
    rows = 1 if x.rank == 1 else x.shape[0]
    c = x.shape[-1]
    width = max(int(v) for v in node.attrs["ngram_indexes"]) + 1
    out = outs[0].view.reshape((rows, width))
    r, j, p = Var("r"), Var("j"), Var("p")
    f32 = out.dtype

    def tok(pos):
        return x([pos] if x.rank == 1 else [r, pos])

    body: list[Stmt] = [For(j, Const(0), Const(width), out.store([r, j], K.const(0, f32)))]
    for tokens, col in pool_ngrams(node.attrs):
        n = len(tokens)
        for s in skips_for(n, node.attrs):
            if c - (n - 1) * s <= 0:
                continue
            match = None
            for k, t in enumerate(tokens):
                eq = K.cmp("eq", tok(binop("add", p, k * s)), K.const(t, x.dtype))
                match = eq if match is None else K.binop("and", match, eq)
            bump = out.store([r, Const(col)], K.binop("add", out.load([r, Const(col)]), K.const(1, f32)))
            body.append(For(p, Const(0), Const(c - (n - 1) * s), If(match, bump)))
    w = node.attrs.get("weights")
    mode = node.attrs["mode"]
    if mode != "TF" and (w or mode == "IDF"):
        wv = ctx.const_view(np.asarray(w, np.float32), f"{node.name}_w") if w else None
        cnt = out.load([r, j])
        weight = wv.load([j]) if wv is not None else K.const(1, f32)
        if mode == "IDF":
            val = K.select(K.cmp("gt", cnt, K.const(0, f32)), weight, K.const(0, f32))
        else:
            val = K.binop("mul", cnt, weight)
        body.append(For(j, Const(0), Const(width), out.store([r, j], val)))
    par = parallel_axis([rows], c * max(1, len(pool_ngrams(node.attrs))), ctx.parallel_threshold)
    return For(r, Const(0), Const(rows), K.seq(body), LoopKind.PARALLEL if par == 0 else LoopKind.SERIAL)
