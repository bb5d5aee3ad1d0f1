"""Quantized ONNX in QDQ form, imported as integer kernels.

onnxruntime.quantization (and most other quantizers) write an int8 model as the float model with
``DequantizeLinear`` in front of every quantized operand and ``QuantizeLinear`` after every quantized
result::

    x_q ─ DQ ─┐                                     x_q ──────────┐
    w_q ─ DQ ─┼─ Conv ─ Q ─ y_q        becomes      w_q (const) ──┼─ ConvInteger ─ ×(sx·sw) + b ─ Q ─ y_q
    b_q ─ DQ ─┘                                     x_zp, w_zp ───┘       (int32)    (float epilogue)

Imported op by op, the DequantizeLinears would turn the weights back into float constants and the
Conv would run in float: correct, but slower than the float model. Here a Conv / MatMul / Gemm whose
operands come from DequantizeLinear nodes (per-tensor activations, per-tensor or per-output-channel
weights) is imported as the exact integer product (``ConvInteger`` / ``MatMulInteger``: the integer
kernels of ``lower/``) followed by the float rescale and bias; the following QuantizeLinear is ordinary
elementwise arithmetic, so the whole ``rescale -> bias -> activation -> requantize`` chain fuses into the
integer kernel's epilogue and the int8 result is written directly. The DequantizeLinears left without
users are removed as dead code.

Patterns this does not recognize (blocked quantization, int16/int4 types, float16 scales, a transposed
A of Gemm) import as before: dequantized arithmetic, correct and float.

The fold is registered per op type (``qdq_fold``) and consulted by the importer before the op's own
converter; a fold returns ``None`` to decline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.dtype import DType
from ..ir.graph import Value
from .onnx import DEFAULT_DOMAINS, Importer, qdq_fold

_INT8 = (DType.U8, DType.I8)


@dataclass(frozen=True)
class Dequant:
    """``(q - zp) * scale`` as a DequantizeLinear node of the model states it."""

    q: Value  # the integer tensor
    scale: np.ndarray  # float32: scalar or 1-D along ``axis``
    zp: Value | None  # constant, same shape as scale
    axis: int  # normalized to q's rank

    @property
    def per_tensor(self) -> bool:
        return self.scale.size == 1

    def scale_along(self, n: int) -> np.ndarray | None:
        """The scale as a length-``n`` float64 vector (per tensor broadcast), or None if it does not fit."""
        s = self.scale.astype(np.float64).reshape(-1)
        if s.size == 1:
            return np.full(n, s[0])
        return s if s.size == n else None


def dequant_source(imp: Importer, name: str) -> Dequant | None:
    """The DequantizeLinear that produces tensor ``name``, if it is a plain int8/uint8 one (constant
    float32 scale and zero point, per tensor or per axis, no blocks)."""
    n = imp.producers.get(name)
    if n is None or n.op_type != "DequantizeLinear" or n.domain not in DEFAULT_DOMAINS:
        return None
    attrs = {a.name: a for a in n.attribute}
    if "block_size" in attrs and attrs["block_size"].i != 0:
        return None
    if "output_dtype" in attrs and attrs["output_dtype"].i not in (0, DType.F32.onnx):
        return None
    q = imp.env.get(n.input[0])
    scale = imp.env.get(n.input[1])
    zp = imp.env.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if q is None or q.type is None or q.type.dtype not in _INT8:
        return None
    if scale is None or not scale.is_const or scale.const.dtype != np.float32 or scale.const.ndim > 1:
        return None
    if zp is not None and (not zp.is_const or zp.const.shape != scale.const.shape):
        return None
    if not np.all(np.isfinite(scale.const)) or np.any(scale.const <= 0):
        return None  # a degenerate scale stays float: the dequantized arithmetic reproduces it exactly
    rank = q.type.rank
    axis = attrs["axis"].i if "axis" in attrs else 1
    if scale.const.size > 1 and not -rank <= axis < rank:
        return None
    return Dequant(q, scale.const, zp, axis % rank if rank else 0)


def _emit1(imp: Importer, op: str, ins, name: str, attrs=None) -> Value:
    return imp.emit(op, list(ins), dict(attrs or {}), name)[0]


def _bias(imp: Importer, name: str, n, idx: int, c: int, shape: tuple[int, ...]) -> Value | None:
    """Input ``idx`` of ``n`` as a float bias of ``c`` channels laid out as ``shape``: a float constant or
    the dequantized int32 constant quantizers write (``b_q * x_scale * w_scale``). None: no bias; raises
    LookupError when the bias is something else (a run-time tensor), so that the fold declines."""
    if len(n.input) <= idx or not n.input[idx]:
        return None
    b = imp.env.get(n.input[idx])
    if b is not None and b.is_const and b.const.dtype == np.float32 and b.const.size in (1, c):
        arr = b.const.astype(np.float64)
    else:
        d = dequant_source_int32(imp, n.input[idx])
        if d is None:
            raise LookupError
        arr = d
    if arr.size not in (1, c):
        raise LookupError
    return imp.const(np.broadcast_to(arr.reshape(-1), (c,)).astype(np.float32).reshape(shape), name + "_bias")


def _through_identity(imp: Importer, name: str) -> str:
    """The tensor an Identity chain ending at ``name`` copies (onnxruntime.quantization writes a bias shared
    by several nodes as ``Identity(DequantizeLinear(b_q))``)."""
    n = imp.producers.get(name)
    while n is not None and n.op_type == "Identity" and n.domain in DEFAULT_DOMAINS:
        name = n.input[0]
        n = imp.producers.get(name)
    return name


def dequant_source_int32(imp: Importer, name: str) -> np.ndarray | None:
    """The float value of a DequantizeLinear of an int32 constant (a quantized bias), else None."""
    n = imp.producers.get(_through_identity(imp, name))
    if n is None or n.op_type != "DequantizeLinear" or n.domain not in DEFAULT_DOMAINS:
        return None
    vals = [imp.env.get(i) if i else None for i in n.input]
    q, s = vals[0], vals[1]
    zp = vals[2] if len(vals) > 2 else None
    if q is None or not q.is_const or q.const.dtype != np.int32 or s is None or not s.is_const:
        return None
    zero = zp.const.astype(np.float64) if zp is not None and zp.is_const else 0.0
    return ((q.const.astype(np.float64) - zero) * s.const.astype(np.float64)).reshape(-1)


def _zp_input(d: Dequant) -> Value | None:
    if d.zp is None:
        return None
    if not np.any(d.zp.const):
        return None  # a zero zero point: the kernels need not correct for it
    return d.zp


def _rescaled(imp: Importer, name: str, n, acc: Value, scale: np.ndarray, bias: Value | None) -> list[Value]:
    """``float(acc) * scale (+ bias)`` under the node's output names."""
    y = _emit1(imp, "Cast", [acc], name + "_accf", {"to": DType.F32.onnx})
    s = imp.const(scale.astype(np.float32), name + "_scale")
    if bias is None:
        return imp.emit("Mul", [y, s], {}, name, list(n.output))
    y = _emit1(imp, "Mul", [y, s], name + "_rescale")
    return imp.emit("Add", [y, bias], {}, name, list(n.output))


