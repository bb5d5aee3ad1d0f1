"""Readable text form of a graph.

graph mlp(%x: f32[1,784]) -> (%probs: f32[1,10]) {
  %fc1: f32[1,256] = Gemm(%x, %W1: const f32[784,256], %b1: const f32[256]) {transB=0}  # fc1
  ...
}
"""

from __future__ import annotations

import re

import numpy as np

from .dtype import DType
from .graph import Graph, Node, TensorType, Value


def format_attr(v) -> str:
    if isinstance(v, np.ndarray):  # every element (attribute tensors are small): the text parses back
        body = ", ".join(_fmt_scalar(x) for x in v.reshape(-1))
        return f"const {TensorType(DType.from_numpy(v.dtype), v.shape)} [{body}]"
    if isinstance(v, float):
        return repr(float(v))
    if isinstance(v, tuple | list):
        return "[" + ",".join(format_attr(x) for x in v) + "]"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def format_const(v: Value, limit: int = 4) -> str:
    data = v.const
    flat = data.reshape(-1)
    if flat.size <= limit:
        body = ", ".join(_fmt_scalar(x) for x in flat)
    else:
        body = ", ".join(_fmt_scalar(x) for x in flat[:limit]) + ", ..."
    return f"const {v.type} [{body}]"


def _fmt_scalar(x) -> str:
    if isinstance(x, np.floating):
        return str(x)  # numpy's shortest text that reads back as the same value
    if isinstance(x, np.bool_):
        return "true" if x else "false"
    return str(x)


def format_operand(v: Value | None, inline_consts: bool = True) -> str:
    if v is None:
        return "_"
    if v.is_const and inline_consts and v.const.size <= 4:
        return f"%{v.name}={format_const(v)}"
    if v.is_const:
        return f"%{v.name}: const {v.type}"
    return f"%{v.name}"


SOURCE_MARK = "  @ "  # in a node's trailing comment: its name, then this, then its source location


def format_node(n: Node, indent: str = "") -> str:
    """One node per line; a node with a ``body`` (a fused group) lists its body's nodes below it, in braces."""
    outs = ", ".join(f"%{v.name}: {v.type}" for v in n.outputs)
    args = ", ".join(format_operand(v) for v in n.inputs)
    attrs = ""
    shown = {k: v for k, v in n.attrs.items() if k != "body"}
    if shown:
        attrs = " {" + ", ".join(f"{k}={format_attr(v)}" for k, v in sorted(shown.items())) + "}"
    comment = f"  # {n.name}" if n.name else ""
    if n.source:  # where the user wrote it (one line: the parser reads it back after SOURCE_MARK)
        comment = f"  # {n.name}{SOURCE_MARK}{' '.join(n.source.split())}"
    body = n.attrs.get("body")
    if body is None:
        return f"{indent}{outs} = {n.op}({args}){attrs}{comment}"
    lines = [f"{indent}{outs} = {n.op}({args}){attrs} {{{comment}"]
    lines += [format_node(b, indent + "  ") for b in body]
    lines.append(indent + "}")
    return "\n".join(lines)


def format_label(name: str) -> str:
    """A graph or output name: bare when it is an identifier, else a quoted string (``'resnet50-v1'``,
    ``'logits:0'``), which the parser reads back."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name) else repr(name)


def format_graph(g: Graph) -> str:
    ins = ", ".join(f"%{v.name}: {v.type}" for v in g.inputs)
    outs = ", ".join(
        ("" if v.name == name else f"{format_label(name)}=")
        + (format_operand(v) if v.is_const else f"%{v.name}: {v.type}")
        for v, name in zip(g.outputs, g.output_names)
    )
    lines = [f"graph {format_label(g.name)}({ins}) -> ({outs}) {{"]
    for n in g.nodes:
        lines.append(format_node(n, "  "))
    lines.append("}")
    return "\n".join(lines)
