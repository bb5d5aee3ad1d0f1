"""Counter-based random numbers: ``PhiloxUniform`` (Philox4x32-10, Salmon et al., SC 2011).

    u = PhiloxUniform(seed, offset) {shape=[64, 128]}     # float32 in [0, 1), a pure function of its inputs

Element ``i`` (row-major linear index) is word 0 of Philox4x32-10 applied to the counter
``(lo32(i), hi32(i), lo32(offset), hi32(offset))`` under the key ``(lo32(seed), hi32(seed))``; its top 24 bits
scaled by 2**-24 give the float. Every element is computed on its own from its index, so the lowering is an
index expression like any elementwise op (vectorized, parallel, fused into its consumers), and the numpy
reference below gives the same bits. The same (seed, offset) gives the same tensor; a graph that draws
several tensors gives each its own offset. The seed is a run-time input (the torch.compile backend draws it
from PyTorch's generator per call), so nothing here folds away.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import TensorType
from .registry import Attr, InferCtx, OpDef, Pattern, register

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # key schedule (golden ratio, sqrt(3) - 1)
ROUNDS = 10
MASK32 = 0xFFFFFFFF


def philox_round(c, k, mulhilo, xor):
    """One Philox4x32 round on the words ``c`` under the key ``k``, over two primitives that the numpy
    reference and the lowering each provide: ``mulhilo(M, x) -> (hi, lo)`` and ``xor(a, b)``."""
    hi0, lo0 = mulhilo(PHILOX_M0, c[0])
    hi1, lo1 = mulhilo(PHILOX_M1, c[2])
    return [xor(xor(hi1, c[1]), k[0]), lo1, xor(xor(hi0, c[3]), k[1]), lo0]


def philox4x32(c, k, mulhilo, xor, bump):
    """Philox4x32-10: ten rounds, the key bumped by the Weyl constants between them (``bump(k, w)`` is a
    wrapping 32-bit add)."""
    for r in range(ROUNDS):
        if r:
            k = [bump(k[0], PHILOX_W0), bump(k[1], PHILOX_W1)]
        c = philox_round(c, k, mulhilo, xor)
    return c


def _np_mulhilo(m, x):
    p = np.uint64(m) * x.astype(np.uint64)
    return (p >> np.uint64(32)).astype(np.uint32), (p & np.uint64(MASK32)).astype(np.uint32)


def philox_bits(seed: int, offset: int, n: int) -> np.ndarray:
    """Word 0 of Philox4x32-10 for the linear indices 0..n-1 (uint32), as the compiled code computes it."""
    i = np.arange(n, dtype=np.uint64)
    seed, offset = int(seed) & ((1 << 64) - 1), int(offset) & ((1 << 64) - 1)
    full = np.ones(n, np.uint32)
    c = [(i & np.uint64(MASK32)).astype(np.uint32), (i >> np.uint64(32)).astype(np.uint32),
         full * np.uint32(offset & MASK32), full * np.uint32(offset >> 32)]  # fmt: skip
    k = [np.uint32(seed & MASK32), np.uint32(seed >> 32)]
    with np.errstate(over="ignore"):
        out = philox4x32(c, k, _np_mulhilo, np.bitwise_xor, lambda a, w: np.uint32((int(a) + w) & MASK32))
    return out[0]


def bits_to_uniform(bits: np.ndarray) -> np.ndarray:
    """The top 24 bits as a float32 in [0, 1) (exact: every value is a multiple of 2**-24)."""
    return (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _scalar(ctx: InferCtx, i: int, what: str) -> None:
    t = ctx.type(i)
    if t.dtype not in (DType.I64, DType.U64) or any(d != 1 for d in t.shape):
        ctx.fail(f"{what} (input {i}) must be one int64 element, got {t.dtype} {list(t.shape)}")


def _infer(ctx: InferCtx):
    _scalar(ctx, 0, "the seed")
    _scalar(ctx, 1, "the offset")
    return [TensorType(DType.F32, tuple(int(d) for d in ctx.attr("shape")))]


def _ref(attrs, seed, offset):
    shape = tuple(int(d) for d in attrs["shape"])
    n = int(np.prod(shape, dtype=np.int64))
    seed = int(np.asarray(seed).reshape(-1)[0].astype(np.uint64))
    offset = int(np.asarray(offset).reshape(-1)[0].astype(np.uint64))
    return (bits_to_uniform(philox_bits(seed, offset, n)).reshape(shape),)


register(OpDef("PhiloxUniform", Pattern.INJECTIVE, _infer, _ref, {"shape": Attr(kind="ints", min=0)}, (2, 2),
               flops=lambda node: 60 * int(np.prod([int(d) for d in node.outputs[0].type.shape])),
               doc="float32 uniforms in [0, 1): Philox4x32-10 of (index, offset) keyed by the seed"))  # fmt: skip
