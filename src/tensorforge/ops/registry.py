"""The op registry: one ``OpDef`` per op name.

An op's attributes (with defaults), its type/shape rule, its reference semantics (numpy) and its
fusion pattern are declared together here. Gradient rules live in ``autodiff/rules`` and lowerings in
``lower/``, each registered under the same op name, so adding an op never touches an ``if op == ...``
chain.
"""

from __future__ import annotations

import enum
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidAttributeError, NotConstantError, ShapeError, UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Dim, Node, TensorType, Value
from ..ir.limits import check_fits, type_bytes


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


_KINDS = {"int": "an int", "float": "a float", "str": "a string", "ints": "a list of ints",
          "floats": "a list of floats", "strs": "a list of strings", "tensor": "a tensor",
          "dtype": "an ONNX element type tensorforge supports (1 = float, 7 = int64, ...)"}  # fmt: skip


def _kind_of(default: Any) -> str | None:
    """The kind a plain default implies (None: unchecked, e.g. a default of None or an empty list)."""
    if isinstance(default, numbers.Integral):
        return "int"
    if isinstance(default, numbers.Real):
        return "float"
    if isinstance(default, str):
        return "str"
    if isinstance(default, np.ndarray):
        return "tensor"
    if isinstance(default, list | tuple) and default:
        kinds = {_kind_of(x) for x in default}
        return {frozenset({"int"}): "ints", frozenset({"float"}): "floats", frozenset({"int", "float"}): "floats",
                frozenset({"str"}): "strs"}.get(frozenset(kinds))  # fmt: skip
    return None


def _fits(kind: str, v: Any) -> bool:
    if kind == "int":
        return isinstance(v, numbers.Integral)
    if kind == "float":  # an int where a float belongs is exact: accepted, as by onnx.helper
        return isinstance(v, numbers.Real)
    if kind == "str":
        return isinstance(v, str)
    if kind == "tensor":
        return isinstance(v, np.ndarray)
    if kind == "dtype":  # an ONNX TensorProto element type code (graph builders pass a DType)
        try:
            return isinstance(v, DType) or (isinstance(v, numbers.Integral) and DType.from_onnx(int(v)) is not None)
        except TypeError:
            return False
    if isinstance(v, np.ndarray):
        return v.ndim == 1 and _fits(kind[:-1], v.dtype.type(0))
    return isinstance(v, list | tuple) and all(_fits(kind[:-1], x) for x in v)


def describe_value(v: Any) -> str:
    """'the string '1.5'', 'the int 1', 'the list [1, 2]': what an attribute holds, for messages."""
    if isinstance(v, np.ndarray):
        return f"a {v.dtype} array of shape {list(v.shape)}"
    if isinstance(v, list | tuple):
        return f"the list {list(v)!r}"
    word = {str: "string", float: "float", int: "int", bool: "bool"}.get(type(v), type(v).__name__)
    return f"the {word} {v!r}"


@dataclass(frozen=True)
class Attr:
    """An attribute's declaration on an OpDef, where a plain default does not say enough: no default
    (Conv's ``strides``: the type rule knows it from the rank), a kind, a lower bound for every element,
    or the values allowed. ``infer_node`` checks every node against its op's declarations before the type
    rule runs, so rules and references never meet a string where they expect an int."""

    default: Any = None
    kind: str | None = None  # one of _KINDS; by default the kind of ``default``
    min: int | float | None = None  # every element (of a list too) is >= min
    choices: tuple | None = None  # every element is one of these

    def __post_init__(self):
        if self.kind is None:
            object.__setattr__(self, "kind", _kind_of(self.default))

    def problem(self, name: str, v: Any) -> str | None:
        """What is wrong with value ``v`` of attribute ``name``, or None."""
        if self.kind is None or v is None:
            return None
        if not _fits(self.kind, v):
            return f"attribute '{name}' must be {_KINDS[self.kind]}, got {describe_value(v)}"
        elems = list(np.asarray(v).reshape(-1)) if self.kind in ("ints", "floats", "strs") else [v]
        if self.min is not None and any(x < self.min for x in elems):
            return f"attribute '{name}' must be >= {self.min}, got {describe_value(v)}"
        if self.choices is not None and any(x not in self.choices for x in elems):
            return f"attribute '{name}' must be one of {', '.join(map(repr, self.choices))}, got {describe_value(v)}"
        return None


