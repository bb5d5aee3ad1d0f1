"""ONNX Runtime's quantized operators (domain ``com.microsoft``), which onnxruntime.quantization writes in
its QOperator format next to the standard QLinearConv / QLinearMatMul:

* ``QGemm``: the exact integer product (``MatMulInteger``: the integer GEMM kernels), rescaled, plus the
  int32 bias, optionally requantized;
* ``QLinearAdd``, ``QLinearMul``, ``QLinearLeakyRelu``, ``QLinearSigmoid``, ``QLinearSoftmax``,
  ``QLinearConcat``, ``QLinearAveragePool``, ``QLinearGlobalAveragePool``: dequantize, the float op,
  requantize — elementwise arithmetic that fuses with its neighbours (these are memory-bound; their cost
  is the bytes, not the arithmetic).

Semantics follow ONNX Runtime's contrib-op documentation (docs/ContribOperators.md): zero points are
optional (0), scales are float32 scalars (per-tensor), outputs round half to even and saturate.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Value
from .onnx import Importer, converter
from .onnx_quant import requantize

MS = "com.microsoft"


def _emit1(imp: Importer, op: str, ins, name: str, attrs=None) -> Value:
    return imp.emit(op, list(ins), dict(attrs or {}), name)[0]


def _f32(imp: Importer, v: Value, name: str) -> Value:
    return v if v.type.dtype is DType.F32 else _emit1(imp, "Cast", [v], name, {"to": DType.F32.onnx})


def _per_tensor(imp: Importer, name: str, op: str, v: Value | None, what: str) -> None:
    if v is not None and v.type is not None and v.type.rank > 0 and int(np.prod(v.type.shape)) != 1:
        raise UnsupportedError(f"{node_context(imp.name, name, op)}: {what} must be a scalar (per-tensor "
                               f"quantization), got shape {list(v.type.shape)}")  # fmt: skip


def dequant(imp: Importer, name: str, op: str, x: Value, s: Value, zp: Value | None) -> Value:
    _per_tensor(imp, name, op, s, "a scale")
    _per_tensor(imp, name, op, zp, "a zero point")
    v = _f32(imp, x, name + "_xf")
    if zp is not None:
        v = _emit1(imp, "Sub", [v, _f32(imp, zp, name + "_zpf")], name + "_shift")
    return _emit1(imp, "Mul", [v, _f32(imp, s, name + "_sf")], name + "_dq")


def quant(imp: Importer, name: str, n, y: Value, s: Value, zp: Value | None, like: Value) -> list[Value]:
    """``y`` requantized to the zero point's type (or ``like``'s when there is none) under the node's outputs."""
    qdt = zp.type.dtype if zp is not None else like.type.dtype
    return requantize(imp, y, s, zp, qdt, name, list(n.output))


def _opt(inputs, i: int) -> Value | None:
    return inputs[i] if len(inputs) > i else None


def _binary(op: str):
    def conv(imp: Importer, name, n, inputs, attrs):
        a, a_s, a_zp, b, b_s, b_zp, c_s = inputs[:7]
        c_zp = _opt(inputs, 7)
        y = _emit1(imp, op, [dequant(imp, name + "_a", "QLinear" + op, a, a_s, a_zp),
                             dequant(imp, name + "_b", "QLinear" + op, b, b_s, b_zp)], name + "_f")  # fmt: skip
        return quant(imp, name, n, y, c_s, c_zp, a)

    return conv


converter("QLinearAdd", domain=MS)(_binary("Add"))
converter("QLinearMul", domain=MS)(_binary("Mul"))


def _unary(fn):
    def conv(imp: Importer, name, n, inputs, attrs):
        x, x_s, x_zp, y_s = inputs[:4]
        y_zp = _opt(inputs, 4)
        y = fn(imp, name, dequant(imp, name, n.op_type, x, x_s, x_zp), attrs)
        return quant(imp, name, n, y, y_s, y_zp, x)

    return conv


converter("QLinearLeakyRelu", domain=MS)(
    _unary(lambda imp, name, v, a: _emit1(imp, "LeakyRelu", [v], name + "_f", {"alpha": float(a.get("alpha", 0.01))})))
converter("QLinearSigmoid", domain=MS)(_unary(lambda imp, name, v, a: _emit1(imp, "Sigmoid", [v], name + "_f")))
converter("QLinearGlobalAveragePool", domain=MS)(
    _unary(lambda imp, name, v, a: _pool(imp, name, v, a, "GlobalAveragePool", {})))


