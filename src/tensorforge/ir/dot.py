"""A graph as Graphviz DOT text: one box per node, one cluster per fused group (a kernel), edges
labelled with the tensor type that flows along them. Colors follow the op's fusion pattern, so a reader
sees at a glance where the heavy kernels are and what was fused into them.

Rendering (DOT -> SVG/PNG/PDF) needs Graphviz's ``dot`` program; ``render`` runs it when installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from ..errors import TensorforgeError
from .graph import Graph, Node, Value

FILL = {  # by ops.registry.Pattern name
    "ELEMWISE": "#dbeafe",
    "BROADCAST": "#dbeafe",
    "INJECTIVE": "#e5e7eb",
    "REDUCTION": "#dcfce7",
    "OUT_FUSABLE": "#fde68a",
    "OPAQUE": "#ede9fe",
}
KIND_COLOR = {"loop": "#3b82f6", "kernel": "#d97706", "rows": "#16a34a"}


def _q(s: str) -> str:
    """A quoted DOT string; ``\\n`` sequences in labels are DOT line breaks (value names never hold backslashes)."""
    return '"' + s.replace('"', "'") + '"'


def _type(v: Value) -> str:
    return str(v.type)


def _node_label(n: Node) -> str:
    consts = [v for v in n.inputs if v is not None and v.is_const and v.const.size > 4]
    lines = [n.op]
    if n.name and n.name != n.op:
        lines.append(n.name)
    lines += [f"{v.name}: {v.type}" for v in consts[:2]]
    return "\\n".join(x.replace('"', "'") for x in lines)


def _fill(n: Node) -> str:
    from ..ops.registry import get_op, has_op

    return FILL.get(get_op(n.op).pattern.name, "#ffffff") if has_op(n.op) else "#ffffff"


def to_dot(g: Graph) -> str:
    """DOT text for ``g`` (fused groups drawn as clusters of their members)."""
    out = [f"digraph {_q(g.name)} {{",
           '  rankdir=TB; nodesep=0.25; ranksep=0.35;',
           '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10, margin="0.12,0.04"];',
           '  edge [fontname="Helvetica", fontsize=8, color="#555555"];']  # fmt: skip
    producer: dict[int, str] = {}
    for v in g.inputs:
        vid = f"in_{v.name}"
        producer[v.id] = vid
        out.append(f'  {_q(vid)} [shape=ellipse, fillcolor="#f0f9ff", label={_q(f"{v.name}: {v.type}")}];')
    members: list[Node] = []
    for k, n in enumerate(g.nodes):
        body = n.attrs.get("body")
        if body is None:
            members.append(n)
            out.append(f"  {_q(n.outputs[0].name)} [fillcolor={_q(_fill(n))}, label={_q(_node_label(n))}];")
            continue
        kind = n.attrs.get("kind", "")
        color = KIND_COLOR.get(kind, "#888888")
        out.append(f"  subgraph {_q(f'cluster_{k}')} {{")
        title = f"fused {kind}: {' + '.join(m.op for m in body)}"
        out.append(f'    label={_q(title)}; fontname="Helvetica"; fontsize=9; style="rounded,dashed"; '
                   f"color={_q(color)}; fontcolor={_q(color)};")  # fmt: skip
        for m in body:
            members.append(m)
            out.append(f"    {_q(m.outputs[0].name)} [fillcolor={_q(_fill(m))}, label={_q(_node_label(m))}];")
        out.append("  }")
    for m in members:
        for v in m.outputs:
            producer[v.id] = m.outputs[0].name
    for m in members:
        seen = set()
        for v in m.inputs:
            if v is None or v.is_const or v.id not in producer or v.id in seen:
                continue
            seen.add(v.id)
            out.append(f"  {_q(producer[v.id])} -> {_q(m.outputs[0].name)} [label={_q(' ' + _type(v))}];")
    for v, name in zip(g.outputs, g.output_names):
        oid = f"out_{name}"
        out.append(f'  {_q(oid)} [shape=ellipse, fillcolor="#fef3c7", label={_q(f"{name}: {v.type}")}];')
        if v.id in producer:
            out.append(f"  {_q(producer[v.id])} -> {_q(oid)};")
    out.append("}")
    return "\n".join(out) + "\n"


def dot_program() -> str | None:
    """Graphviz's ``dot``: $TENSORFORGE_DOT if set, else the one on PATH (None when not installed)."""
    return os.environ.get("TENSORFORGE_DOT") or shutil.which("dot")


def render(dot_text: str, path: str, fmt: str) -> None:
    """Render DOT text to ``path`` in format ``fmt`` (svg, png, pdf) with Graphviz; the file appears whole
    or not at all."""
    prog = dot_program()
    if prog is None:
        raise TensorforgeError(
            f"cannot render {path}: Graphviz's 'dot' program is not installed (install it with "
            "'apt install graphviz', 'brew install graphviz' or from https://graphviz.org/download, or point "
            "TENSORFORGE_DOT at it); write a .dot file instead to get the graph without Graphviz"
        )
    d = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=f".{fmt}")
    os.close(fd)
    try:
        proc = subprocess.run([prog, f"-T{fmt}", "-o", tmp], input=dot_text.encode(), capture_output=True,
                              timeout=300)  # fmt: skip
        if proc.returncode != 0:
            raise TensorforgeError(f"Graphviz failed to render {path}: {proc.stderr.decode(errors='replace').strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
