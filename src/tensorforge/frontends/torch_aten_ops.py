"""Converters of core-ATen ops onto IR ops: elementwise math and comparisons, reductions, tensor creation,
and arithmetic on symbolic sizes (SymInts, held as 0-d int64 values). Registered by ATen op name in
``torch_export.ATEN``; the movement and neural-network ops are in ``torch_aten_nn.py``.

Operands follow PyTorch's type promotion: arithmetic is computed in the dtype PyTorch traced for the
result (an int tensor times a float is cast first), comparisons in ``torch.result_type`` of the operands.
"""

from __future__ import annotations

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Value
from .torch_export import Ctx, aten, torch, torch_dtype

I64 = DType.I64


# -------------------------------------------------------------------------------------------------
# elementwise
# -------------------------------------------------------------------------------------------------
def _dummy(m):
    """A stand-in of a traced operand for ``torch.result_type``: dimensioned or 0-d tensor, or a scalar."""
    if isinstance(m, torch.Tensor):
        return torch.empty((0,) if m.dim() else (), dtype=m.dtype)
    if isinstance(m, torch.SymInt):
        return 1
    if isinstance(m, torch.SymFloat):
        return 1.0
    if isinstance(m, torch.SymBool):
        return True
    return m


def common_dtype(cx: Ctx, n: int = 2) -> DType:
    """The dtype PyTorch computes a comparison of the first ``n`` arguments in."""
    ms = [_dummy(cx.meta(i)) for i in range(n)]
    if not any(isinstance(m, torch.Tensor) for m in ms):
        ms[0] = torch.tensor(ms[0])
    return torch_dtype(ms[0].dtype if n == 1 else torch.result_type(*ms[:2]))


_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log", "sqrt": "Sqrt",
          "neg": "Neg", "abs": "Abs", "erf": "Erf", "sin": "Sin", "cos": "Cos", "tan": "Tan", "asin": "Asin",
          "acos": "Acos", "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh",
          "atanh": "Atanh", "floor": "Floor", "ceil": "Ceil", "round": "Round", "reciprocal": "Reciprocal",
          "sign": "Sign"}  # fmt: skip


def _unary(ir_op: str):
    def conv(cx: Ctx, x):
        return cx.emit(ir_op, cx.cast(x, cx.out_dtype))

    return conv


for _name, _ir in _UNARY.items():
    aten(f"{_name}.default")(_unary(_ir))


@aten("rsqrt.default")
def _rsqrt(cx: Ctx, x):
    return cx.emit("Reciprocal", cx.emit("Sqrt", cx.cast(x, cx.out_dtype)))


@aten("log2.default")
def _log2(cx: Ctx, x):
    dt = cx.out_dtype
    return cx.emit("Mul", cx.emit("Log", cx.cast(x, dt)), cx.const(1 / np.log(2.0), dt))


@aten("exp2.default")
def _exp2(cx: Ctx, x):
    dt = cx.out_dtype
    return cx.emit("Pow", cx.const(2.0, dt), cx.cast(x, dt))


@aten("erfc.default")
def _erfc(cx: Ctx, x):
    dt = cx.out_dtype
    return cx.emit("Sub", cx.const(1.0, dt), cx.emit("Erf", cx.cast(x, dt)))


@aten("log1p.default")
def _log1p(cx: Ctx, x):
    """log(1 + x) without losing small x: x * log(u) / (u - 1) with u = 1 + x rounded (Goldberg)."""
    dt = cx.out_dtype
    x = cx.cast(x, dt)
    u = cx.emit("Add", x, cx.const(1.0, dt))
    d = cx.emit("Sub", u, cx.const(1.0, dt))
    exact = cx.emit("Div", cx.emit("Mul", x, cx.emit("Log", u)), d)
    return cx.emit("Where", cx.emit("Equal", d, cx.const(0.0, dt)), x, exact)


@aten("expm1.default")
def _expm1(cx: Ctx, x):
    """exp(x) - 1 without losing small x: (u - 1) * x / log(u) with u = exp(x) rounded (Kahan)."""
    dt = cx.out_dtype
    x = cx.cast(x, dt)
    u = cx.emit("Exp", x)
    um1 = cx.emit("Sub", u, cx.const(1.0, dt))
    exact = cx.emit("Div", cx.emit("Mul", um1, x), cx.emit("Log", u))
    small = cx.emit("Where", cx.emit("Equal", u, cx.const(1.0, dt)), x, exact)
    return cx.emit("Where", cx.emit("Equal", u, cx.const(0.0, dt)), cx.const(-1.0, dt), small)


