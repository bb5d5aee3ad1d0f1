"""TfIdfVectorizer over integer token ids: counts of the pool's n-grams (with skips) per row, weighted.

An n-gram of the pool is counted at every start position and gap: tokens ``x[p], x[p+s], ...,
x[p+(n-1)s]`` for ``s = 1 .. max_skip_count + 1`` (unigrams once, at s = 1), for lengths in
``[min_gram_length, max_gram_length]``. ``ngram_indexes`` maps each pool n-gram to its output column.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import TensorType
from .registry import InferCtx, OpDef, Pattern, register


def pool_ngrams(attrs) -> list[tuple[tuple[int, ...], int]]:
    """(tokens, output column) for every pool n-gram whose length is in the counted range."""
    pool = [int(v) for v in attrs.get("pool_int64s") or []]
    counts = [int(v) for v in attrs["ngram_counts"]]
    indexes = [int(v) for v in attrs["ngram_indexes"]]
    lo, hi = int(attrs["min_gram_length"]), int(attrs["max_gram_length"])
    out, k = [], 0
    for n, start in enumerate(counts, start=1):
        end = counts[n] if n < len(counts) else len(pool)
        for i in range(start, start + (end - start) // n * n, n):
            if lo <= n <= hi:
                out.append((tuple(pool[i : i + n]), indexes[k]))
            k += 1
    return out


def skips_for(n: int, attrs) -> range:
    return range(1, 2) if n == 1 else range(1, int(attrs["max_skip_count"]) + 2)


def _infer(ctx: InferCtx):
    s = ctx.shape(0)
    if ctx.attr("pool_strings"):
        ctx.unsupported("string pools (only integer token ids are supported)")
    if ctx.dtype(0) not in (DType.I32, DType.I64) or len(s) not in (1, 2):
        ctx.fail(f"input must be [C] or [B, C] int32/int64 token ids, got {ctx.type(0)}")
    if ctx.attr("mode") not in ("TF", "IDF", "TFIDF"):
        ctx.fail(f"mode={ctx.attr('mode')!r} must be TF, IDF or TFIDF")
    width = max(int(v) for v in ctx.attr("ngram_indexes")) + 1
    return [TensorType(DType.F32, (width,) if len(s) == 1 else (s[0], width))]


def weigh(counts: np.ndarray, attrs) -> np.ndarray:
    w = attrs.get("weights")
    mode = attrs["mode"]
    if mode == "TF":
        return counts
    if mode == "IDF":
        return np.where(counts > 0, np.asarray(w, np.float32) if w else 1.0, 0.0)
    return counts * np.asarray(w, np.float32) if w else counts


def _reference(attrs, x):
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    width = max(int(v) for v in attrs["ngram_indexes"]) + 1
    counts = np.zeros((rows.shape[0], width), np.float64)
    for r, row in enumerate(rows):
        for tokens, col in pool_ngrams(attrs):
            n = len(tokens)
            for s in skips_for(n, attrs):
                for p in range(len(row) - (n - 1) * s):
                    if all(row[p + k * s] == tokens[k] for k in range(n)):
                        counts[r, col] += 1
    y = weigh(counts, attrs).astype(np.float32)
    return (y.reshape(-1) if x.ndim == 1 else y,)


register(OpDef("TfIdfVectorizer", Pattern.OPAQUE, _infer, _reference, {"max_skip_count": 0}, (1, 1)))
