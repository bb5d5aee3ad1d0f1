"""Post-training static quantization to QDQ ONNX, in the form ``onnxruntime.quantization.quantize_static``
writes (so ONNX Runtime runs it and tensorforge's importer folds it into integer kernels):

* **weights** of Conv, MatMul and Gemm: symmetric int8, per output channel (Conv axis 0, MatMul/Gemm along N),
  values in [-127, 127]: ``W_quantized`` (int8), ``W_scale``, ``W_zero_point`` (zeros) and a
  ``W_DequantizeLinear`` node;
* **biases** (Conv's, Gemm's C of shape [N] with beta 1): int32 with scale ``x_scale * w_scale`` and zero
  point 0; one beyond int32's range stays float (the report says so);
* **activations**, every non-constant input and the output of each quantized op: per tensor, ``uint8``
  asymmetric (the default; zero point in [0, 255]) or ``int8`` symmetric (zero point 0), a
  ``t_QuantizeLinear`` / ``t_DequantizeLinear`` pair that every consumer of ``t`` then reads;
* a Relu or Clip(0, max) right after a quantized op, with uint8 activations, is **absorbed**: quantizing
  its output range [0, max] clamps exactly as it did (ONNX Runtime does the same); with symmetric
  activations it stays and the pair follows it;
* tensors reached from a quantized tensor only through value-preserving ops (MaxPool, Reshape, Flatten,
  Transpose, Squeeze, Unsqueeze, Identity) **share** its scale and zero point instead of being calibrated;
  other tensors (the inputs of a Concat, say) get their own;
* a **zero-range** activation (all calibration values 0) gets scale 1.0 and zero point 0 (as ONNX Runtime):
  zero stays exact and no scale is ever 0, NaN or infinite; a weight channel of zeros likewise.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import TensorforgeError
from . import onnx_graph as og

ACTIVATION_TYPES = ("uint8", "int8")
INT32_MAX = 2**31 - 1
ZERO_RANGE_SCALE = 1.0


@dataclass(frozen=True)
class QuantOp:
    """How an op is quantized: which inputs are activations (when not constant), which is the weight (when
    constant) with its per-channel axis (from the node's attributes and the weight's rank), which the bias."""

    activations: tuple[int, ...]
    weight: int | None
    axis: Callable[[dict, int], int | None]
    bias: int | None = None


QUANT_OPS: dict[str, QuantOp] = {
    "Conv": QuantOp((0,), 1, lambda a, rank: 0, bias=2),
    "MatMul": QuantOp((0, 1), 1, lambda a, rank: rank - 1 if rank >= 2 else None),
    "Gemm": QuantOp((0, 1), 1, lambda a, rank: 0 if a.get("transB", 0) else 1, bias=2),
}


def _clip_from_zero(n: onnx.NodeProto, consts: dict) -> bool:
    lo = consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None
    hi = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    return lo is not None and float(lo) == 0.0 and (len(n.input) < 3 or not n.input[2] or hi is not None)


# activations that a uint8 Q with range [0, max] reproduces exactly (op -> condition on the node)
ABSORBED: dict[str, Callable[[onnx.NodeProto, dict], bool]] = {"Relu": lambda n, c: True, "Clip": _clip_from_zero}
# ops whose output values are some of their input's values: they share its quantization parameters
SAME_RANGE = frozenset({"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity"})


@dataclass
class QuantizationReport:
    """What ``quantize`` did: the nodes quantized and kept in float (with why), the activation ranges and
    parameters, and notes."""

    model: str
    mode: str  # "static" or "dynamic"
    method: str | None = None
    activations: str = "uint8"
    quantized: list[tuple[str, str]] = field(default_factory=list)  # (node, op)
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # (node, op, reason)
    tensors: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)  # lo, hi, scale, zp
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        how = f"static, {self.method} calibration, {self.activations} activations" if self.mode == "static" else \
            "dynamic (activations quantized at run time)"  # fmt: skip
        lines = [f"quantized model '{self.model}' to int8 ({how}): {len(self.quantized)} node"
                 f"{'s' * (len(self.quantized) != 1)} int8, {len(self.kept)} kept in float"]  # fmt: skip
        ops: dict[str, int] = {}
        for _, op in self.quantized:
            ops[op] = ops.get(op, 0) + 1
        if ops:
            lines.append("  int8: " + ", ".join(f"{c} {op}" for op, c in sorted(ops.items())))
        lines += [f"  float: {n} ({op}): {why}" for n, op, why in self.kept]
        lines += [f"  note: {t}" for t in self.notes]
        return "\n".join(lines)


def activation_params(lo: float, hi: float, kind: str) -> tuple[np.float32, np.integer]:
    """Scale and zero point of a per-tensor activation with range [lo, hi] (widened to include 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if kind == "uint8":
        scale = np.float32((hi - lo) / 255.0)
        if not (np.isfinite(scale) and scale > 1e-30):
            return np.float32(ZERO_RANGE_SCALE), np.uint8(0)
        return scale, np.uint8(np.clip(np.rint(-lo / float(scale)), 0, 255))
    scale = np.float32(max(-lo, hi) / 127.0)
    if not (np.isfinite(scale) and scale > 1e-30):
        scale = np.float32(ZERO_RANGE_SCALE)
    return scale, np.int8(0)


def weight_params(w: np.ndarray, axis: int | None, scale: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (quantized values in [-127, 127], float32 scales: one per index of ``axis``, or
    one scalar when ``axis`` is None). ``scale`` given: quantized at those scales."""
    w = w.astype(np.float32)
    if scale is None:
        if axis is None:
            amax = np.array(np.abs(w).max() if w.size else 0.0, np.float32)
        else:
            amax = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(axis=1)
        scale = (amax / np.float32(127)).astype(np.float32)
        scale = np.where(scale > 1e-30, scale, np.float32(ZERO_RANGE_SCALE)).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


@dataclass
class _Selection:
    nodes: list[onnx.NodeProto]
    kept: list[tuple[str, str, str]]


def select_nodes(proto: onnx.ModelProto, name: str, consts: dict, types: dict, *, keep_first: bool = False,
                 keep_last: bool = False, exclude: Iterable[str] = (), ops: Iterable[str] | None = None
                 ) -> _Selection:  # fmt: skip
    """The nodes to quantize, and those kept in float with the reason; fails when nothing is left."""
    allowed = set(QUANT_OPS if ops is None else ops)
    cands = [n for n in proto.graph.node if n.op_type in allowed]
    if not cands:
        ops_here = sorted({n.op_type for n in proto.graph.node})
        raise TensorforgeError(f"model '{name}': nothing to quantize: it has no {', '.join(sorted(allowed))} node "
                               f"(its ops: {', '.join(ops_here) or 'none'})")  # fmt: skip
    exclude = [e for e in exclude if e]
    labels = {og.node_label(n) for n in proto.graph.node} | {n.op_type for n in proto.graph.node}
    unknown = [e for e in exclude if e not in labels]
    if unknown:
        raise TensorforgeError(f"model '{name}': exclude {', '.join(map(repr, unknown))} matches no node name or op "
                               f"type in the model")  # fmt: skip
    forced = {}
    if keep_first:
        forced[id(cands[0])] = "kept in float (keep first)"
    if keep_last:
        forced[id(cands[-1])] = "kept in float (keep last)"
    sel = _Selection([], [])
    for n in cands:
        why = forced.get(id(n))
        if why is None and (og.node_label(n) in exclude or n.op_type in exclude):
            why = "excluded"
        if why is None:
            why = _cannot(n, consts, types)
        if why:
            sel.kept.append((og.node_label(n), n.op_type, why))
        else:
            sel.nodes.append(n)
    if not sel.nodes:
        raise TensorforgeError(f"model '{name}': nothing to quantize: every candidate stays in float ("
                               + "; ".join(f"{n} ({op}): {why}" for n, op, why in sel.kept) + ")")  # fmt: skip
    return sel


def _cannot(n: onnx.NodeProto, consts: dict, types: dict) -> str | None:
    """Why node ``n`` cannot be quantized (None if it can)."""
    rule = QUANT_OPS[n.op_type]
    if not n.input or n.input[0] in consts:
        return "its first input is a constant"
    for i in {*rule.activations, *([rule.weight] if rule.weight is not None else [])}:
        if i < len(n.input) and n.input[i] and types.get(n.input[i], TensorProto.FLOAT) != TensorProto.FLOAT:
            return f"input '{n.input[i]}' is {TensorProto.DataType.Name(types[n.input[i]]).lower()}, not float32"
    return None


def quantize_static(proto: onnx.ModelProto, name: str, calibration, *, method: str = "minmax",
                    activations: str = "uint8", per_channel: bool = True, keep_first: bool = False,
                    keep_last: bool = False, exclude: Iterable[str] = (), percentile: float = 99.99,
                    batch_size: int = 32, fold_batchnorm: bool = True, num_threads: int | None = None,
                    compile_fn: Callable | None = None) -> tuple[onnx.ModelProto, QuantizationReport]:  # fmt: skip
    """``proto`` (a private copy: it is changed) quantized to QDQ; see the module's docstring."""
    from .calibrate import Samples, calibrate, observer

    if activations not in ACTIVATION_TYPES:
        raise TensorforgeError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, got {activations!r}")
    observer(method, percentile=percentile)
    report = QuantizationReport(name, "static", method, activations)
    proto = og.upgrade_opset(proto, name)
    if fold_batchnorm:
        folded = og.fold_batchnorm(proto)
        if folded:
            report.notes.append(f"BatchNormalization folded into the Conv before it: {', '.join(folded)}")
    g = proto.graph
    consts, types = og.constants(proto), og.elem_types(proto)
    sel = select_nodes(proto, name, consts, types, keep_first=keep_first, keep_last=keep_last, exclude=exclude)
    report.kept = sel.kept
    samples = Samples(calibration, og.inputs(proto), name)  # checked before anything runs
    users, prod = og.consumers(g), og.producers(g)
    outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input}

    # the tensors quantized: activation inputs and outputs (past an absorbed Relu/Clip) of the selected nodes
    absorbed: dict[int, onnx.NodeProto] = {}  # id(quantized node) -> the activation node it absorbs
    acts: dict[str, None] = {}
    for n in sel.nodes:
        rule = QUANT_OPS[n.op_type]
        for i in rule.activations:
            if i < len(n.input) and n.input[i] and n.input[i] not in consts:
                acts[n.input[i]] = None
        out = n.output[0]
        nxt = users.get(out, [])
        if (activations == "uint8" and len(nxt) == 1 and nxt[0].op_type in ABSORBED and out not in outputs
                and ABSORBED[nxt[0].op_type](nxt[0], consts)):  # fmt: skip
            absorbed[id(n)] = nxt[0]
            out = nxt[0].output[0]
        acts[out] = None
    acts = {t: None for t in acts if types.get(t, TensorProto.FLOAT) == TensorProto.FLOAT
            and not (t in graph_inputs and t in outputs)}  # fmt: skip
    share = _shared(acts, prod)
    roots = [t for t in acts if t not in share]
    if compile_fn is None:
        raise TensorforgeError("calibration runs the model compiled: pass compile_fn (tfg.quantize does)")
    ranges = calibrate(proto, roots, samples, method, compile_fn=compile_fn, name=name, percentile=percentile,
                       batch_size=batch_size, num_threads=num_threads)  # fmt: skip

    names = og.Names(proto)
    inits: dict[str, np.ndarray] = {}
    params: dict[str, tuple[str, str, np.float32]] = {}  # tensor -> (scale name, zero point name, scale)
    for t in roots:
        s, z = activation_params(*ranges[t], activations)
        sn, zn = names.take(f"{t}_scale"), names.take(f"{t}_zero_point")
        inits[sn], inits[zn] = np.array(s, np.float32), np.array(z)
        params[t] = (sn, zn, s)
        report.tensors[t] = (*ranges[t], float(s), int(z))
    for t, root in share.items():
        params[t] = params[root]
        report.tensors[t] = report.tensors[root]
    if share:
        report.notes.append(f"{len(share)} tensor{'s' * (len(share) > 1)} reached through value-preserving ops "
                            "share their source's scale")  # fmt: skip

    # Q/DQ pairs: t -> Q -> DQ, every consumer of t reading DQ's output (a graph output keeps its name on DQ)
    dq_out, pre = {}, {}
    for t in acts:
        if t in outputs:
            pre[t], dq_out[t] = names.take(f"{t}_QuantizeLinear_Input"), t
        else:
            pre[t], dq_out[t] = t, names.take(f"{t}_DequantizeLinear_Output")

    def qdq(t: str) -> list[onnx.NodeProto]:
        sn, zn, _ = params[t]
        qo = names.take(f"{t}_QuantizeLinear_Output")
        return [helper.make_node("QuantizeLinear", [pre[t], sn, zn], [qo], name=names.take(f"{t}_QuantizeLinear")),
                helper.make_node("DequantizeLinear", [qo, sn, zn], [dq_out[t]],
                                 name=names.take(f"{t}_DequantizeLinear"))]  # fmt: skip

    head: list[onnx.NodeProto] = []  # weight and bias dequantization, and the pairs of graph inputs
    body: list[onnx.NodeProto] = []
    wcache: dict[tuple[str, int | None], tuple[str, np.ndarray]] = {}
    removed = {id(a) for a in absorbed.values()}
    selected = {id(n) for n in sel.nodes}
    for t in acts:
        if t in graph_inputs:
            head += qdq(t)
    for n in g.node:
        if id(n) in removed:
            continue
        new = onnx.NodeProto()
        new.CopyFrom(n)
        if id(n) in selected:
            act = absorbed.get(id(n))
            if act is not None:
                new.output[0] = act.output[0]
            head += _quantize_weight_and_bias(new, n, consts, params, names, inits, wcache, per_channel, report)
            report.quantized.append((og.node_label(n), n.op_type))
        for i, x in enumerate(new.input):
            if x in acts:
                new.input[i] = dq_out[x]
        produced = list(new.output)
        for i, o in enumerate(produced):
            if o in acts and pre[o] != o:  # a graph output: the pair's DequantizeLinear takes over its name
                new.output[i] = pre[o]
        body.append(new)
        body += [q for o in produced if o in acts for q in qdq(o)]
    if absorbed:
        acts_named = [f"{a.op_type} '{og.node_label(a)}'" for a in absorbed.values()]
        report.notes.append(f"{len(absorbed)} Relu/Clip absorbed into the quantized output of the op before them "
                            f"(its uint8 range starts at 0): {', '.join(acts_named[:3])}"
                            f"{', ...' if len(acts_named) > 3 else ''}")  # fmt: skip
    del g.node[:]
    g.node.extend(head + body)
    og.set_initializers(proto, inits)
    og.remove_unused_initializers(proto)
    _stamp(proto, report)
    return proto, report


def _shared(acts: dict[str, None], prod: dict[str, onnx.NodeProto]) -> dict[str, str]:
    """Quantized tensors computed from another quantized tensor through value-preserving ops only: the
    tensor whose parameters each one takes."""
    share = {}
    for t in acts:
        u, p = t, prod.get(t)
        while p is not None and p.op_type in SAME_RANGE and p.output and p.output[0] == u and p.input:
            u = p.input[0]
            if u in acts:
                share[t] = share.get(u, u)
                break
            p = prod.get(u)
    return share


def _quantize_weight_and_bias(new: onnx.NodeProto, n: onnx.NodeProto, consts: dict, params: dict, names: og.Names,
                              inits: dict, wcache: dict, per_channel: bool, report: QuantizationReport
                              ) -> list[onnx.NodeProto]:  # fmt: skip
    """Point ``new``'s constant weight (and bias) at dequantized int8 (int32) versions; returns the
    DequantizeLinear nodes that make them. A bias that would not fit int32 at ``x_scale * w_scale`` widens
    the scale of its channel's weights until it does (as onnxruntime's quantizer does): float biases next to
    QDQ weights are computed wrongly by ONNX Runtime's fused kernels."""
    rule = QUANT_OPS[n.op_type]
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    wi, bi = rule.weight, rule.bias
    if wi is None or wi >= len(n.input) or n.input[wi] not in consts:
        return []
    wname, label = n.input[wi], og.node_label(n)
    w = consts[wname]
    axis = rule.axis(attrs, w.ndim) if per_channel else None
    bias = _bias(n, consts, params, bi, attrs, w, axis, report)
    _, scale = weight_params(w, axis)
    if bias is not None:  # the smallest weight scale at which the bias fits int32 (with 1% to spare)
        need = np.abs(bias.astype(np.float64)) / (float(params[n.input[0]][2]) * INT32_MAX * 0.99)
        need = need.max(initial=0.0) if axis is None else need
        if np.any(need > scale):
            scale = np.maximum(scale, need).astype(np.float32)
            report.notes.append(f"'{label}': weight scales widened so that its bias fits int32")
    key = (wname, axis, scale.tobytes())
    out: list[onnx.NodeProto] = []
    if key not in wcache:
        q, _ = weight_params(w, axis, scale)
        qn, sn, zn = names.take(f"{wname}_quantized"), names.take(f"{wname}_scale"), names.take(f"{wname}_zero_point")
        inits[qn], inits[sn], inits[zn] = q, scale, np.zeros(scale.shape, np.int8)
        dqo = names.take(f"{wname}_DequantizeLinear_Output")
        dq_name = names.take(f"{wname}_DequantizeLinear")
        out.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dqo], name=dq_name,
                                    **({"axis": axis} if axis is not None else {})))  # fmt: skip
        wcache[key] = dqo
    new.input[wi] = wcache[key]
    if bias is None:
        return out
    channels = bias.size
    b_scale = (np.float32(params[n.input[0]][2]) * np.broadcast_to(scale, (channels,))).astype(np.float32)
    qb = np.rint(bias.astype(np.float64) / b_scale.astype(np.float64))
    bname = n.input[bi]
    qn, sn = names.take(f"{bname}_quantized"), names.take(f"{bname}_quantized_scale")
    zn, dqo = names.take(f"{bname}_quantized_zero_point"), names.take(f"{bname}_DequantizeLinear_Output")
    inits[qn], inits[sn], inits[zn] = qb.astype(np.int32), b_scale, np.zeros(channels, np.int32)
    out.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dqo], name=names.take(f"{bname}_DequantizeLinear"),
                                axis=0))  # fmt: skip
    new.input[bi] = dqo
    return out