@aten("trunc.default")
def _trunc(cx: Ctx, x):
    return _trunc_value(cx, cx.cast(x, cx.out_dtype), cx.out_dtype)


def _trunc_value(cx: Ctx, x: Value, dt: DType) -> Value:
    if not dt.is_float:
        return x
    neg = cx.emit("Less", x, cx.const(0, dt))
    return cx.emit("Where", neg, cx.emit("Ceil", x), cx.emit("Floor", x))


@aten("isnan.default")
def _isnan(cx: Ctx, x):
    return cx.emit("IsNaN", x)


@aten("isinf.default")
def _isinf(cx: Ctx, x):
    return cx.emit("IsInf", x) if cx.dtype(x).is_float else _false_like(cx, x)  # integers are never infinite


def _false_like(cx: Ctx, x: Value) -> Value:
    return cx.emit("ConstantOfShape", cx.emit("Shape", x), value=np.array([False]))


@aten("logical_not.default")
def _logical_not(cx: Ctx, x):
    return cx.emit("Not", cx.cast(x, DType.BOOL))


@aten("bitwise_not.default")
def _bitwise_not(cx: Ctx, x):
    return cx.emit("Not" if cx.dtype(x) == DType.BOOL else "BitwiseNot", x)


def _binary(ir_op: str):
    def conv(cx: Ctx, a, b, alpha=1):
        dt = cx.out_dtype
        x, y = cx.scalar(a, dt), cx.scalar(b, dt)
        if alpha != 1:
            y = cx.emit("Mul", y, cx.const(alpha, dt))
        return cx.emit(ir_op, x, y)

    return conv


for _names, _ir in ((("add.Tensor", "add.Scalar"), "Add"), (("sub.Tensor", "sub.Scalar"), "Sub"),
                    (("mul.Tensor", "mul.Scalar"), "Mul"), (("div.Tensor", "div.Scalar"), "Div"),
                    (("pow.Tensor_Tensor", "pow.Tensor_Scalar", "pow.Scalar"), "Pow"),
                    (("maximum.default",), "Max"), (("minimum.default",), "Min")):  # fmt: skip
    aten(*_names)(_binary(_ir))


@aten("rsub.Scalar", "rsub.Tensor")
def _rsub(cx: Ctx, a, b, alpha=1):
    dt = cx.out_dtype
    x = cx.scalar(a, dt)
    if alpha != 1:
        x = cx.emit("Mul", x, cx.const(alpha, dt))
    return cx.emit("Sub", cx.scalar(b, dt), x)


def _floor_mod(cx: Ctx, x: Value, y: Value, dt: DType) -> Value:
    """Python's ``x % y`` (the sign of the divisor)."""
    if not dt.is_float:
        return cx.emit("Mod", x, y, fmod=0)
    return cx.emit("Sub", x, cx.emit("Mul", cx.emit("Floor", cx.emit("Div", x, y)), y))


@aten("div.Tensor_mode", "div.Scalar_mode")
def _div_mode(cx: Ctx, a, b, rounding_mode=None):
    dt = cx.out_dtype
    x, y = cx.scalar(a, dt), cx.scalar(b, dt)
    if rounding_mode is None:
        return cx.emit("Div", x, y)
    if dt.is_float:
        q = cx.emit("Div", x, y)
        return cx.emit("Floor", q) if rounding_mode == "floor" else _trunc_value(cx, q, dt)
    # integers: subtract the remainder first, so that the division is exact whatever the IR rounds to
    rem = _floor_mod(cx, x, y, dt) if rounding_mode == "floor" else cx.emit("Mod", x, y, fmod=1)
    return cx.emit("Div", cx.emit("Sub", x, rem), y)


@aten("remainder.Tensor", "remainder.Scalar")
def _remainder(cx: Ctx, a, b):
    dt = cx.out_dtype
    return _floor_mod(cx, cx.scalar(a, dt), cx.scalar(b, dt), dt)


@aten("fmod.Tensor", "fmod.Scalar")
def _fmod(cx: Ctx, a, b):
    dt = cx.out_dtype
    return cx.emit("Mod", cx.scalar(a, dt), cx.scalar(b, dt), fmod=1)


