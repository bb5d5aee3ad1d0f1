"""Parameter-update ops: the optimizers' arithmetic, one elementwise body each.

Every update takes ``ok`` (a bool scalar: "this step's loss is finite") and yields the old value when it is
false. A training step whose loss is not finite therefore leaves parameters and optimizer state exactly as
they were — decided in native code, with no shadow copy. Values that change between steps (learning rate,
bias corrections) are scalar inputs; fixed hyper-parameters are attributes. The formulas follow PyTorch's
``torch.optim`` (SGD with momentum/nesterov/weight decay, Adam with L2 decay, AdamW with decoupled decay).
"""

from __future__ import annotations

from .elementwise import ANY, elementwise


def _decayed(h, g, w, wd: float):
    """g + wd * w (L2 weight decay folded into the gradient)."""
    return h.add(g, h.mul(h.const(wd, w), w)) if wd else g


@elementwise("SGDUpdate", 4, types=ANY, same_dtype=False, attrs={"weight_decay": 0.0}, flops=3)
def sgd_update(h, a, w, g, lr, ok):
    """w - lr * (g + weight_decay * w)"""
    return h.select(ok, h.sub(w, h.mul(lr, _decayed(h, g, w, a["weight_decay"]))), w)


@elementwise("MomentumBuffer", 4, types=ANY, same_dtype=False, attrs={"momentum": 0.9, "weight_decay": 0.0},
             flops=4)  # fmt: skip
def momentum_buffer(h, a, v, g, w, ok):
    """momentum * v + (g + weight_decay * w)"""
    return h.select(ok, h.add(h.mul(h.const(a["momentum"], v), v), _decayed(h, g, w, a["weight_decay"])), v)


@elementwise("MomentumUpdate", 5, types=ANY, same_dtype=False,
             attrs={"momentum": 0.9, "weight_decay": 0.0, "nesterov": 0}, flops=5)  # fmt: skip
def momentum_update(h, a, w, v, g, lr, ok):
    """w - lr * v, or with nesterov w - lr * ((g + weight_decay * w) + momentum * v); v is the new buffer"""
    step = v
    if a["nesterov"]:
        step = h.add(_decayed(h, g, w, a["weight_decay"]), h.mul(h.const(a["momentum"], v), v))
    return h.select(ok, h.sub(w, h.mul(lr, step)), w)


@elementwise("AdamMoment", 4, types=ANY, same_dtype=False, attrs={"beta": 0.9, "weight_decay": 0.0, "square": 0},
             flops=5)  # fmt: skip
def adam_moment(h, a, m, g, w, ok):
    """beta * m + (1 - beta) * G, with G = g + weight_decay * w, squared for the second moment"""
    gd = _decayed(h, g, w, a["weight_decay"])
    if a["square"]:
        gd = h.mul(gd, gd)
    beta = a["beta"]
    return h.select(ok, h.add(h.mul(h.const(beta, m), m), h.mul(h.const(1.0 - beta, m), gd)), m)


@elementwise("AdamUpdate", 7, types=ANY, same_dtype=False, attrs={"eps": 1e-8, "weight_decay": 0.0}, flops=8)
def adam_update(h, a, w, m, v, lr, bc1, bc2, ok):
    """w * (1 - lr * weight_decay) - lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps); m, v are the new moments"""
    wd = a["weight_decay"]
    base = h.mul(w, h.sub(h.const(1, w), h.mul(lr, h.const(wd, w)))) if wd else w
    denom = h.add(h.div(h.sqrt(v), h.sqrt(bc2)), h.const(a["eps"], v))
    return h.select(ok, h.sub(base, h.mul(h.div(lr, bc1), h.div(m, denom))), w)


UPDATE_OPS = ("SGDUpdate", "MomentumBuffer", "MomentumUpdate", "AdamMoment", "AdamUpdate")
