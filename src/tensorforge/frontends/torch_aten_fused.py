"""Converters of PyTorch's fused inference fast paths, which ``torch.compile`` captures as one ATen op when a
model runs in eval mode without gradients (``torch.export`` avoids them, ``from_torch`` never sees them).

``_transformer_encoder_layer_fwd`` (``nn.TransformerEncoderLayer``'s fast path, batch first) is written out as
the layer computes it: the fused QKV projection, scaled dot-product attention per head, the output
projection, the feed-forward block (ReLU or exact GELU), two layer norms before (``norm_first``) or after
the residual adds.
"""

from __future__ import annotations

import math

from .torch_export import Ctx, aten


def _linear(cx: Ctx, x, w, b):
    return cx.emit("Add", cx.emit("MatMul", x, cx.emit("Transpose", w, perm=[1, 0])), b)


def _norm(cx: Ctx, x, w, b, eps: float):
    return cx.emit("LayerNormalization", x, w, b, axis=-1, epsilon=float(eps))


@aten("_transformer_encoder_layer_fwd.default")
def _encoder_layer(cx: Ctx, src, embed_dim, num_heads, qkv_w, qkv_b, proj_w, proj_b, use_gelu, norm_first, eps,
                   nw1, nb1, nw2, nb2, fw1, fb1, fw2, fb2, mask=None, mask_type=None):  # fmt: skip
    if mask is not None:
        cx.unsupported("the fused encoder layer with a mask (give the mask in training form or disable the fast path)")
    shape = list(cx.meta(0).shape)
    if len(shape) != 3 or not all(isinstance(d, int) for d in shape):
        cx.unsupported(f"the fused encoder layer on an input of shape {shape} (a static [batch, seq, embed] expected)")
    b, s, e = shape
    h = int(num_heads)
    d = e // h
    dt = cx.dtype(src)

    def attention(x):
        qkv = _linear(cx, x, qkv_w, qkv_b)
        heads = cx.emit("Transpose", cx.emit("Reshape", qkv, cx.ints([b, s, 3, h, d])), perm=[2, 0, 3, 1, 4])
        q, k, v = cx.emit("Split", heads, cx.ints([1, 1, 1]), axis=0, n=3)
        q, k, v = (cx.emit("Squeeze", t, cx.ints([0])) for t in (q, k, v))
        scores = cx.emit("MatMul", cx.emit("Mul", q, cx.const(1.0 / math.sqrt(d), dt)),
                         cx.emit("Transpose", k, perm=[0, 1, 3, 2]))  # fmt: skip
        ctx = cx.emit("MatMul", cx.emit("Softmax", scores, axis=-1), v)
        ctx = cx.emit("Reshape", cx.emit("Transpose", ctx, perm=[0, 2, 1, 3]), cx.ints([b, s, e]))
        return _linear(cx, ctx, proj_w, proj_b)

    def feed_forward(x):
        a = _linear(cx, x, fw1, fb1)
        a = cx.emit("Gelu", a) if use_gelu else cx.emit("Relu", a)
        return _linear(cx, a, fw2, fb2)

    if norm_first:
        x = cx.emit("Add", src, attention(_norm(cx, src, nw1, nb1, eps)))
        return cx.emit("Add", x, feed_forward(_norm(cx, x, nw2, nb2, eps)))
    x = _norm(cx, cx.emit("Add", src, attention(src)), nw1, nb1, eps)
    return _norm(cx, cx.emit("Add", x, feed_forward(x)), nw2, nb2, eps)