def _compare(ir_op: str, negate: bool = False):
    def conv(cx: Ctx, a, b):
        dt = common_dtype(cx)
        out = cx.emit(ir_op, cx.scalar(a, dt), cx.scalar(b, dt))
        return cx.emit("Not", out) if negate else out

    return conv


_COMPARISONS = (("eq", "Equal", False), ("ne", "Equal", True), ("lt", "Less", False), ("le", "LessOrEqual", False),
                ("gt", "Greater", False), ("ge", "GreaterOrEqual", False))  # fmt: skip
for _t, _ir, _neg in _COMPARISONS:
    aten(f"{_t}.Tensor", f"{_t}.Scalar")(_compare(_ir, _neg))
    aten(f"operator.{_t}")(_compare(_ir, _neg))


def _logical(ir_op: str):
    def conv(cx: Ctx, a, b):
        return cx.emit(ir_op, cx.scalar(a, DType.BOOL), cx.scalar(b, DType.BOOL))

    return conv


for _t, _ir in (("and", "And"), ("or", "Or"), ("xor", "Xor")):
    aten(f"logical_{_t}.default")(_logical(_ir))


def _bitwise(bool_op: str, int_op: str):
    def conv(cx: Ctx, a, b):
        dt = cx.out_dtype
        return cx.emit(bool_op if dt == DType.BOOL else int_op, cx.scalar(a, dt), cx.scalar(b, dt))

    return conv


for _t, _ir in (("and", "And"), ("or", "Or"), ("xor", "Xor")):
    aten(f"bitwise_{_t}.Tensor", f"bitwise_{_t}.Scalar")(_bitwise(_ir, f"Bitwise{_ir}"))


@aten("where.self")
def _where(cx: Ctx, cond, a, b):
    dt = cx.out_dtype
    return cx.emit("Where", cx.scalar(cond, DType.BOOL), cx.scalar(a, dt), cx.scalar(b, dt))


@aten("clamp.default")
def _clamp(cx: Ctx, x, min=None, max=None):
    dt = cx.out_dtype
    lo = None if min is None else cx.const(min, dt)
    hi = None if max is None else cx.const(max, dt)
    return cx.emit("Clip", cx.cast(x, dt), lo, hi)


@aten("clamp.Tensor")
def _clamp_tensor(cx: Ctx, x, min=None, max=None):
    dt = cx.out_dtype
    y = cx.cast(x, dt)
    if min is not None:
        y = cx.emit("Max", y, cx.scalar(min, dt))
    if max is not None:
        y = cx.emit("Min", y, cx.scalar(max, dt))
    return y


@aten("hardtanh.default")
def _hardtanh(cx: Ctx, x, min_val=-1.0, max_val=1.0):
    return _clamp(cx, x, min_val, max_val)


@aten("gelu.default")
def _gelu(cx: Ctx, x, approximate="none"):
    return cx.emit("Gelu", x, approximate=approximate)


@aten("leaky_relu.default")
def _leaky_relu(cx: Ctx, x, negative_slope=0.01):
    return cx.emit("LeakyRelu", x, alpha=float(negative_slope))