def attr_problem(specs: Mapping[str, Attr], attrs: Mapping[str, Any]) -> str | None:
    """The first attribute in ``attrs`` that breaks its declaration in ``specs``, described; else None."""
    for name, v in attrs.items():
        spec = specs.get(name)
        problem = spec and spec.problem(name, v)
        if problem:
            return problem
    return None


def flag(default: int = 0) -> Attr:
    """A 0/1 attribute (keepdims, ceil_mode, transA): any other value is a mistake, not a 'true'."""
    return Attr(default, choices=(0, 1))


InferFn = Callable[[InferCtx], Sequence[TensorType]]
# reference(attrs, *inputs) -> tuple of outputs
RefFn = Callable[..., Sequence[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    pattern: Pattern
    infer: InferFn
    reference: RefFn | None
    # Per attribute a plain default, or an ``Attr`` declaration; ``defaults`` and ``specs`` are derived.
    attrs: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)  # (min, max) number of inputs; max -1 = variadic
    # Values that are computable from input *types* alone (Shape, Size): returns outputs or None. They must
    # take little memory (ConstantOfShape's is a broadcast view): fold_node's size budget does not apply.
    value: Callable[[InferCtx], Sequence[np.ndarray] | None] | None = None
    flops: Callable[[Node], int] | None = None
    doc: str = ""
    # Output shapes depend on input *data* (NonZero, Unique): the type rule gives symbolic dims and the
    # dynamic-shape runtime (dynamic.py) runs the op between compiled segments.
    data_dependent: bool = False
    # Ops that are specialized away (deferred control flow): expand(node, model, taken_names) -> (nodes,
    # outputs) once the node's inputs are known well enough; raises NotConstantError until then.
    expand: Callable | None = None
    defaults: Mapping[str, Any] = field(init=False, repr=False)
    specs: Mapping[str, Attr] = field(init=False, repr=False)

    def __post_init__(self):
        specs = {k: v if isinstance(v, Attr) else Attr(v) for k, v in self.attrs.items()}
        defaults = {k: v.default if isinstance(v, Attr) else v for k, v in self.attrs.items()
                    if not (isinstance(v, Attr) and v.default is None)}  # fmt: skip
        object.__setattr__(self, "specs", specs)
        object.__setattr__(self, "defaults", defaults)

    def check_attrs(self, ctx: InferCtx) -> None:
        problem = attr_problem(self.specs, ctx.node.attrs)
        if problem:
            ctx.fail(problem, InvalidAttributeError)

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
    out = dict(opdef.defaults)
    out.update(attrs)
    return out


def infer_node(node: Node, model: str | None = None) -> list[TensorType]:
    """Run the op's type rule for ``node`` and return the output types. Every node of every graph passes
    here (import, specialization, graph builders), so this is where attributes are checked against their
    declarations and output sizes against the machine's memory."""
    opdef = get_op(node.op)
    ctx = InferCtx(node, model)
    opdef.check_arity(ctx)
    opdef.check_attrs(ctx)
    types = list(opdef.infer(ctx))
    if len(types) < len(node.outputs):
        ctx.fail(f"op produces {len(types)} outputs but node declares {len(node.outputs)}")
    for v, t in zip(node.outputs, types):  # a tensor that can never exist fails here, not in an allocation
        check_fits(type_bytes(t), f"{node_context(model, node.name, node.op)}: output '{v.name}' {t}")
    return types[: len(node.outputs)]


def infer_or_defer(node: Node, model: str | None = None) -> list[TensorType] | None:
    """An importer's type rule: the node's output types, or None to leave them untyped when its shapes
    depend on values known only at run time (a Reshape target computed from data, a Range over input
    scalars): the dynamic-shape runtime types them once the values exist. Real shape errors raise."""
    if any(v is not None and v.type is None for v in node.inputs):
        return None
    try:
        return infer_node(node, model)
    except NotConstantError:
        return None
    except ShapeError as e:
        if isinstance(e, InvalidAttributeError) or all(v is None or v.type.is_static for v in node.inputs):
            raise
        return None  # may hold once the symbolic dims are known


def evaluate(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Reference semantics of ``node`` on numpy inputs (used by constant folding and the interpreter)."""
    opdef = get_op(node.op)
    if opdef.reference is None:
        raise UnsupportedError(f"op {node.op} has no reference implementation")
    attrs = with_defaults(opdef, node.attrs)
    outs = opdef.reference(attrs, *inputs)
    return [np.asarray(o) for o in outs]