def _bias(n: onnx.NodeProto, consts: dict, params: dict, bi: int | None, attrs: dict, w: np.ndarray,
          axis: int | None, report: QuantizationReport) -> np.ndarray | None:  # fmt: skip
    """The node's constant bias when it can become int32 (one float32 value per output channel, the input
    quantized); None otherwise (noted in the report when there is a bias)."""
    if bi is None or bi >= len(n.input) or not n.input[bi] or n.input[0] not in params:
        return None
    b = consts.get(n.input[bi])
    channels = w.shape[axis] if axis is not None else (w.shape[0] if n.op_type == "Conv" else None)
    ok = b is not None and b.dtype == np.float32 and b.ndim == 1 and (channels is None or b.size == channels)
    if n.op_type == "Gemm":
        ok = ok and attrs.get("beta", 1.0) == 1.0 and b.size == w.shape[0 if attrs.get("transB", 0) else 1]
    if not ok or not np.isfinite(b).all():
        report.notes.append(
            f"the bias of '{og.node_label(n)}' stays float (not a finite constant float32 vector "
            "of one value per output channel" + (", with beta 1)" if n.op_type == "Gemm" else ")")
        )
        return None
    return b


def _stamp(proto: onnx.ModelProto, report: QuantizationReport) -> None:
    """Record how the model was quantized in its metadata (``tensorforge compare`` shows it)."""
    import json

    for p in list(proto.metadata_props):
        if p.key == "tensorforge.quantization":
            proto.metadata_props.remove(p)
    meta = {"mode": report.mode, "method": report.method, "activations": report.activations,
            "quantized": len(report.quantized), "kept": len(report.kept)}  # fmt: skip
    entry = proto.metadata_props.add()
    entry.key, entry.value = "tensorforge.quantization", json.dumps(meta)


def save(proto: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write ``proto`` to ``path`` atomically."""
    from ..util.files import atomic_write

    atomic_write(os.fspath(path), proto.SerializeToString())


__all__ = ["ABSORBED", "ACTIVATION_TYPES", "QUANT_OPS", "SAME_RANGE", "QuantOp", "QuantizationReport",
           "activation_params", "quantize_static", "save", "select_nodes", "weight_params"]  # fmt: skip
