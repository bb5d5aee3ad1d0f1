"""Quantization ops, imported as the arithmetic they stand for (so they fuse with their neighbours):

* DequantizeLinear: ``(x - zero_point) * scale`` (per tensor, per axis, or per block along an axis);
* QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)`` to the zero point's type;
* MatMulInteger / ConvInteger: the IR ops of the same name (``ops/quant.py``), lowered to the int8
  kernels (``lower/qgemm.py``);
* QLinearMatMul / QLinearConv: that integer op (plus the int32 bias), then, elementwise and so fused into
  its epilogue, the float32 rescale by ``a_scale * b_scale / y_scale`` and the requantization.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedError, node_context
from ..ir.dtype import DType
from ..ir.graph import Value
from .onnx import Importer, converter

_QTYPES = (DType.I8, DType.U8, DType.I16, DType.U16, DType.I32)


def _emit1(imp: Importer, op: str, ins, name: str, attrs=None) -> Value:
    return imp.emit(op, list(ins), dict(attrs or {}), name)[0]


def _cast(imp: Importer, v: Value, dt: DType, name: str) -> Value:
    if v.type.dtype is dt:
        return v
    return _emit1(imp, "Cast", [v], name, {"to": dt.onnx})


def _along(imp: Importer, p: Value, x: Value, axis: int, block: int, name: str) -> Value:
    """Scale or zero point ``p`` laid out to broadcast against ``x``: per tensor, per axis (1-D along
    ``axis``) or per block (``x``'s shape with ``axis`` divided by ``block``)."""
    rank = x.type.rank
    if p.type.rank == 0 or (p.type.rank == 1 and p.type.shape[0] == 1 and block == 0):
        return p
    axis %= rank
    if block:
        n = x.type.shape[axis]
        idx = imp.const((np.arange(n) // block).astype(np.int64), name + "_blocks")
        return _emit1(imp, "Gather", [p, idx], name + "_expand", {"axis": axis})
    if p.type.rank == 1 and rank > 1:
        shape = [1] * rank
        shape[axis] = p.type.shape[0]
        return _emit1(imp, "Reshape", [p, imp.const(np.array(shape, np.int64))], name + "_axis")
    return p


def _zero_point(imp: Importer, inputs, i: int, x: Value, axis: int, block: int, name: str) -> Value | None:
    zp = inputs[i] if len(inputs) > i else None
    return None if zp is None else _along(imp, zp, x, axis, block, name)


def _check_qtype(imp: Importer, name: str, op: str, dt: DType) -> None:
    if dt not in _QTYPES:
        raise UnsupportedError(f"{node_context(imp.name, name, op)}: quantized type {dt} is not supported "
                               f"(supported: {', '.join(str(d) for d in _QTYPES)})")  # fmt: skip


@converter("DequantizeLinear")
def _dequantize(imp: Importer, name, n, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    _check_qtype(imp, name, "DequantizeLinear", x.type.dtype)
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    out_dt = DType.from_onnx(int(attrs["output_dtype"])) if attrs.get("output_dtype") else scale.type.dtype
    cdt = DType.F32 if out_dt is not DType.F64 else DType.F64
    v = _cast(imp, x, cdt, name + "_x")
    zp = _zero_point(imp, inputs, 2, x, axis, block, name + "_zp")
    if zp is not None:
        v = _emit1(imp, "Sub", [v, _cast(imp, zp, cdt, name + "_zpf")], name + "_shift")
    s = _cast(imp, _along(imp, scale, x, axis, block, name + "_scale"), cdt, name + "_scalef")
    if out_dt is cdt:
        return imp.emit("Mul", [v, s], {}, name, list(n.output))
    y = _emit1(imp, "Mul", [v, s], name + "_mul")
    return imp.emit("Cast", [y], {"to": out_dt.onnx}, name, list(n.output))


def requantize(imp: Importer, y: Value, scale: Value, zp: Value | None, qdt: DType, name: str, out_names) -> list:
    """saturate(round_half_even(y / scale) + zp) as ``qdt`` (y, scale float32 or float64)."""
    cdt = y.type.dtype
    q = _emit1(imp, "Round", [_emit1(imp, "Div", [y, _cast(imp, scale, cdt, name + "_sf")], name + "_div")],
               name + "_round")  # fmt: skip
    if zp is not None:
        q = _emit1(imp, "Add", [q, _cast(imp, zp, cdt, name + "_zpf")], name + "_zp")
    info = np.iinfo(qdt.np)
    lo, hi = imp.const(np.array(info.min, cdt.np)), imp.const(np.array(info.max, cdt.np))
    q = _emit1(imp, "Clip", [q, lo, hi], name + "_sat")
    return imp.emit("Cast", [q], {"to": qdt.onnx}, name, out_names)


@converter("QuantizeLinear")
def _quantize(imp: Importer, name, n, inputs, attrs):
    x, scale = inputs[0], inputs[1]
    zp_in = inputs[2] if len(inputs) > 2 else None
    if zp_in is not None:
        qdt = zp_in.type.dtype
    elif attrs.get("output_dtype"):
        qdt = DType.from_onnx(int(attrs["output_dtype"]))
    else:
        qdt = DType.U8
    _check_qtype(imp, name, "QuantizeLinear", qdt)
    axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
    cdt = DType.F64 if x.type.dtype is DType.F64 else DType.F32
    xf = _cast(imp, x, cdt, name + "_xf")
    s = _along(imp, scale, x, axis, block, name + "_scale")
    zp = _zero_point(imp, inputs, 2, x, axis, block, name + "_zp")
    return requantize(imp, xf, s, zp, qdt, name, list(n.output))


def _opt(inputs, i: int) -> Value | None:
    return inputs[i] if len(inputs) > i else None


@converter("MatMulInteger")
def _matmul_integer(imp: Importer, name, n, inputs, attrs):
    return imp.emit("MatMulInteger", [inputs[0], inputs[1], _opt(inputs, 2), _opt(inputs, 3)], {}, name,
                    list(n.output))  # fmt: skip


@converter("ConvInteger")
def _conv_integer(imp: Importer, name, n, inputs, attrs):
    return imp.emit("ConvInteger", [inputs[0], inputs[1], _opt(inputs, 2), _opt(inputs, 3)], dict(attrs), name,
                    list(n.output))  # fmt: skip


def _requantize_acc(imp: Importer, name, acc: Value, a_scale, b_scale, y_scale, y_zp, b_axis: int, out_names):
    """``saturate(round_half_even(acc * (a_scale * b_scale / y_scale)) + y_zp)``: one float32 multiply of the
    int32 accumulator by a combined scale (folded at import when the scales are constants, per output
    column/channel along ``b_axis`` of acc when b_scale is a vector), then the rounding and saturation; all
    elementwise, so it fuses into the integer kernel's epilogue."""
    f32 = DType.F32
    bs = _cast(imp, _along(imp, b_scale, acc, b_axis, 0, name + "_bsa"), f32, name + "_bs")
    s = _emit1(imp, "Mul", [_cast(imp, a_scale, f32, name + "_as"), bs], name + "_s")
    s = _emit1(imp, "Div", [s, _cast(imp, y_scale, f32, name + "_ys")], name + "_scale")
    y = _emit1(imp, "Mul", [_cast(imp, acc, f32, name + "_accf"), s], name + "_real")
    q = _emit1(imp, "Round", [y], name + "_round")
    qdt = y_zp.type.dtype if y_zp is not None else DType.U8
    if y_zp is not None:
        q = _emit1(imp, "Add", [q, _cast(imp, y_zp, f32, name + "_zpf")], name + "_zp")
    info = np.iinfo(qdt.np)
    lo, hi = imp.const(np.array(info.min, np.float32)), imp.const(np.array(info.max, np.float32))
    q = _emit1(imp, "Clip", [q, lo, hi], name + "_sat")
    return imp.emit("Cast", [q], {"to": qdt.onnx}, name, out_names)


@converter("QLinearMatMul")
def _qlinear_matmul(imp: Importer, name, n, inputs, attrs):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (_opt(inputs, i) for i in range(8))
    acc = _emit1(imp, "MatMulInteger", [a, b, a_zp, b_zp], name + "_acc")
    return _requantize_acc(imp, name, acc, a_scale, b_scale, y_scale, y_zp, acc.type.rank - 1, list(n.output))


@converter("QLinearConv")
def _qlinear_conv(imp: Importer, name, n, inputs, attrs):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (_opt(inputs, i) for i in range(9))
    acc = _emit1(imp, "ConvInteger", [x, w, x_zp, w_zp], name + "_acc", dict(attrs))
    if bias is not None:  # int32 bias in units of x_scale * w_scale: added exactly, in int32
        acc = _emit1(imp, "Add", [acc, _along(imp, bias, acc, 1, 0, name + "_b")], name + "_bias")
    return _requantize_acc(imp, name, acc, x_scale, w_scale, y_scale, y_zp, 1, list(n.output))
