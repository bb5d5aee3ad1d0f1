"""Dynamic quantization for matmul-heavy models (transformers), in the form
``onnxruntime.quantization.quantize_dynamic`` writes: int8 weights stored quantized (symmetric, per column
of N by default), activations quantized at run time::

    a -> DynamicQuantizeLinear -> (a_quantized uint8, a_scale, a_zero_point)
    MatMulInteger(a_quantized, W_quantized, a_zero_point, W_zero_point) -> int32
    Cast(float) * (a_scale * W_scale)  [* alpha] [+ beta * C]  -> the node's output

MatMul and Gemm (transA 0) with a constant 2-D float32 weight are quantized; everything else stays float,
and the report says why. No calibration is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import TensorforgeError
from . import onnx_graph as og
from .quantize import QuantizationReport, _stamp, select_nodes, weight_params


def _weight(n: onnx.NodeProto, consts: dict) -> tuple[np.ndarray | None, str | None]:
    """The node's weight as [K, N], or the reason it cannot be quantized dynamically."""
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    if len(n.input) < 2 or n.input[1] not in consts:
        return None, "its weight (input 1) is not a constant"
    w = consts[n.input[1]]
    if w.ndim != 2 or w.dtype != np.float32:
        return None, f"its weight is {w.dtype} of rank {w.ndim}, not a 2-D float32 matrix"
    if n.op_type == "Gemm":
        if attrs.get("transA", 0):
            return None, "Gemm with transA=1"
        if attrs.get("transB", 0):
            w = w.T
    return np.ascontiguousarray(w), None


def quantize_dynamic(proto: onnx.ModelProto, name: str, *, per_channel: bool = True, keep_first: bool = False,
                     keep_last: bool = False, exclude: Iterable[str] = ()
                     ) -> tuple[onnx.ModelProto, QuantizationReport]:  # fmt: skip
    """``proto`` (a private copy: it is changed) with its MatMul/Gemm weights int8 and activations quantized
    at run time."""
    report = QuantizationReport(name, "dynamic", None, "uint8")
    proto = og.upgrade_opset(proto, name)
    if og.opset(proto) < 11:  # DynamicQuantizeLinear
        raise TensorforgeError(f"model '{name}': dynamic quantization needs opset 11 or newer")
    g = proto.graph
    consts, types = og.constants(proto), og.elem_types(proto)
    sel = select_nodes(proto, name, consts, types, keep_first=keep_first, keep_last=keep_last, exclude=exclude,
                       ops=("MatMul", "Gemm"))  # fmt: skip
    report.kept = list(sel.kept)
    names = og.Names(proto)
    inits: dict[str, np.ndarray] = {}
    chosen = {}
    for n in sel.nodes:
        w, why = _weight(n, consts)
        if why:
            report.kept.append((og.node_label(n), n.op_type, why))
        else:
            chosen[id(n)] = w
    if not chosen:
        raise TensorforgeError(f"model '{name}': nothing to quantize dynamically: "
                               + "; ".join(f"{n} ({op}): {why}" for n, op, why in report.kept))  # fmt: skip
    quantized_input: dict[str, tuple[str, str, str]] = {}
    wcache: dict[str, tuple[str, str, str]] = {}
    body: list[onnx.NodeProto] = []
    for n in g.node:
        if id(n) not in chosen:
            body.append(n)
            continue
        label = og.node_label(n)
        a = n.input[0]
        if a not in quantized_input:
            outs = tuple(names.take(f"{a}_{s}") for s in ("quantized", "scale", "zero_point"))
            body.append(helper.make_node("DynamicQuantizeLinear", [a], list(outs),
                                         name=names.take(f"{a}_DynamicQuantizeLinear")))  # fmt: skip
            quantized_input[a] = outs
        aq, a_s, a_z = quantized_input[a]
        wkey = n.input[1] + ("_T" if n.op_type == "Gemm" and _attr(n, "transB", 0) else "")
        if wkey not in wcache:
            q, scale = weight_params(chosen[id(n)], 1 if per_channel else None)
            qn, sn, zn = (names.take(f"{wkey}_{s}") for s in ("quantized", "scale", "zero_point"))
            inits[qn], inits[sn], inits[zn] = q, np.asarray(scale, np.float32), np.zeros(np.shape(scale), np.int8)
            wcache[wkey] = (qn, sn, zn)
        wq, w_s, w_z = wcache[wkey]
        out = n.output[0]
        y_int, y_f, s = (names.take(f"{out}_{s}") for s in ("MatMulInteger_Output", "Cast_Output", "scale_Output"))
        body += [
            helper.make_node("MatMulInteger", [aq, wq, a_z, w_z], [y_int], name=names.take(f"{label}_MatMulInteger")),
            helper.make_node("Cast", [y_int], [y_f], name=names.take(f"{label}_Cast"), to=TensorProto.FLOAT),
            helper.make_node("Mul", [a_s, w_s], [s], name=names.take(f"{label}_scale_Mul")),
        ]  # fmt: skip
        alpha, beta = float(_attr(n, "alpha", 1.0)), float(_attr(n, "beta", 1.0))
        bias = n.input[2] if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2] else None
        steps: list[tuple[str, str]] = []
        if alpha != 1.0:
            an = names.take(f"{label}_alpha")
            inits[an] = np.array(alpha, np.float32)
            steps.append(("Mul", an))
        if bias is not None and beta != 1.0 and bias not in consts:
            steps.append(("Mul_beta", bias))  # a computed C: scaled, then added
        elif bias is not None:
            if beta != 1.0:
                bn = names.take(f"{bias}_beta")
                inits[bn] = (consts[bias] * np.float32(beta)).astype(np.float32)
                bias = bn
            steps.append(("Add", bias))
        cur = names.take(f"{out}_rescaled") if steps else out
        body.append(helper.make_node("Mul", [y_f, s], [cur], name=names.take(f"{label}_rescale")))
        for i, (op, operand) in enumerate(steps):
            dst = out if i == len(steps) - 1 else names.take(f"{out}_{op}")
            if op == "Mul_beta":
                bn = names.take(f"{label}_beta")
                inits[bn] = np.array(beta, np.float32)
                cb = names.take(f"{operand}_times_beta")
                body.append(helper.make_node("Mul", [operand, bn], [cb], name=names.take(f"{label}_beta_Mul")))
                op, operand = "Add", cb
            body.append(helper.make_node(op, [cur, operand], [dst], name=names.take(f"{label}_{op}")))
            cur = dst
        report.quantized.append((label, n.op_type))
    del g.node[:]
    g.node.extend(body)
    og.set_initializers(proto, inits)
    og.remove_unused_initializers(proto)
    _stamp(proto, report)
    return proto, report


def _attr(n: onnx.NodeProto, name: str, default):
    return next((helper.get_attribute_value(a) for a in n.attribute if a.name == name), default)


__all__ = ["quantize_dynamic"]
