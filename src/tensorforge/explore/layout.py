"""The graph drawing: a layered (Sugiyama-style) layout computed in Python, written as inline SVG.

Each top-level node of the optimized graph is one box (a fused group lists its member ops), graph inputs are
small boxes on top. Layers are longest paths from the inputs; the order within a layer comes from a few
barycenter sweeps down and up (which straightens chains and keeps crossings few); x positions follow the
producers' mean x with a minimum gap. Boxes are coloured by their kernels' share of the run time. No
JavaScript layout library is needed at view time: the page gets finished SVG.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from .report import GraphNode

BOX_W = 230
HEAD_H = 20
LINE_H = 14
MAX_LINES = 8  # member lines shown in a box; the rest as '+N more'
GAP_X = 30
GAP_Y = 46
MARGIN = 20
SWEEPS = 4
BEND = 40  # how far long edges bend out beside the boxes


@dataclass
class Box:
    key: int  # node index, or -1 - input number for a graph input
    rank: int
    width: float
    height: float
    x: float = 0.0
    y: float = 0.0


def _height(n: GraphNode) -> float:
    lines = min(len(n.members), MAX_LINES + 1) if n.op == "Fused" else 1
    return HEAD_H + LINE_H * lines + 6


def layout(nodes: list[GraphNode], inputs: list[str]) -> tuple[dict[int, Box], float, float]:
    """Positions of every box; returns (boxes by key, width, height)."""
    boxes: dict[int, Box] = {}
    for i in range(len(inputs)):
        boxes[-1 - i] = Box(-1 - i, 0, 150, 24)
    preds = {n.index: [s for s in n.inputs] for n in nodes}
    for n in nodes:
        rank = 1 + max((boxes[s].rank for s in n.inputs if s in boxes), default=0)
        boxes[n.index] = Box(n.index, rank, BOX_W, _height(n))
    succs: dict[int, list[int]] = {k: [] for k in boxes}
    for k, ps in preds.items():
        for p in ps:
            if p in succs:
                succs[p].append(k)
    layers: dict[int, list[int]] = {}
    for k in sorted(boxes, key=lambda k: (boxes[k].rank, k if k >= 0 else -len(inputs) - 1 - k)):
        layers.setdefault(boxes[k].rank, []).append(k)
    pos = {k: float(i) for layer in layers.values() for i, k in enumerate(layer)}

    def sweep(order: list[int], neighbours: dict[int, list[int]]) -> None:
        for r in order:
            layer = layers[r]

            def bary(k: int, layer=layer) -> float:
                ns = [pos[m] for m in neighbours.get(k, []) if m in pos]
                return sum(ns) / len(ns) if ns else pos[k]

            layer.sort(key=bary)
            for i, k in enumerate(layer):
                pos[k] = float(i)

    ranks = sorted(layers)
    for _ in range(SWEEPS):
        sweep(ranks[1:], preds)
        sweep(ranks[-2::-1], succs)
    # coordinates: y by rank (each rank as tall as its tallest box), x near the producers' mean x
    y = MARGIN
    for r in ranks:
        h = max(boxes[k].height for k in layers[r])
        for k in layers[r]:
            boxes[k].y = y
        y += h + GAP_Y
    for r in ranks:
        prev_right = MARGIN - GAP_X
        for k in layers[r]:
            b = boxes[k]
            ps = [boxes[p] for p in preds.get(k, []) if p in boxes]
            want = sum(p.x + p.width / 2 for p in ps) / len(ps) - b.width / 2 if ps else MARGIN
            b.x = max(want, prev_right + GAP_X)
            prev_right = b.x + b.width
    width = max((b.x + b.width for b in boxes.values()), default=0) + MARGIN + BEND
    return boxes, width, y - GAP_Y + MARGIN


def heat(t: float) -> str:
    """A fill colour for a share of the run time, ``t`` in [0, 1] relative to the slowest kernel."""
    t = min(1.0, max(0.0, t))
    lo, hi = (255, 247, 236), (215, 48, 31)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(lo, hi))


def graph_svg(nodes: list[GraphNode], inputs: list[str], shares: dict[str, float]) -> str:
    """The graph as an SVG element; boxes carry ``data-kernel`` (their first kernel) for the page's script."""
    boxes, width, height = layout(nodes, inputs)
    top = max(shares.values(), default=0.0) or 1.0
    out = [
        f'<svg id="graph-svg" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#888"/></marker></defs>',
        '<g class="edges">',
    ]
    for n in nodes:
        t = boxes[n.index]
        for s in n.inputs:
            if s not in boxes:
                continue
            b = boxes[s]
            x1, y1, x2, y2 = b.x + b.width / 2, b.y + b.height, t.x + t.width / 2, t.y
            if t.rank - b.rank > 1:  # a long edge (a residual) bends out to the right of the boxes it passes
                xs = max(b.x + b.width, t.x + t.width) + BEND
                d = f"M{x1:.0f},{y1:.0f} C{xs:.0f},{y1 + GAP_Y:.0f} {xs:.0f},{y2 - GAP_Y:.0f} {x2:.0f},{y2:.0f}"
            else:
                my = (y1 + y2) / 2
                d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{my:.0f} {x2:.0f},{my:.0f} {x2:.0f},{y2:.0f}"
            out.append(f'<path d="{d}" fill="none" stroke="#999" stroke-width="1.2" marker-end="url(#arrow)"/>')
    out.append("</g>")
    for i, name in enumerate(inputs):
        b = boxes[-1 - i]
        out.append(
            f'<g class="ginput" transform="translate({b.x:.0f},{b.y:.0f})"><rect width="{b.width:.0f}" '
            f'height="{b.height:.0f}" rx="12" fill="#e8f0fe" stroke="#4a6fa5"/><text x="{b.width / 2:.0f}" '
            f'y="16" text-anchor="middle">{escape(_clip(name, 20))}</text></g>'
        )
    for n in nodes:
        b = boxes[n.index]
        share = sum(shares.get(k, 0.0) for k in n.kernels)
        fill = heat(share / top) if n.kernels else "#f0f0f0"
        dash = "" if n.kernels else ' stroke-dasharray="4,3"'
        kern = n.kernels[0] if n.kernels else ""
        tip = "\n".join(
            [
                f"{n.title} ({n.op}{'/' + n.kind if n.kind else ''})",
                *(f"kernel {k}: {100 * shares.get(k, 0.0):.1f}% of the run" for k in n.kernels),
                *(f"  {m.label}: {', '.join(m.outputs)}" for m in n.members[:20]),
            ]
        ) + ("" if n.kernels else "\n(no kernel: a view, or computed inside its consumers)")
        out.append(
            f'<g class="gnode" data-node="{n.index}" data-kernel="{escape(kern)}" '
            f'data-kernels="{escape(" ".join(n.kernels))}" transform="translate({b.x:.0f},{b.y:.0f})">'
            f"<title>{escape(tip)}</title>"
            f'<rect width="{b.width:.0f}" height="{b.height:.0f}" rx="4" fill="{fill}" stroke="#555"{dash}/>'
        )
        head = f"{n.op}" + (f" ({n.kind})" if n.kind else "") + (f"  {100 * share:.1f}%" if n.kernels else "")
        out.append(f'<text x="6" y="14" font-weight="bold">{escape(_clip(head, 32))}</text>')
        lines = [f"{m.op} {m.name}" for m in n.members] if n.op == "Fused" else [n.title]
        if len(lines) > MAX_LINES + 1:
            lines = lines[:MAX_LINES] + [f"+{len(lines) - MAX_LINES} more"]
        for j, line in enumerate(lines):
            out.append(f'<text x="10" y="{HEAD_H + 11 + j * LINE_H}">{escape(_clip(line, 34))}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


__all__ = ["graph_svg", "heat", "layout"]
