"""Optimizers (``tfg.optim``): update rules written as graph code and compiled into the training step.

An optimizer here is a description — hyper-parameters, and how to build its update nodes for one
parameter. Its state (momentum buffers, Adam's moments and step count) is declared with ``ctx.state`` and
lives in native buffers owned by the training step, updated in place by the same native call that
computes the gradients. The arithmetic is in the update ops (``ops/update.py``), which leave everything
unchanged when the step's loss is not finite. The learning rate is read at every step, so it can be
changed (scheduled) between steps without recompiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import TensorforgeError
from ..ir.graph import Value

if TYPE_CHECKING:
    from ..autodiff.train_graph import UpdateContext


class Optimizer:
    """Base class: ``begin`` builds values shared by all parameters, ``update`` one parameter's step."""

    lr: float

    def begin(self, ctx: UpdateContext) -> dict[str, Value]:
        return {}

    def update(self, ctx: UpdateContext, w: Value, g: Value, shared: dict[str, Value]) -> Value:
        raise NotImplementedError

    def _check(self, **values: float) -> None:
        for name, v in values.items():
            if not v >= 0:
                raise TensorforgeError(f"{type(self).__name__}: {name} must be >= 0, got {v}")


@dataclass
class SGD(Optimizer):
    """torch.optim.SGD: ``v = momentum * v + g + weight_decay * w``; ``w -= lr * v`` (or the Nesterov step)."""

    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        self._check(lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        if self.nesterov and not self.momentum:
            raise TensorforgeError("SGD: nesterov needs a momentum > 0")

    def update(self, ctx: UpdateContext, w: Value, g: Value, shared: dict[str, Value]) -> Value:
        b = ctx.b
        if not self.momentum:
            return b.op("SGDUpdate", [w, g, ctx.lr, ctx.ok], out=f"{w.name}_new", weight_decay=self.weight_decay)
        v = ctx.state(w, "momentum")
        v2 = b.op("MomentumBuffer", [v, g, w, ctx.ok], out=f"{v.name}_new", momentum=self.momentum,
                  weight_decay=self.weight_decay)  # fmt: skip
        ctx.assign(v, v2)
        return b.op("MomentumUpdate", [w, v2, g, ctx.lr, ctx.ok], out=f"{w.name}_new", momentum=self.momentum,
                    weight_decay=self.weight_decay, nesterov=int(self.nesterov))  # fmt: skip


@dataclass
class Adam(Optimizer):
    """torch.optim.Adam (L2 ``weight_decay`` added to the gradient), with bias correction."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled = False  # AdamW: decay the weights directly instead

    def __post_init__(self):
        self._check(lr=self.lr, eps=self.eps, weight_decay=self.weight_decay)
        if not all(0 <= beta < 1 for beta in self.betas):
            raise TensorforgeError(f"{type(self).__name__}: betas must be in [0, 1), got {self.betas}")

    def begin(self, ctx: UpdateContext) -> dict[str, Value]:
        b = ctx.b
        t = ctx.scalar_state("adam_step", 0.0)
        one = b.scalar(1.0, t)
        t2 = b.op("Where", [ctx.ok, b.add(t, one), t], out="adam_step_new")
        ctx.assign(t, t2)
        bc = [b.sub(one, b.op("Pow", [b.scalar(beta, t), t2])) for beta in self.betas]
        return {"bc1": bc[0], "bc2": bc[1]}

    def update(self, ctx: UpdateContext, w: Value, g: Value, shared: dict[str, Value]) -> Value:
        b = ctx.b
        l2 = 0.0 if self.decoupled else self.weight_decay
        m, v = ctx.state(w, "m"), ctx.state(w, "v")
        m2 = b.op("AdamMoment", [m, g, w, ctx.ok], out=f"{m.name}_new", beta=self.betas[0], weight_decay=l2)
        v2 = b.op("AdamMoment", [v, g, w, ctx.ok], out=f"{v.name}_new", beta=self.betas[1], weight_decay=l2, square=1)
        ctx.assign(m, m2)
        ctx.assign(v, v2)
        return b.op("AdamUpdate", [w, m2, v2, ctx.lr, shared["bc1"], shared["bc2"], ctx.ok], out=f"{w.name}_new",
                    eps=self.eps, weight_decay=self.weight_decay if self.decoupled else 0.0)  # fmt: skip


@dataclass
class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay ``w *= 1 - lr * weight_decay``."""

    weight_decay: float = 0.01
    decoupled = True


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer"]
