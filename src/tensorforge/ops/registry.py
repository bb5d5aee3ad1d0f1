"""The op registry: one ``OpDef`` per op name.

An op's attributes (with defaults), its type/shape rule, its reference semantics (numpy) and its
fusion pattern are declared together here. Gradient rules live in ``autodiff/rules`` and lowerings in
``lower/``, each registered under the same op name, so adding an op never touches an ``if op == ...``
chain.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import NotConstantError, ShapeError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Dim, Node, TensorType, Value


class Pattern(enum.IntEnum):
    """How an op can be fused (TVM's op-pattern lattice): lower is easier to fuse."""

    ELEMWISE = 0  # out[i] = f(in[i]) for same-shaped operands
    BROADCAST = 1  # elementwise with broadcasting
    INJECTIVE = 2  # each output element reads one input element (transpose, concat, slice, ...)
    REDUCTION = 3  # reduces some axes
    OUT_FUSABLE = 4  # heavy op (gemm, conv) that accepts an elementwise epilogue
    OPAQUE = 8  # anything else


class InferCtx:
    """What a type rule sees: the node, its input types and (where known) constant input values."""

    def __init__(self, node: Node, model: str | None = None):
        self.node = node
        self.model = model
        self.attrs = node.attrs

    @property
    def inputs(self) -> tuple[Value | None, ...]:
        return self.node.inputs

    def type(self, i: int) -> TensorType:
        v = self.node.input(i)
        if v is None:
            self.fail(f"input {i} is required but missing")
        return v.type

    def shape(self, i: int) -> tuple[Dim, ...]:
        return self.type(i).shape

    def dtype(self, i: int) -> DType:
        return self.type(i).dtype

    def has(self, i: int) -> bool:
        return self.node.input(i) is not None

    def const(self, i: int) -> np.ndarray | None:
        v = self.node.input(i)
        return None if v is None else v.const

    def require_const(self, i: int, what: str) -> np.ndarray:
        c = self.const(i)
        if c is None:
            try:
                self.fail(
                    f"{what} (input {i}, %{self.node.inputs[i].name}) must be known at compile time; "
                    "give the model static input shapes or fold the computation that produces it",
                    NotConstantError,
                )
            except NotConstantError as e:
                e.input_index = i  # the dynamic-shape runtime uses it to find the value to compile in
                raise
        return c

    def attr(self, key: str, default: Any = None) -> Any:
        return self.node.attrs.get(key, default)

    def fail(self, msg: str, exc: type[Exception] = ShapeError):
        raise exc(f"{node_context(self.model, self.node.name, self.node.op)}: {msg}")

    def unsupported(self, msg: str):
        self.fail(msg, UnsupportedError)


InferFn = Callable[[InferCtx], Sequence[TensorType]]
# reference(attrs, *inputs) -> tuple of outputs
RefFn = Callable[..., Sequence[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    pattern: Pattern
    infer: InferFn
    reference: RefFn | None
    attrs: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)  # (min, max) number of inputs; max -1 = variadic
    # Values that are computable from input *types* alone (Shape, Size): returns outputs or None.
    value: Callable[[InferCtx], Sequence[np.ndarray] | None] | None = None
    flops: Callable[[Node], int] | None = None
    doc: str = ""
    # Output shapes depend on input *data* (NonZero, Unique): the type rule gives symbolic dims and the
    # dynamic-shape runtime (dynamic.py) runs the op between compiled segments.
    data_dependent: bool = False
    # Ops that are specialized away (deferred control flow): expand(node, model, taken_names) -> (nodes,
    # outputs) once the node's inputs are known well enough; raises NotConstantError until then.
    expand: Callable | None = None

    def check_arity(self, ctx: InferCtx) -> None:
        n = len(ctx.node.inputs)
        while n and ctx.node.inputs[n - 1] is None:
            n -= 1
        lo, hi = self.inputs
        if n < lo or (hi >= 0 and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'any' if hi < 0 else hi}"
            ctx.fail(f"expects {want} inputs, got {n}")


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str) -> OpDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedError(f"op {name!r} is not registered") from None


def has_op(name: str) -> bool:
    return name in _REGISTRY


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


def with_defaults(opdef: OpDef, attrs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(opdef.attrs)
    out.update(attrs)
    return out


def infer_node(node: Node, model: str | None = None) -> list[TensorType]:
    """Run the op's type rule for ``node`` and return the output types."""
    opdef = get_op(node.op)
    ctx = InferCtx(node, model)
    opdef.check_arity(ctx)
    types = list(opdef.infer(ctx))
    if len(types) < len(node.outputs):
        ctx.fail(f"op produces {len(types)} outputs but node declares {len(node.outputs)}")
    return types[: len(node.outputs)]


def evaluate(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Reference semantics of ``node`` on numpy inputs (used by constant folding and the interpreter)."""
    opdef = get_op(node.op)
    if opdef.reference is None:
        raise UnsupportedError(f"op {node.op} has no reference implementation")
    attrs = with_defaults(opdef, node.attrs)
    outs = opdef.reference(attrs, *inputs)
    return [np.asarray(o) for o in outs]
