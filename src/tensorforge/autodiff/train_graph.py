"""The training step as one graph: forward, loss, backward and optimizer update.

    inputs:  data..., target, lr, parameters..., optimizer state..., batch-norm statistics...
    outputs: loss, new parameters..., new optimizer state..., new statistics..., update check

Every "new" output is marked as the next value of its input (``TrainingGraph.state``), so the compiled
step updates those buffers in place. Batch normalization is rewritten to training mode (batch statistics,
and running statistics updated with the node's momentum as PyTorch does: unbiased variance).

The update ops and the statistics take ``ok`` and keep their old values when it is false, so a failed step
changes nothing without any shadow copy. ``ok`` says that the loss is finite *and* that every new value
is: a huge learning rate can overflow the parameters while the loss is fine. The update is therefore
computed twice: first tentatively (the same update nodes reading only the loss's finiteness), each
parameter's new value and optimizer state folded into one number, ``sum(new * 0)`` — 0, or NaN as soon as
one value is not finite — by a reduction that the fusion pass computes as it goes (the tentative values
are never stored); then for real, with ``ok``. Those numbers are the ``update check`` output: the step
reads which parameter went non-finite from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import TensorforgeError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Graph, Node, TensorType, Value
from .builder import GraphBuilder
from .core import backward
from .losses import LOSSES, check_target
from .transform import promote


@dataclass
class Slot:
    """A persistent buffer of the training step (an input whose next value is an output)."""

    name: str
    init: np.ndarray
    kind: str  # "parameter" | "optimizer" | "statistic"


@dataclass
class TrainingGraph:
    graph: Graph
    data: list[str]
    target: str
    hyper: list[str]
    slots: list[Slot]
    state: dict[int, int] = field(default_factory=dict)  # output index -> input index
    # the update check (its output's name) and what each of its entries covers (slot names)
    check: str = ""
    check_groups: list[list[str]] = field(default_factory=list)


class UpdateContext:
    """What an optimizer builds its update with (see ``optim.py``)."""

    def __init__(self, b: GraphBuilder, lr: Value, ok: Value):
        self.b = b
        self.lr = lr
        self.ok = ok
        self.slots: list[tuple[Value, Slot]] = []
        self.updates: dict[int, Value] = {}
        self.owner: dict[int, str] = {}  # state slot -> the parameter it belongs to

    def state(self, w: Value, suffix: str) -> Value:
        """A buffer shaped like parameter ``w``, starting at zero."""
        v = self._slot(f"{w.name}.{suffix}", np.zeros(w.shape, w.dtype.np))
        self.owner[v.id] = w.name
        return v

    def scalar_state(self, name: str, init: float) -> Value:
        return self._slot(name, np.array(init, dtype=self.lr.dtype.np))

    def _slot(self, name: str, init: np.ndarray) -> Value:
        v = self.b.input(name, TensorType(DType.from_numpy(init.dtype), tuple(init.shape)))
        self.slots.append((v, Slot(v.name, init, "optimizer")))
        return v

    def assign(self, slot: Value, new: Value) -> None:
        self.updates[slot.id] = new


def batchnorm_training(g: Graph) -> tuple[Graph, list[tuple[Value, Value, np.ndarray]]]:
    """``g`` with every BatchNormalization using batch statistics; returns the graph and, per running
    statistic, (its new input, its updated value, its initial value)."""
    b = GraphBuilder(g.name, taken=[v.name for v in g.values()])
    env: dict[int, Value] = {}
    stats: list[tuple[Value, Value, np.ndarray]] = []
    nodes: list[Node] = []
    for n in g.nodes:
        n = n.replace(inputs=tuple(None if v is None else env.get(v.id, v) for v in n.inputs))
        if n.op != "BatchNormalization":
            nodes.append(n)
            continue
        x, scale, bias, mean, var = n.inputs
        if not (mean.is_const and var.is_const):
            raise UnsupportedError(f"{node_context(g.name, n.name, n.op)}: the running mean and variance must be "
                                   "initializers to train batch normalization")  # fmt: skip
        rank, c = len(x.shape), x.shape[1]
        axes = [0, *range(2, rank)]
        count = int(np.prod([x.shape[a] for a in axes]))
        if count < 2:
            raise TensorforgeError(f"{node_context(g.name, n.name, n.op)}: batch normalization in training needs more "
                                   f"than one value per channel, the input is {list(x.shape)}")  # fmt: skip
        eps, momentum = float(n.attr("epsilon", 1e-5)), float(n.attr("momentum", 0.9))
        b.nodes = []
        b.label = n.name
        bshape = (1, c) + (1,) * (rank - 2)
        mu = b.op("ReduceMean", [x, b.ints(axes, "axes")], keepdims=1)
        xc = b.sub(x, mu)
        var_b = b.op("ReduceMean", [b.mul(xc, xc), b.ints(axes, "axes")], keepdims=1)
        inv = b.op("Reciprocal", [b.op("Sqrt", [b.add(var_b, b.scalar(eps, var_b))])])
        y = b.add(b.mul(b.mul(xc, inv), b.reshape(scale, bshape)), b.reshape(bias, bshape))
        env[n.outputs[0].id] = y
        for old, batch, unbias in ((mean, mu, 1.0), (var, var_b, count / (count - 1))):
            v = Value(old.name, old.type)  # the constant's name: it is no longer in the graph
            new = b.add(b.scale(v, momentum), b.scale(b.reshape(batch, (c,)), (1 - momentum) * unbias))
            stats.append((v, new, np.array(old.const)))
        nodes.extend(b.nodes)
    outputs = [env.get(v.id, v) for v in g.outputs]
    return Graph(nodes, g.inputs, outputs, g.name, g.output_names), stats


def build_training_graph(g: Graph, loss: str, optimizer, params: Sequence[str], target_dtype, target_shape,
                         output: str | None = None, loss_options: dict | None = None,
                         initial: dict[str, np.ndarray] | None = None) -> TrainingGraph:  # fmt: skip
    """The whole training step of the static-shaped model ``g`` (see the module docstring). ``params`` are
    constants of ``g`` or inputs whose starting values are in ``initial``."""
    if loss not in LOSSES:
        raise TensorforgeError(f"unknown loss {loss!r}; losses: {', '.join(sorted(LOSSES))}")
    data = [v.name for v in g.inputs if v.name not in set(params)]
    initial = {**{v.name: v.const for v in g.constants()}, **(initial or {})}
    g, stats = batchnorm_training(g)
    g, pvals = promote(g, list(params))
    dtypes = {p.dtype for p in pvals}
    if len(dtypes) > 1:
        raise UnsupportedError(f"model '{g.name}': parameters of several dtypes ({sorted(map(str, dtypes))})")
    names = list(g.output_names)
    oi = 0 if output is None else names.index(output) if output in names else None
    if oi is None:
        raise TensorforgeError(f"model '{g.name}' has no output '{output}'; outputs: {names}")
    out = g.outputs[oi]
    check_target(loss, out, target_dtype, tuple(target_shape))
    b = GraphBuilder(g.name, taken=[v.name for v in g.values()])
    target = b.input("target", TensorType(DType.from_numpy(target_dtype), tuple(target_shape)))
    b.label = "loss"
    loss_v = LOSSES[loss](b, out, target, g.producers().get(out), **(loss_options or {}))
    forward = [*g.nodes, *b.nodes]
    ok = b.op("Not", [b.op("Or", [b.op("IsNaN", [loss_v]), b.op("IsInf", [loss_v])])], out="loss_is_finite")
    grads = backward(forward, loss_v, b.const(np.ones((), loss_v.dtype.np), "one"), pvals, b)
    for p, gr in zip(pvals, grads):
        if gr is None:
            raise TensorforgeError(f"model '{g.name}': parameter '{p.name}' does not affect the loss; leave it out "
                                   "of the trained parameters (frozen=[...])")  # fmt: skip
    dtype = pvals[0].dtype if pvals else DType.F32
    lr = b.input("lr", TensorType(dtype, ()))
    step_ok = Value(b.fresh("step_ok"), TensorType(DType.BOOL, ()))  # defined below, by the update check
    ctx = UpdateContext(b, lr, step_ok)
    b.label = "optimizer"
    mark = len(b.nodes)
    shared = optimizer.begin(ctx)
    new_params = [optimizer.update(ctx, w, gr, shared) for w, gr in zip(pvals, grads)]
    updating, b.nodes = b.nodes[mark:], b.nodes[:mark]  # they read step_ok: after the check that defines it
    groups = [[p, *(v for v, _ in ctx.slots if ctx.owner.get(v.id) == p.name)] for p in pvals]
    groups += [[v] for v, _ in ctx.slots if v.id not in ctx.owner] + [[v] for v, _, _ in stats]
    tried = {v.id: new for v, new, _ in stats}  # a statistic's new value does not depend on ok
    check = _update_check(b, updating, ok, step_ok, groups, {**tried, **_new_values(ctx, pvals, new_params)})
    b.nodes += updating
    b.label = "statistics"
    new_stats = [b.op("Where", [step_ok, new, old], out=f"{old.name}_new") for old, new, _ in stats]
    slots = [Slot(p.name, np.array(initial[p.name]), "parameter") for p in pvals]
    slots += [s for _, s in ctx.slots]
    slots += [Slot(v.name, init, "statistic") for v, _, init in stats]
    slot_inputs = [*pvals, *(v for v, _ in ctx.slots), *(v for v, _, _ in stats)]
    new_values = [*new_params, *(ctx.updates[v.id] for v, _ in ctx.slots), *new_stats]
    data_inputs = [v for v in g.inputs if v.name in data]
    inputs = [*data_inputs, target, lr, *slot_inputs]
    first = len(data_inputs) + 2
    outputs = [loss_v, *new_values, check]
    state = {1 + i: first + i for i in range(len(new_values))}
    graph = Graph([*g.nodes, *b.nodes], inputs, outputs, f"{g.name}_train",
                  ["loss", *(f"{s.name}_new" for s in slots), "update_check"])  # fmt: skip
    return TrainingGraph(graph, data, target.name, [lr.name], slots, state, "update_check",
                         [[v.name for v in grp] for grp in groups])  # fmt: skip


def _new_values(ctx: UpdateContext, params: list[Value], new_params: list[Value]) -> dict[int, Value]:
    """Each slot's (parameter's or optimizer state's) new value, by the slot's value id."""
    out = {p.id: new for p, new in zip(params, new_params)}
    out.update({v.id: ctx.updates[v.id] for v, _ in ctx.slots})
    return out


def _update_check(b: GraphBuilder, updating: list[Node], loss_ok: Value, step_ok: Value, groups: list[list[Value]],
                  new: dict[int, Value]) -> Value:  # fmt: skip
    """Define ``step_ok`` (the loss and every new value finite) and return the update check: per group of slots,
    ``sum(new * 0)`` over the group's tentative new values (the ``updating`` nodes rebuilt reading ``loss_ok``
    instead of ``step_ok``); NaN where a value is not finite.

    The tentative update reads its tensor operands flattened (views): then no tentative node consumes a
    gradient straight from the kernel computing it (which must store it anyway, for the real update), so
    none is drawn into that kernel's epilogue; they form one loop that the reduction computes as it reads,
    and nothing of the tentative update is stored. (A 1-D gradient is read as it comes; a bias's is a view
    already.)"""
    b.label = "update check"
    env: dict[int, Value] = {step_ok.id: loss_ok}
    flat: dict[int, Value] = {}

    def operand(v: Value) -> Value:
        v = env.get(v.id, v)
        if len(v.shape) == 0:
            return v
        if v.id not in flat:
            flat[v.id] = b.reshape(v, (int(np.prod(v.shape)),))
        return flat[v.id]

    for n in updating:
        outs = b.op(n.op, [None if v is None else operand(v) for v in n.inputs], n_out=len(n.outputs), **n.attrs)
        env.update(zip((o.id for o in n.outputs), outs if len(n.outputs) > 1 else (outs,)))
    flags = []
    for grp in groups:
        zero = None
        for v in grp:
            t = operand(new[v.id])
            z = b.mul(t, b.scalar(0, t))
            zero = z if zero is None else b.add(zero, z)
        flags.append(b.reshape(b.reduce_sum(zero, range(len(zero.shape)), keepdims=False), (1,)))
    check = b.op("Concat", flags, axis=0) if len(flags) > 1 else flags[0]
    total = b.reduce_sum(check, [0], keepdims=False)
    finite = b.op("Not", [b.op("IsNaN", [total])])
    b.nodes.append(Node("And", (loss_ok, finite), (step_ok,), {}, "update check"))
    return check