@qdq_fold("Conv")
def _conv(imp: Importer, name, n, inputs, attrs):
    x = dequant_source(imp, n.input[0])
    w = dequant_source(imp, n.input[1])
    if x is None or w is None or not w.q.is_const or not x.per_tensor or w.q.type.rank < 3:
        return None
    c = w.q.type.shape[0]
    if not w.per_tensor and w.axis != 0:
        return None
    ws = w.scale_along(c)
    if ws is None:
        return None
    shape = (1, c) + (1,) * (w.q.type.rank - 2)
    try:
        bias = _bias(imp, name, n, 2, c, shape)
    except LookupError:
        return None
    acc = _emit1(imp, "ConvInteger", [x.q, w.q, _zp_input(x), _zp_input(w)], name + "_int", attrs)
    scale = (float(x.scale.reshape(-1)[0]) * ws).reshape(shape)
    return _rescaled(imp, name, n, acc, scale, bias)


@qdq_fold("MatMul")
def _matmul(imp: Importer, name, n, inputs, attrs):
    a = dequant_source(imp, n.input[0])
    b = dequant_source(imp, n.input[1])
    if a is None or b is None or not a.per_tensor or b.q.type.rank < 1:
        return None
    nn = b.q.type.shape[-1]
    if not b.per_tensor and (b.q.type.rank != 2 or b.axis != 1 or not isinstance(nn, int)):
        return None
    if b.per_tensor:
        scale = np.array(float(a.scale.reshape(-1)[0]) * float(b.scale.reshape(-1)[0]))
    else:
        scale = float(a.scale.reshape(-1)[0]) * b.scale_along(nn)
    acc = _emit1(imp, "MatMulInteger", [a.q, b.q, _zp_input(a), _zp_input(b)], name + "_int")
    return _rescaled(imp, name, n, acc, scale, None)


@qdq_fold("Gemm")
def _gemm(imp: Importer, name, n, inputs, attrs):
    a = dequant_source(imp, n.input[0])
    b = dequant_source(imp, n.input[1])
    if a is None or b is None or not b.q.is_const or not a.per_tensor or attrs.get("transA", 0):
        return None
    if a.q.type.rank != 2 or b.q.type.rank != 2:
        return None
    trans_b = bool(attrs.get("transB", 0))
    bq, bzp = b.q.const, b.zp
    n_axis = 0 if trans_b else 1
    nn = bq.shape[n_axis]
    if not b.per_tensor and b.axis != n_axis:
        return None
    bs = b.scale_along(nn)
    if bs is None:
        return None
    if trans_b:
        bq = np.ascontiguousarray(bq.T)
    b_in = imp.const(bq, name + "_wq")
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    try:
        bias = _bias(imp, name, n, 2, nn, (1, nn))
    except LookupError:
        return None
    if bias is not None and beta != 1.0:
        bias = imp.const((bias.const.astype(np.float64) * beta).astype(np.float32), name + "_bias_beta")
    acc = _emit1(imp, "MatMulInteger", [a.q, b_in, _zp_input(a), _zp_input(b) if bzp is not None else None],
                 name + "_int")  # fmt: skip
    scale = alpha * float(a.scale.reshape(-1)[0]) * bs
    return _rescaled(imp, name, n, acc, scale, bias)
