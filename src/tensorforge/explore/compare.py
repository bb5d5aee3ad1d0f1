"""Two builds of one model side by side (``tensorforge explore m.onnx --compare -O0 -O2``).

Kernels are matched by the graph nodes they implement: a kernel of one build and a kernel of the other that
share a node (by name) fall in one group, transitively, so six unfused -O0 kernels and the one fused -O2
kernel that replaced them form one row. Each row shows both builds' times and hot loops; picking it shows
both kernels' panels in two columns and the diff of their assembly.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from html import escape

from .charts import roofline_svg
from .page import _t, header_html, kernel_panel, packed, page
from .report import KernelInfo, Report

DIFF_INPUT = 3000  # lines of each listing diffed
DIFF_LINES = 800  # diff lines kept


@dataclass
class Group:
    a: list[KernelInfo] = field(default_factory=list)
    b: list[KernelInfo] = field(default_factory=list)

    @property
    def seconds_a(self) -> float:
        return sum(k.seconds for k in self.a)

    @property
    def seconds_b(self) -> float:
        return sum(k.seconds for k in self.b)


def _nodes(k: KernelInfo) -> set[str]:
    return {lab.rsplit(" (", 1)[0] for lab in k.labels}


def match_kernels(a: Report, b: Report) -> list[Group]:
    """Groups of kernels of ``a`` and ``b`` connected by shared graph nodes, in ``b``'s execution order (then
    ``a``-only groups)."""
    items = [("a", k) for k in a.kernels] + [("b", k) for k in b.kernels]
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, (_, k) in enumerate(items):
        for n in _nodes(k):
            if n in owner:
                parent[find(i)] = find(owner[n])
            else:
                owner[n] = i
    groups: dict[int, Group] = {}
    order: list[int] = []
    for i, (side, k) in enumerate(items):
        root = find(i)
        if root not in groups:
            groups[root] = Group()
            order.append(root)
        getattr(groups[root], side).append(k)
    out = [groups[r] for r in order]
    return sorted(out, key=lambda g: (g.b[0].index if g.b else len(b.kernels), g.a[0].index if g.a else 0))


def _hot(ks: list[KernelInfo]) -> str:
    h = next((k.analysis.hot for k in ks if k.analysis.hot is not None and k.analysis.hot.fmas), None)
    if h is None:
        return "-"
    return f"{h.fmas} FMA x {h.vector_bits}b, {h.loads / h.fmas:.2f} ld/FMA, {h.spill_loads + h.spill_stores} spills"


def _names(ks: list[KernelInfo]) -> str:
    if not ks:
        return "(none)"
    text = ", ".join(k.name for k in ks[:3])
    return text + (f" +{len(ks) - 3}" if len(ks) > 3 else "")


def asm_diff(a: str, b: str) -> str:
    diff = list(
        difflib.unified_diff(
            a.splitlines()[:DIFF_INPUT], b.splitlines()[:DIFF_INPUT], "left", "right", n=2, lineterm=""
        )
    )
    lines = [
        f'<span class="{"add" if d.startswith("+") else "del" if d.startswith("-") else ""}">{escape(d)}</span>'
        for d in diff[:DIFF_LINES]
    ]
    more = f"\n... {len(diff) - DIFF_LINES} more diff lines" if len(diff) > DIFF_LINES else ""
    return f'<pre class="diff">{chr(10).join(lines)}{more}</pre>' if diff else '<p class="muted">identical</p>'


def _column(r: Report, ks: list[KernelInfo], hint: str) -> str:
    if not ks:
        return '<div class="col"><p class="muted">no kernel in this build implements these nodes</p></div>'
    # show the slowest kernel of the group; the others are named
    k = max(ks, key=lambda k: k.seconds)
    if k.alias_of:
        k = next((o for o in r.kernels if o.name == k.alias_of), k)
    others = [o.name for o in ks if o is not k]
    note = f'<p class="muted">also: {escape(", ".join(others))}</p>' if others else ""
    return f'<div class="col"><h4>{escape(r.title)}</h4>{note}{kernel_panel(r, k, hint)}</div>'


def render_compare(a: Report, b: Report, hint: str = "MODEL") -> str:
    groups = match_kernels(a, b)
    rows = [
        '<table class="ktable"><tr><th>#</th><th class="l">left kernels</th><th>left time</th>'
        '<th class="l">right kernels</th><th>right time</th><th>left / right</th><th class="l">left hot loop</th>'
        '<th class="l">right hot loop</th></tr>'
    ]
    tpls = []
    for i, g in enumerate(groups):
        ratio = f"{g.seconds_a / g.seconds_b:.2f}x" if g.seconds_a and g.seconds_b else "-"
        rows.append(
            f'<tr class="krow" data-kernel="g{i}"><td>{i}</td><td class="l">{escape(_names(g.a))}</td>'
            f'<td>{_t(g.seconds_a)}</td><td class="l">{escape(_names(g.b))}</td><td>{_t(g.seconds_b)}</td>'
            f'<td>{ratio}</td><td class="l">{escape(_hot(g.a))}</td><td class="l">{escape(_hot(g.b))}</td>'
            "</tr>"
        )
        ka = max(g.a, key=lambda k: k.seconds) if g.a else None
        kb = max(g.b, key=lambda k: k.seconds) if g.b else None
        diff = ""
        if ka is not None and kb is not None:
            diff = (
                f'<details open><summary>assembly diff (left &rarr; right)</summary><div class="pane">'
                f"{packed(asm_diff(ka.asm, kb.asm))}</div></details>"
            )
        tpls.append(
            f'<template id="tpl-g{i}"><div class="cmp">{_column(a, g.a, hint)}{_column(b, g.b, hint)}</div>'
            f"{diff}</template>"
        )
    rows.append("</table>")
    ta, tb = a.total_seconds, b.total_seconds
    body = [
        header_html(a).replace("<header>", '<header class="left">'),
        header_html(b).replace("<header>", '<header class="right">'),
        "<main>",
        f"<h2>{escape(a.title)}: {_t(ta)} &middot; {escape(b.title)}: {_t(tb)} &middot; left / right = "
        f"{ta / tb if tb else 0:.2f}x</h2>",
        '<p class="muted">kernels matched by the graph nodes they implement; click a row</p>',
        "\n".join(rows),
        '<div id="kpanel" class="wide"><p class="muted">click a row</p></div>',
        '<h2>rooflines</h2><div class="row"><div>'
        + roofline_svg(a, "roofline-left")
        + "</div><div>"
        + roofline_svg(b, "roofline-right")
        + "</div></div>",
        "</main>",
        *tpls,
    ]
    style = (
        "<style>.cmp{display:flex;gap:10px}.cmp .col{flex:1 1 0;min-width:0;overflow:auto}"
        "#kpanel.wide{height:auto;max-height:none;width:auto}</style>"
    )
    slow = max(groups, key=lambda g: g.seconds_b, default=None)
    first = f"g{groups.index(slow)}" if slow is not None else ""
    return page(f"tensorforge explorer: {a.title} vs {b.title}", style + "\n".join(body), first)


__all__ = ["Group", "asm_diff", "match_kernels", "render_compare"]