def _channels_last(imp: Importer, name: str, v: Value, attrs, back: bool) -> Value:
    """NHWC <-> NCHW around a pool that ONNX defines on NCHW."""
    if not attrs.get("channels_last", 0):
        return v
    r = v.type.rank
    perm = [0, *range(2, r), 1] if back else [0, r - 1, *range(1, r - 1)]
    return _emit1(imp, "Transpose", [v], name + ("_nhwc" if back else "_nchw"), {"perm": perm})


def _pool(imp: Importer, name: str, v: Value, attrs, op: str, pool_attrs) -> Value:
    y = _emit1(imp, op, [_channels_last(imp, name, v, attrs, False)], name + "_f", pool_attrs)
    return _channels_last(imp, name, y, attrs, True)


@converter("QLinearAveragePool", domain=MS)
def _avg_pool(imp: Importer, name, n, inputs, attrs):
    keep = {k: v for k, v in attrs.items() if k in ("auto_pad", "ceil_mode", "count_include_pad", "kernel_shape",
                                                      "pads", "strides")}  # fmt: skip
    return _unary(lambda imp_, nm, v, a: _pool(imp_, nm, v, a, "AveragePool", keep))(imp, name, n, inputs, attrs)


@converter("QLinearSoftmax", domain=MS)
def _softmax(imp: Importer, name, n, inputs, attrs):
    axis = int(attrs.get("axis", -1))
    if int(attrs.get("opset", 13)) < 13:  # the old Softmax: over the flattened trailing dims from axis
        raise UnsupportedError(f"{node_context(imp.name, name, 'QLinearSoftmax')}: the opset<13 (flattening) form "
                               "is not supported")  # fmt: skip
    return _unary(lambda imp_, nm, v, a: _emit1(imp_, "Softmax", [v], nm + "_f", {"axis": axis}))(
        imp, name, n, inputs, attrs)


@converter("QLinearConcat", domain=MS)
def _concat(imp: Importer, name, n, inputs, attrs):
    y_s, y_zp, rest = inputs[0], inputs[1], inputs[2:]
    if len(rest) % 3 or not rest:
        raise UnsupportedError(f"{node_context(imp.name, name, 'QLinearConcat')}: expected (X, scale, zero point) "
                               f"triples after Y_scale and Y_zero_point, got {len(rest)} inputs")  # fmt: skip
    parts = [dequant(imp, f"{name}_in{i}", "QLinearConcat", rest[3 * i], rest[3 * i + 1], rest[3 * i + 2])
             for i in range(len(rest) // 3)]  # fmt: skip
    y = _emit1(imp, "Concat", parts, name + "_f", {"axis": int(attrs["axis"])})
    return quant(imp, name, n, y, y_s, y_zp, rest[0])


@converter("QGemm", domain=MS)
def _qgemm(imp: Importer, name, n, inputs, attrs):
    a, a_s, a_zp, b, b_s, b_zp = inputs[:6]
    c, y_s, y_zp = _opt(inputs, 6), _opt(inputs, 7), _opt(inputs, 8)
    op = "QGemm"
    _per_tensor(imp, name, op, a_s, "A's scale")
    if attrs.get("transA", 0):
        a = _emit1(imp, "Transpose", [a], name + "_at", {"perm": [1, 0]})
    if attrs.get("transB", 0):
        if b.is_const:
            b = imp.const(np.ascontiguousarray(b.const.T), name + "_bt")
        else:
            b = _emit1(imp, "Transpose", [b], name + "_bt", {"perm": [1, 0]})
    nn = b.type.shape[1]
    acc = _emit1(imp, "MatMulInteger", [a, b, a_zp, b_zp], name + "_int")
    scale = _emit1(imp, "Mul", [_f32(imp, a_s, name + "_as"), _f32(imp, b_s, name + "_bs")], name + "_s")
    if float(attrs.get("alpha", 1.0)) != 1.0:
        scale = _emit1(imp, "Mul", [scale, imp.const(np.array(attrs["alpha"], np.float32))], name + "_alpha")
    if b_s.type.rank == 1 and b_s.type.shape[0] != 1 and b_s.type.shape[0] != nn:
        raise UnsupportedError(f"{node_context(imp.name, name, op)}: B's scale has {b_s.type.shape[0]} entries "
                               f"for {nn} columns")  # fmt: skip
    y = _f32(imp, acc, name + "_accf")
    if c is not None:  # int32 bias in units of a_scale * b_scale (alpha included, as ORT applies it)
        y = _emit1(imp, "Add", [y, _f32(imp, c, name + "_cf")], name + "_bias")
    y = _emit1(imp, "Mul", [y, scale], name + "_real" if y_s is not None else name)
    if y_s is None:
        return imp.emit("Identity", [y], {}, name, list(n.output))
    return quant(imp, name, n, y, y_s, y_zp, a)
