"""ConvTranspose: the adjoint of a convolution (``Y = conv(., W)ᵀ X``), used by decoders and upsampling.

It is expressed as the input gradient of the forward convolution it transposes — a convolution from the
ConvTranspose output (C_out channels) to its input (C_in channels) with the same weights, strides,
dilations and pads — so it shares that kernel (``ConvGradInput``: a GEMM into columns, then col2im).
``transpose_geometry`` turns ConvTranspose's attributes (output_padding, output_shape, auto_pad) into
that forward convolution's pads and input size.
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import TensorType
from .nn import WINDOW_ATTRS
from .registry import Attr, InferCtx, OpDef, Pattern, register


def transpose_geometry(x_shape, w_shape, attrs) -> tuple[tuple[int, ...], list[int]]:
    """(output spatial size, pads of the equivalent forward convolution [begin..., end...])."""
    sp = len(x_shape) - 2
    kernel = [int(k) for k in (attrs.get("kernel_shape") or w_shape[2:])]
    strides = [int(s) for s in (attrs.get("strides") or [1] * sp)]
    dil = [int(d) for d in (attrs.get("dilations") or [1] * sp)]
    opad = [int(p) for p in (attrs.get("output_padding") or [0] * sp)]
    auto_pad = attrs.get("auto_pad", "NOTSET") or "NOTSET"
    out_shape = attrs.get("output_shape")
    ins = [int(d) for d in x_shape[2:]]
    eff = [(kernel[i] - 1) * dil[i] + 1 for i in range(sp)]
    full = [strides[i] * (ins[i] - 1) + opad[i] + eff[i] for i in range(sp)]  # before any padding
    if out_shape is not None and len(out_shape) > sp:
        out_shape = list(out_shape)[-sp:]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [int(o) for o in out_shape] if out_shape is not None else [ins[i] * strides[i] for i in range(sp)]
        total = [full[i] - out[i] for i in range(sp)]
        if auto_pad == "SAME_UPPER":
            begin = [t // 2 for t in total]
        else:
            begin = [t - t // 2 for t in total]
        end = [total[i] - begin[i] for i in range(sp)]
    else:
        pads = [0] * (2 * sp) if auto_pad == "VALID" else [int(p) for p in (attrs.get("pads") or [0] * (2 * sp))]
        begin, end = pads[:sp], pads[sp:]
        if out_shape is not None:
            out = [int(o) for o in out_shape]
            end = [full[i] - begin[i] - out[i] for i in range(sp)]  # the rest is cropped (or zero-filled)
        else:
            out = [full[i] - begin[i] - end[i] for i in range(sp)]
    return tuple(out), begin + end


def conv_attrs(x_shape, w_shape, attrs) -> dict:
    """Attributes of the forward convolution whose input gradient this ConvTranspose is."""
    out, pads = transpose_geometry(x_shape, w_shape, attrs)
    sp = len(out)
    group = int(attrs.get("group", 1))
    return {"shape": (int(x_shape[0]), int(w_shape[1]) * group, *out), "pads": pads, "group": group,
            "strides": list(attrs.get("strides") or [1] * sp), "dilations": list(attrs.get("dilations") or [1] * sp),
            "auto_pad": "NOTSET"}  # fmt: skip


def _infer(ctx: InferCtx):
    x, w = ctx.shape(0), ctx.shape(1)
    if not ctx.dtype(0).is_float or ctx.dtype(1) != ctx.dtype(0):
        ctx.fail(f"X and W must be float of one dtype, got {ctx.dtype(0)} and {ctx.dtype(1)}")
    if len(x) < 3 or len(w) != len(x):
        ctx.fail(f"X{list(x)} and W{list(w)} must both be (N, C, spatial...) of the same rank")
    if not all(isinstance(d, int) for d in (*x, *w)):
        ctx.fail(f"ConvTranspose needs static shapes, got X{list(x)} W{list(w)}")
    group = int(ctx.attr("group", 1))
    if x[1] != w[0] or x[1] % group:
        ctx.fail(f"W{list(w)} expects {w[0]} input channels (divisible by group={group}), X{list(x)} has {x[1]}")
    sp = len(x) - 2
    for name, n in (("strides", sp), ("dilations", sp), ("output_padding", sp), ("kernel_shape", sp), ("pads", 2 * sp)):
        v = ctx.attr(name)
        if v is not None and len(v) != n:
            ctx.fail(f"{name}={list(v)} must have {n} entries for {sp} spatial dims")
    ks, shape = ctx.attr("kernel_shape"), ctx.attr("output_shape")
    if ks is not None and tuple(ks) != tuple(w[2:]):
        ctx.fail(f"kernel_shape={list(ks)} does not match W{list(w)}")
    if shape is not None and len(shape) not in (sp, sp + 2):
        ctx.fail(f"output_shape={list(shape)} must have {sp} (spatial) or {sp + 2} entries")
    out, pads = transpose_geometry(x, w, ctx.attrs)
    strides = ctx.attr("strides") or [1] * sp
    for i, o in enumerate(out):
        if o <= 0:
            ctx.fail(f"output size {list(out)} is not positive")
        opad = (ctx.attr("output_padding") or [0] * sp)[i]
        if opad >= max(strides[i], (ctx.attr("dilations") or [1] * sp)[i]):
            ctx.fail(f"output_padding {opad} must be smaller than the stride or dilation")
    m = w[1] * group
    if ctx.has(2) and tuple(ctx.shape(2)) != (m,):
        ctx.fail(f"bias B{list(ctx.shape(2))} must have shape [{m}]")
    return [TensorType(ctx.dtype(0), (x[0], m, *out))]


def _reference(attrs, x, w, b=None):
    from .grad import _conv_grad_input_ref

    (y,) = _conv_grad_input_ref(conv_attrs(x.shape, w.shape, attrs), x, w)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * (x.ndim - 2))
    return (y.astype(x.dtype),)


def _flops(node) -> int:
    x, w = node.inputs[0].shape, node.inputs[1].shape
    return 2 * int(np.prod(x)) * int(np.prod(w[1:])) if all(isinstance(d, int) for d in (*x, *w)) else 0


_ATTRS = {**WINDOW_ATTRS, "group": Attr(1, min=1), "output_padding": Attr(kind="ints", min=0),
          "output_shape": Attr(kind="ints", min=1)}  # fmt: skip
register(OpDef("ConvTranspose", Pattern.OPAQUE, _infer, _reference, _ATTRS, (2, 3),
               flops=_flops))  # fmt: skip
