"""The page: one self-contained HTML file (styles and the small script inline, nothing fetched at view time).

Layout: a header with the build's numbers; the graph (SVG, ``layout.py``) beside the selected kernel's
panel; the roofline (``charts.py``) beside the kernel table; the pass pipeline; the memory plan. Each
kernel's panel is pre-rendered into a ``<template>`` and cloned in when the kernel is picked (in the graph,
the roofline or the table), so a page of a large model stays quick to open.
"""

from __future__ import annotations

import base64
import difflib
import gzip
import re
from collections import Counter
from html import escape

from .charts import arena_svg, roofline_svg
from .layout import graph_svg
from .listing import listing_html, style_css
from .report import KernelInfo, Report

ASM_LINES = 6000  # lines of a kernel's listing kept in the page (more: `tensorforge asm`)
LLVM_LINES = 6000
KIR_LINES = 4000
DIFF_LINES = 400  # lines of a pass's graph diff kept

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#eceff1;padding:10px 16px}
header h1{font-size:18px;margin:0 0 4px} header .facts{font-size:13px;opacity:.9}
main{padding:8px 16px} h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
.row{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
#graph-box{flex:1 1 480px;max-width:50%;height:78vh;overflow:auto;border:1px solid #ccc;background:#fff}
#kpanel{flex:1 1 520px;min-width:420px;height:78vh;overflow:auto;border:1px solid #ccc;background:#fff;padding:8px}
.gnode{cursor:pointer} .gnode.sel rect{stroke:#1565c0;stroke-width:3}
.pt{cursor:pointer} .pt.sel{stroke:#1565c0;stroke-width:3}
table{border-collapse:collapse;font-size:12px} td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
td.l,th.l{text-align:left} tr.krow{cursor:pointer} tr.krow:hover,tr.sel{background:#e3f2fd}
pre.code{font-size:12px;line-height:1.35;margin:0;counter-reset:ln;overflow-x:auto;background:#fff}
pre.code .l{display:block;white-space:pre} pre.code .l::before{counter-increment:ln;content:counter(ln);
display:inline-block;width:4.5em;color:#999;text-align:right;margin-right:1em}
pre.code .hot{background:#fff3cd} pre.code .hot0{border-top:2px solid #f0ad4e}
.tabs button,.zoom button{margin-right:4px} .tabs button.on{font-weight:bold;background:#cfd8dc}
.cut{color:#777;font-style:italic} .summary{background:#f1f8e9;padding:6px;margin:6px 0;font-size:13px}
.muted{color:#777} .src{color:#555;font-family:monospace;font-size:90%} details{margin:4px 0} summary{cursor:pointer}
.diff .add{color:#1b5e20} .diff .del{color:#b71c1c}
"""

JS = """
(function(){
  function unpack(root){
    root.querySelectorAll('.pane:not([hidden]) .lz[data-z]').forEach(function(el){
      var bytes=Uint8Array.from(atob(el.dataset.z),function(c){return c.charCodeAt(0);});
      el.removeAttribute('data-z');
      var s=new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
      new Response(s).text().then(function(t){el.innerHTML=t; el.classList.add('ready');});
    });
  }
  function pick(name){
    var tpl=document.getElementById('tpl-'+name); if(!tpl) return;
    var panel=document.getElementById('kpanel'); panel.innerHTML=''; panel.appendChild(tpl.content.cloneNode(true));
    panel.dataset.kernel=name; panel.scrollTop=0; unpack(panel);
    document.querySelectorAll('.sel').forEach(function(e){e.classList.remove('sel');});
    document.querySelectorAll('[data-kernel="'+name+'"]').forEach(function(e){
      if(!e.closest('#kpanel')) e.classList.add('sel');});
    document.querySelectorAll('.gnode').forEach(function(g){
      if((' '+g.dataset.kernels+' ').indexOf(' '+name+' ')>=0) g.classList.add('sel');});
  }
  window.tfPick=pick;
  document.addEventListener('click',function(e){
    var b=e.target.closest('button.more');
    if(b){var rest=b.nextElementSibling; rest.hidden=!rest.hidden;
      b.textContent=rest.hidden?b.textContent.replace('hide','show'):b.textContent.replace('show','hide'); return;}
    var t=e.target.closest('.tabs button');
    if(t){var box=t.closest('.kernel');
      box.querySelectorAll('.tabs button').forEach(function(x){x.classList.toggle('on',x===t);});
      box.querySelectorAll('.pane').forEach(function(p){p.hidden=p.dataset.pane!==t.dataset.pane;});
      unpack(box); return;}
    var h=e.target.closest('button.jump');
    if(h){var pane=h.closest('.kernel').querySelector('.pane[data-pane="asm"]');
      var first=pane.querySelector('.hot0'); if(first){first.scrollIntoView({block:'center'});} return;}
    var z=e.target.closest('.zoom button');
    if(z){var svg=document.getElementById('graph-svg'); var f=parseFloat(z.dataset.f);
      svg.setAttribute('width',svg.getAttribute('width')*f); svg.setAttribute('height',svg.getAttribute('height')*f);
      return;}
    var k=e.target.closest('[data-kernel]');
    if(k&&k.dataset.kernel&&!k.closest('#kpanel')) pick(k.dataset.kernel);
  });
  var first=document.body.dataset.first; if(first) pick(first);
})();
"""


def _t(s: float) -> str:
    return f"{s * 1e6:,.1f} us" if s < 1e-3 else f"{s * 1e3:,.3f} ms"


def _hot_cell(k: KernelInfo) -> str:
    h = k.analysis.hot
    if h is None:
        return '<td class="l muted">-</td>'
    if h.fmas:
        text = f"{h.fmas} FMA x {h.vector_bits}b, {h.loads / h.fmas:.2f} ld/FMA"
    else:
        text = f"{h.vector_ops} vec ops" + (f" x {h.vector_bits}b" if h.vector_bits else "")
    spills = h.spill_loads + h.spill_stores
    return f'<td class="l">{escape(text)}{f", {spills} spills" if spills else ""}</td>'


def kernel_table(r: Report) -> str:
    rows = [
        '<table class="ktable"><tr><th>#</th><th class="l">kernel</th><th>time</th><th>%</th><th>GFLOP/s</th>'
        '<th>%peak</th><th>GB/s</th><th>%dram</th><th>flop/B</th><th class="l">hot loop</th>'
        '<th class="l">graph nodes</th></tr>'
    ]
    for k in sorted(r.kernels, key=lambda k: -k.seconds):
        gf = f"<td>{k.gflops:,.1f}</td><td>{k.pct_peak:.1f}</td>" if k.flops else "<td>-</td><td>-</td>"
        inten = f"{k.intensity:.2f}" if k.intensity is not None else "-"
        rows.append(
            f'<tr class="krow" data-kernel="{escape(k.name)}"><td>{k.index}</td><td class="l">'
            f"{escape(k.name)}</td><td>{_t(k.seconds)}</td><td>{100 * k.share:.1f}</td>{gf}"
            f"<td>{k.gbs:,.1f}</td><td>{k.pct_bw:.0f}</td><td>{inten}</td>{_hot_cell(k)}"
            f'<td class="l">{escape(_clip("; ".join(k.labels), 60))}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "\u2026"


_FAMILY_WHAT = {
    "fp32": "fp32 FMA (no int8/bf16 dot-product instruction in its code)",
    "int8-amx": "int8 AMX tile products (tdpb*d)",
    "bf16-amx": "bf16 AMX tile products (tdpbf16ps)",
    "int8-vnni512": "int8 AVX512-VNNI dot products (vpdpbusd on zmm)",
    "int8-vnni256": "int8 AVX-VNNI dot products (vpdpbusd on ymm)",
    "bf16-avx512": "bf16 AVX512-BF16 dot products (vdpbf16ps)",
}


def _family_text(k: KernelInfo) -> str:
    what = _FAMILY_WHAT.get(k.family, k.family)
    return f"{k.family}: {what}, {k.family_peak:,.0f} GOP/s measured" + (f" ({k.family_note})" if k.family_note else "")


def kernel_panel(r: Report, k: KernelInfo, model_hint: str = "MODEL") -> str:
    """The panel of one kernel: numbers, graph nodes, hot-loop summary, and its three listings."""
    a = k.analysis
    facts = [
        ("time (median)", _t(k.seconds)),
        ("share of the run", f"{100 * k.share:.1f}%"),
        ("FLOPs", f"{k.flops:,}"),
        ("bytes moved", f"{k.bytes:,}"),
        (
            "GFLOP/s",
            f"{k.gflops:,.1f} = {k.pct_peak:.1f}% of {k.family_peak or r.peak_gflops:,.0f} ({k.family} peak)"
            if k.flops
            else "- (no floating-point work)",
        ),
        ("peak that applies", _family_text(k)),
        ("GB/s", f"{k.gbs:,.1f} = {k.pct_bw:.0f}% of {r.bandwidth:.1f} (DRAM)"),
        ("flop / byte", f"{k.intensity:.2f}" if k.intensity is not None else "-"),
        ("loops", f"{len(a.loops)} ({sum(1 for lp in a.loops if lp.inner)} innermost)"),
    ]
    out = [f'<div class="kernel" data-name="{escape(k.name)}"><h3>{escape(k.name)}</h3><table>']
    out += [f'<tr><th class="l">{escape(a_)}</th><td class="l">{escape(b)}</td></tr>' for a_, b in facts]
    out.append("</table>")
    if k.alias_of:
        out.append(
            f'<p class="muted">Same code as <a href="#" data-kernel="{escape(k.alias_of)}" '
            f'onclick="tfPick(this.dataset.kernel);return false">{escape(k.alias_of)}</a>: structurally '
            "identical kernels share one function.</p>"
        )
    out.append('<h4>graph nodes</h4><ul class="members">')
    for m in k.members or []:
        src = (
            f' <span class="src" title="where the model\'s code wrote it">@ {escape(m.source)}</span>'
            if m.source
            else ""
        )
        out.append(f"<li><b>{escape(m.op)}</b> {escape(m.name)} &rarr; {escape(', '.join(m.outputs))}{src}</li>")
    if not k.members:
        out += [f"<li>{escape(lab)}</li>" for lab in k.labels]
    out.append("</ul>")
    hot = a.hot
    if hot is not None:
        out.append(
            f'<div class="summary"><b>hot loop</b>: {escape(hot.describe())} '
            '<button class="jump" type="button">jump to hot loop</button></div>'
        )
    else:
        out.append('<div class="summary">no loop found in the listing (straight-line code)</div>')
    if k.alias_of:  # its listings are the shared function's, in that kernel's panel
        out.append("</div>")
        return "".join(out)
    out.append(
        '<div class="tabs"><button type="button" class="on" data-pane="asm">assembly</button>'
        '<button type="button" data-pane="llvm">LLVM IR</button>'
        '<button type="button" data-pane="kir">kernel IR</button></div>'
    )
    hint = f"tensorforge asm {model_hint} --kernel {k.name}"
    span = (hot.start, hot.end) if hot is not None else None
    panes = [
        ("asm", listing_html(k.asm, "asm", ASM_LINES, span, "asm", hint)),
        ("llvm", listing_html(k.llvm_ir, "llvm", LLVM_LINES, None, "llvm")),
        ("kir", listing_html(k.kernel_ir, "kir", KIR_LINES, None, "kir")),
    ]
    for name, html in panes:
        out.append(f'<div class="pane" data-pane="{name}"{"" if name == "asm" else " hidden"}>{packed(html)}</div>')
    out.append("</div>")
    return "".join(out)


def packed(html: str) -> str:
    """A listing's HTML gzip-compressed into an attribute, unpacked by the page's script when shown
    (``DecompressionStream``, built into browsers): highlighted listings compress about 15x, which keeps
    a ResNet-50 page a few MB with its LLVM IR in."""
    data = base64.b64encode(gzip.compress(html.encode(), 6, mtime=0)).decode()
    return f'<div class="lz" data-z="{data}"></div>'


_OP = re.compile(r"= (\w+)\(")


def _ops(text: str) -> Counter:
    return Counter(_OP.findall(text))


def passes_html(r: Report, source_text: str | None) -> str:
    if not r.passes:
        return '<p class="muted">no graph passes ran (-O0)</p>'
    out = [
        '<table><tr><th class="l">pass</th><th>ms</th><th>nodes</th><th class="l">rules fired / changes</th>'
        '<th class="l">ops</th></tr>'
    ]
    prev = source_text
    details = []
    for p in r.passes:
        stats = ", ".join(f"{k} {v}" for k, v in p.stats.items())
        delta = ""
        if p.graph_text is not None and prev is not None:
            a, b = _ops(prev), _ops(p.graph_text)
            ch = [f"{'+' if b[o] > a[o] else ''}{b[o] - a[o]} {o}" for o in sorted(set(a) | set(b)) if a[o] != b[o]]
            delta = ", ".join(ch)
            if prev != p.graph_text:
                diff = list(
                    difflib.unified_diff(
                        prev.splitlines(), p.graph_text.splitlines(), "before", "after", n=1, lineterm=""
                    )
                )
                lines = [
                    f'<span class="{"add" if d.startswith("+") else "del" if d.startswith("-") else ""}">'
                    f"{escape(d)}</span>"
                    for d in diff[:DIFF_LINES]
                ]
                more = f"\n... {len(diff) - DIFF_LINES} more diff lines" if len(diff) > DIFF_LINES else ""
                details.append(
                    f"<details><summary>{escape(p.name)}: graph diff ({len(diff)} lines)</summary>"
                    f'<pre class="diff">{chr(10).join(lines)}{more}</pre></details>'
                )
        out.append(
            f'<tr><td class="l">{escape(p.name)}</td><td>{p.seconds * 1e3:.2f}</td><td>{p.nodes_before} '
            f'&rarr; {p.nodes_after}</td><td class="l">{escape(stats)}</td><td class="l">{escape(delta)}'
            "</td></tr>"
        )
        if p.graph_text is not None:
            prev = p.graph_text
    out.append("</table>")
    if not details and source_text is None:
        out.append(
            '<p class="muted">the graph after each pass is shown for models given as files or protos '
            "(tensorforge explore MODEL, tfg.explore(path, ...)); this build's log only.</p>"
        )
    return "\n".join(out + details)


def header_html(r: Report) -> str:
    rate = r.flops / r.total_seconds / 1e9 if r.total_seconds else 0.0
    meta = r.metadata
    facts = [
        f"target {escape(r.target)}",
        f"{r.threads} thread{'s' if r.threads != 1 else ''}",
        f"{_t(r.total_seconds)} per run (median of {r.repeat})",
        f"{len(r.kernels)} kernels",
        f"{r.flops / 1e6:,.1f} MFLOP &rarr; {rate:,.1f} GFLOP/s = {100 * rate / r.peak_gflops:.1f}% of the "
        f"{r.peak_gflops:.0f} GFLOP/s fp32 peak",
        f"compiled in {meta.get('compile_seconds', 0.0):.2f} s",
    ]
    return (
        f'<header><h1>{escape(r.title)}</h1><div class="facts">{" &middot; ".join(facts)}</div>'
        f'<div class="facts">machine: {escape(r.peak.describe())}</div></header>'
    )


def report_body(r: Report, model_hint: str = "MODEL") -> str:
    shares = {k.name: k.share for k in r.kernels}
    parts = [header_html(r), "<main>"]
    if r.notes:
        parts.append("<ul>" + "".join(f"<li>{escape(n)}</li>" for n in r.notes) + "</ul>")
    parts.append(
        '<h2>graph <span class="zoom"><button type="button" data-f="1.25">+</button>'
        '<button type="button" data-f="0.8">&minus;</button></span> <span class="muted">boxes: kernels '
        "(fused groups list their ops), coloured by share of run time; click one</span></h2>"
    )
    parts.append(
        f'<div class="row"><div id="graph-box">{graph_svg(r.nodes, r.graph_inputs, shares)}</div>'
        '<div id="kpanel"><p class="muted">click a kernel in the graph, the roofline or the table</p>'
        "</div></div>"
    )
    parts.append(
        '<h2>roofline and kernels</h2><div class="row"><div>'
        + roofline_svg(r)
        + "</div><div>"
        + kernel_table(r)
        + "</div></div>"
    )
    parts.append("<h2>pass pipeline</h2>" + passes_html(r, r.source_text))
    parts.append(
        f"<h2>memory plan</h2><p>arena {r.arena_bytes:,} bytes for {len(r.arena)} intermediate buffers "
        "(each box: a buffer over the kernels it lives across, at its offset)</p>" + arena_svg(r)
    )
    parts.append(
        f'<details><summary>optimized graph (text)</summary><pre class="code">{escape(r.graph_text)}</pre></details>'
    )
    parts.append("</main>")
    for k in r.kernels:
        parts.append(f'<template id="tpl-{escape(k.name)}">{kernel_panel(r, k, model_hint)}</template>')
    return "\n".join(parts)


def page(title: str, body: str, first: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
        f"<style>{CSS}\n{style_css()}</style></head>"
        f'<body data-first="{escape(first)}">{body}<script>{JS}</script></body></html>\n'
    )


def render(r: Report, model_hint: str = "MODEL") -> str:
    """The whole page of one build; the slowest kernel is shown first."""
    first = max(r.kernels, key=lambda k: k.seconds).name if r.kernels else ""
    return page(f"tensorforge explorer: {r.title}", report_body(r, model_hint), first)


__all__ = ["kernel_panel", "kernel_table", "page", "render", "report_body"]