@aten("elu.default")
def _elu(cx: Ctx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    if input_scale != 1:
        cx.unsupported(f"elu with input_scale={input_scale} is not supported")
    y = cx.emit("Elu", x, alpha=float(alpha))
    return y if scale == 1 else cx.emit("Mul", y, cx.const(scale, cx.out_dtype))


@aten("_softmax.default")
def _softmax(cx: Ctx, x, dim, half_to_float=False):
    return cx.emit("Softmax", cx.cast(x, cx.out_dtype), axis=int(dim))


@aten("_log_softmax.default")
def _log_softmax(cx: Ctx, x, dim, half_to_float=False):
    return cx.emit("LogSoftmax", cx.cast(x, cx.out_dtype), axis=int(dim))


# -------------------------------------------------------------------------------------------------
# reductions
# -------------------------------------------------------------------------------------------------
def _axes(cx: Ctx, dim) -> list[int]:
    rank = cx.rank(0)
    if dim is None or (isinstance(dim, list | tuple) and not dim):
        return list(range(rank))
    dims = dim if isinstance(dim, list | tuple) else [dim]
    return [int(d) % max(rank, 1) for d in dims]


def _reduce(ir_op: str, cast_to_out: bool = True):
    def conv(cx: Ctx, x, dim=None, keepdim=False, dtype=None):
        axes = _axes(cx, dim)
        x = cx.cast(x, cx.out_dtype) if cast_to_out else x
        if not axes:  # a 0-d tensor: nothing to reduce
            return x
        return cx.emit(ir_op, x, cx.ints(axes), keepdims=int(bool(keepdim)))

    return conv


aten("sum.dim_IntList")(_reduce("ReduceSum"))
aten("mean.dim")(_reduce("ReduceMean"))
aten("amax.default")(_reduce("ReduceMax"))
aten("amin.default")(_reduce("ReduceMin"))
aten("prod.dim_int")(_reduce("ReduceProd"))


@aten("sum.default", "mean.default", "prod.default")
def _reduce_all(cx: Ctx, x, dtype=None):
    op = {"aten.sum.default": "ReduceSum", "aten.mean.default": "ReduceMean", "aten.prod.default": "ReduceProd"}
    return _reduce(op[cx.op])(cx, x, None, False)


def _var_mean(cx: Ctx, x, dim, correction, keepdim) -> list[Value]:
    dt = cx.out_dtype
    x = cx.cast(x, dt)
    axes = cx.ints(_axes(cx, dim))
    mean = cx.emit("ReduceMean", x, axes, keepdims=1)
    dev = cx.emit("Sub", x, mean)
    total = cx.emit("ReduceSum", cx.emit("Mul", dev, dev), axes, keepdims=int(bool(keepdim)))
    count = cx.emit("Div", cx.emit("Size", x), cx.emit("Size", mean))  # elements per reduction
    n = cx.emit("Sub", cx.cast(count, dt), cx.const(1 if correction is None else correction, dt))
    return [cx.emit("Div", total, n), mean if keepdim else cx.emit("ReduceMean", x, axes, keepdims=0)]


@aten("var.correction")
def _var(cx: Ctx, x, dim=None, *, correction=None, keepdim=False):
    return _var_mean(cx, x, dim, correction, keepdim)[0]


@aten("var_mean.correction")
def _var_mean_op(cx: Ctx, x, dim=None, *, correction=None, keepdim=False):
    return _var_mean(cx, x, dim, correction, keepdim)


@aten("any.dim", "any.dims", "any.default")
def _any(cx: Ctx, x, dim=None, keepdim=False):
    return _any_value(cx, x, _axes(cx, dim), keepdim)


def _any_value(cx: Ctx, x: Value, axes: list[int], keepdim: bool) -> Value:
    """Whether any element is nonzero: a count of the nonzero ones (float32 counts never return to 0)."""
    nz = cx.emit("Cast", cx.cast(x, DType.BOOL), to=DType.F32.onnx)
    if not axes:
        return cx.cast(nz, DType.BOOL)
    return cx.cast(cx.emit("ReduceSum", nz, cx.ints(axes), keepdims=int(bool(keepdim))), DType.BOOL)


@aten("all.dim", "all.dims", "all.default")
def _all(cx: Ctx, x, dim=None, keepdim=False):
    return cx.emit("Not", _any_value(cx, cx.emit("Not", cx.cast(x, DType.BOOL)), _axes(cx, dim), keepdim))


def _min_max_dim(value_op: str, index_op: str):
    def conv(cx: Ctx, x, dim, keepdim=False):
        axis = _axes(cx, dim)[0]
        values = cx.emit(value_op, x, cx.ints([axis]), keepdims=int(bool(keepdim)))
        return [values, cx.emit(index_op, x, axis=axis, keepdims=int(bool(keepdim)))]

    return conv


aten("max.dim")(_min_max_dim("ReduceMax", "ArgMax"))
aten("min.dim")(_min_max_dim("ReduceMin", "ArgMin"))


def _arg(ir_op: str):
    def conv(cx: Ctx, x, dim=None, keepdim=False):
        if dim is None:  # over the flattened tensor
            flat = cx.emit("Reshape", x, cx.ints([-1]))
            out = cx.emit(ir_op, flat, axis=0, keepdims=0)
            return cx.emit("Reshape", out, cx.ints([1] * cx.rank(0))) if keepdim else out
        return cx.emit(ir_op, x, axis=_axes(cx, dim)[0], keepdims=int(bool(keepdim)))

    return conv


aten("argmax.default")(_arg("ArgMax"))
aten("argmin.default")(_arg("ArgMin"))


@aten("cumsum.default")
def _cumsum(cx: Ctx, x, dim, dtype=None):
    return cx.emit("CumSum", cx.cast(x, cx.out_dtype), cx.const(_axes(cx, dim)[0], I64))


# -------------------------------------------------------------------------------------------------
# creation
# -------------------------------------------------------------------------------------------------
def _fill(cx: Ctx, shape: Value, value) -> Value:
    if isinstance(value, Value):  # a SymInt fill value
        return cx.emit("Expand", cx.cast(value, cx.out_dtype), shape)
    return cx.emit("ConstantOfShape", shape, value=np.array([value], dtype=cx.out_dtype.np))


@aten("full.default")
def _full(cx: Ctx, size, fill_value, **_):
    return _fill(cx, cx.ints(size), fill_value)


@aten("full_like.default")
def _full_like(cx: Ctx, x, fill_value, **_):
    return _fill(cx, cx.emit("Shape", x), fill_value)


@aten("empty.memory_format", "empty_strided.default")
def _empty(cx: Ctx, size, *rest, **_):
    # contents unspecified in PyTorch; zeros here, so that results never depend on stale memory
    return _fill(cx, cx.ints(size), 0)


@aten("scalar_tensor.default")
def _scalar_tensor(cx: Ctx, value, **_):
    return cx.scalar(value, cx.out_dtype)


@aten("arange.default", "arange.start", "arange.start_step")
def _arange(cx: Ctx, *args, **kw):
    nums = [a for a in args if isinstance(a, int | float | Value)]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (*nums, 1) if len(nums) == 2 else nums[:3]
    dt = cx.out_dtype
    if not any(isinstance(a, Value) for a in (start, end, step)):
        return cx.const(np.arange(start, end, step).astype(dt.np), dt)
    return cx.emit("Range", cx.scalar(start, dt), cx.scalar(end, dt), cx.scalar(step, dt))


@aten("clone.default", "alias.default", "detach.default", "lift_fresh_copy.default", "contiguous.default")
def _identity(cx: Ctx, x, **_):
    return x


@aten("_to_copy.default", "to.dtype", "_to_dim_order_copy.default")
def _to_copy(cx: Ctx, x, *args, **_):
    return cx.cast(x, cx.out_dtype)


# -------------------------------------------------------------------------------------------------
# symbolic sizes (SymInts are 0-d int64 values), asserts, tuple items
# -------------------------------------------------------------------------------------------------
@aten("sym_size.int")
def _sym_size(cx: Ctx, x, dim):
    return cx.emit("Gather", cx.emit("Shape", x), cx.const(int(dim) % cx.rank(0), I64), axis=0)


@aten("sym_numel.default")
def _sym_numel(cx: Ctx, x):
    return cx.emit("Size", x)


def _sym_binary(ir_op: str):
    def conv(cx: Ctx, a, b):
        return cx.emit(ir_op, cx.scalar(a, I64), cx.scalar(b, I64))

    return conv


for _t, _ir in (("add", "Add"), ("sub", "Sub"), ("mul", "Mul"), ("pow", "Pow")):
    aten(f"operator.{_t}")(_sym_binary(_ir))
aten("torch.sym_max")(_sym_binary("Max"))
aten("torch.sym_min")(_sym_binary("Min"))


@aten("operator.floordiv")
def _sym_floordiv(cx: Ctx, a, b):
    x, y = cx.scalar(a, I64), cx.scalar(b, I64)
    return cx.emit("Div", cx.emit("Sub", x, _floor_mod(cx, x, y, I64)), y)


@aten("operator.mod")
def _sym_mod(cx: Ctx, a, b):
    return _floor_mod(cx, cx.scalar(a, I64), cx.scalar(b, I64), I64)


@aten("operator.neg")
def _sym_neg(cx: Ctx, a):
    return cx.emit("Neg", cx.scalar(a, I64))


@aten("torch.sym_not")
def _sym_not(cx: Ctx, a):
    return cx.emit("Not", cx.scalar(a, DType.BOOL))


@aten("_assert_scalar.default", "sym_constrain_range_for_size.default", "sym_constrain_range.default",
      "_assert_tensor_metadata.default", "_assert_async.msg")  # fmt: skip
def _assert(cx: Ctx, *args, **kw):
    """Checks PyTorch made while tracing (a size >= 2): the compiled model checks its input shapes itself."""
    return None


@aten("operator.getitem")
def _getitem(cx: Ctx, seq, i):
    item = seq[i]
    if item is None:
        src = cx.node.args[0]
        cx.unsupported(f"output {i} of {getattr(src, 'name', src)} is not computed by tensorforge (only the "
                       "op's main result is)")  # fmt: skip
    return item
