"""Inline SVG charts of a report: the roofline and the arena timeline (the memory plan).

The roofline is drawn against the machine's measured roofs (``runtime/peak.py``): the fp32 FMA peak and the
streaming-read bandwidth on the threads the model ran with. Every kernel is one point: kernels doing
floating-point work at (flop per byte, GFLOP/s) on the log-log chart; kernels without any (pooling by max,
copies, gathers) in a strip below at their GB/s against the bandwidth roof. A point over the memory roof
means the kernel's data stayed in cache (the roof is DRAM bandwidth).
"""

from __future__ import annotations

import math
from html import escape

from .layout import heat
from .report import Report

W, H = 680, 400
PAD_L, PAD_R, PAD_T, PAD_B = 60, 20, 20, 40
STRIP_H = 70


def _log_axis(lo: float, hi: float) -> tuple[float, float]:
    return math.floor(math.log10(lo)), math.ceil(math.log10(hi))


def _fmt(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def roofline_svg(r: Report, svg_id: str = "roofline") -> str:
    pk, bw = r.peak_gflops, r.bandwidth
    top = max((k.share for k in r.kernels), default=0.0) or 1.0
    flop_k = [k for k in r.kernels if k.flops and k.bytes]
    mem_k = [k for k in r.kernels if not (k.flops and k.bytes)]
    xs = [k.intensity for k in flop_k] + [pk / bw if bw else 1.0]
    fams = r.families  # int8/bf16 peaks of the families the kernels run on: extra roofs above fp32's
    top_pk = max([pk, *fams.values()])
    xs += [p / bw for p in fams.values()] if bw else []
    ys = [max(k.gflops, 1e-3) for k in flop_k] + [pk]
    x0, x1 = _log_axis(min(xs) / 2, max(xs) * 2)
    y0, y1 = _log_axis(min(ys) / 2, top_pk * 2)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def px(x: float) -> float:
        return PAD_L + (math.log10(x) - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return PAD_T + ph - (math.log10(max(y, 10.0**y0)) - y0) / (y1 - y0) * ph

    total_h = H + (STRIP_H if mem_k else 0)
    out = [
        f'<svg id="{svg_id}" class="roofline" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#bbb"/>',
    ]
    for e in range(x0, x1 + 1):
        x = px(10.0**e)
        out.append(
            f'<line x1="{x:.1f}" y1="{PAD_T}" x2="{x:.1f}" y2="{PAD_T + ph}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{PAD_T + ph + 14}" text-anchor="middle">{_fmt(10.0**e)}</text>'
        )
    for e in range(y0, y1 + 1):
        y = py(10.0**e)
        out.append(
            f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{PAD_L + pw}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(10.0**e)}</text>'
        )
    out.append(
        f'<text x="{PAD_L + pw / 2}" y="{PAD_T + ph + 32}" text-anchor="middle">arithmetic intensity '
        f"(flop / byte moved)</text>"
        f'<text transform="translate(14,{PAD_T + ph / 2}) rotate(-90)" text-anchor="middle">GFLOP/s</text>'
    )
    # the roofs: bandwidth x intensity up to the ridge, then the compute peak
    ridge = pk / bw if bw else 10.0**x0
    xa = 10.0**x0
    pts = [(xa, bw * xa), (ridge, pk), (10.0**x1, pk)] if bw else [(xa, pk), (10.0**x1, pk)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(pts))
    out.append(f'<path class="roof" d="{path}" fill="none" stroke="#1b5e20" stroke-width="2"/>')
    out.append(
        f'<text x="{PAD_L + pw - 4}" y="{py(pk) - 5:.1f}" text-anchor="end" fill="#1b5e20">fp32 peak '
        f"{pk:.0f} GFLOP/s ({r.threads} thread{'s' if r.threads != 1 else ''})</text>"
    )
    if bw:
        out.append(
            f'<text x="{px(ridge) - 6:.1f}" y="{py(pk) + 14:.1f}" text-anchor="end" fill="#1b5e20">memory '
            f"{bw:.1f} GB/s</text>"
        )
    for fam, fpk in sorted(fams.items(), key=lambda f: f[1]):
        fr = fpk / bw if bw else 10.0**x0
        fpts = [(fr, fpk), (10.0**x1, fpk)] if bw else [(xa, fpk), (10.0**x1, fpk)]
        fpath = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(fpts))
        if bw:  # the memory roof continued up to this family's ridge
            fpath = f"M{px(ridge):.1f},{py(pk):.1f} L" + fpath[1:]
        out.append(
            f'<path class="roof roof-{escape(fam)}" data-family="{escape(fam)}" d="{fpath}" fill="none" '
            f'stroke="#6a1b9a" stroke-width="1.5" stroke-dasharray="5,3"/>'
            f'<text x="{PAD_L + pw - 4}" y="{py(fpk) - 5:.1f}" text-anchor="end" fill="#6a1b9a">{escape(fam)} peak '
            f"{fpk:,.0f} GOP/s</text>"
        )
    for k in sorted(flop_k, key=lambda k: k.share):
        tip = (
            f"{k.name}: {k.seconds * 1e6:.1f} us ({100 * k.share:.1f}%), {k.gflops:.1f} GFLOP/s = "
            f"{k.pct_peak:.1f}% of the {k.family} peak, {k.intensity:.2f} flop/byte, {k.gbs:.1f} GB/s"
        )
        out.append(
            f'<circle class="pt" data-kernel="{escape(k.name)}" cx="{px(k.intensity):.1f}" '
            f'cy="{py(max(k.gflops, 1e-3)):.1f}" r="{4 + 6 * math.sqrt(k.share / top):.1f}" '
            f'fill="{heat(k.share / top)}" stroke="#333"><title>{escape(tip)}</title></circle>'
        )
    if mem_k:
        out.append(_strip(mem_k, bw, top, H))
    out.append("</svg>")
    return "\n".join(out)


def _strip(ks, bw: float, top: float, y_top: float) -> str:
    """Kernels without floating-point work: GB/s on a log axis, against the bandwidth roof."""
    vals = [max(k.gbs, 1e-3) for k in ks] + ([bw] if bw else [])
    x0, x1 = _log_axis(min(vals) / 2, max(vals) * 2)
    pw = W - PAD_L - PAD_R

    def px(x: float) -> float:
        return PAD_L + (math.log10(max(x, 10.0**x0)) - x0) / (x1 - x0) * pw

    yc = y_top + 22
    out = [
        f'<g class="memstrip"><text x="{PAD_L}" y="{y_top + 4}">kernels without flops (pooling, copies): '
        "GB/s moved</text>",
        f'<line x1="{PAD_L}" y1="{yc}" x2="{PAD_L + pw}" y2="{yc}" stroke="#bbb"/>',
    ]
    for e in range(x0, x1 + 1):
        out.append(f'<text x="{px(10.0**e):.1f}" y="{yc + 24}" text-anchor="middle">{_fmt(10.0**e)}</text>')
    if bw:
        out.append(
            f'<line class="roof" x1="{px(bw):.1f}" y1="{yc - 12}" x2="{px(bw):.1f}" y2="{yc + 12}" '
            f'stroke="#1b5e20" stroke-width="2"><title>memory bandwidth {bw:.1f} GB/s</title></line>'
        )
    for k in ks:
        tip = f"{k.name}: {k.seconds * 1e6:.1f} us ({100 * k.share:.1f}%), {k.gbs:.1f} GB/s = {k.pct_bw:.0f}% of DRAM"
        out.append(
            f'<circle class="pt mem" data-kernel="{escape(k.name)}" cx="{px(max(k.gbs, 1e-3)):.1f}" '
            f'cy="{yc}" r="{4 + 6 * math.sqrt(k.share / top):.1f}" fill="{heat(k.share / top)}" '
            f'stroke="#333"><title>{escape(tip)}</title></circle>'
        )
    out.append("</g>")
    return "\n".join(out)


def arena_svg(r: Report) -> str:
    """The memory plan: each arena buffer a rectangle over the kernels it lives across (x) at its byte range
    in the arena (y). Buffers sharing rows at different times are the plan's reuse."""
    n = max(1, len(r.kernels))
    size = max([r.arena_bytes] + [b.offset + b.nbytes for b in r.arena]) or 1
    pw, ph = W - PAD_L - PAD_R, 260
    out = [
        f'<svg class="arena" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{ph + PAD_T + PAD_B}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fcfcfc" stroke="#bbb"/>',
        f'<text x="{PAD_L + pw / 2}" y="{PAD_T + ph + 30}" text-anchor="middle">kernel (execution order, '
        f"0..{n - 1})</text>",
        f'<text transform="translate(14,{PAD_T + ph / 2}) rotate(-90)" text-anchor="middle">arena offset '
        f"({size / 2**20:.2f} MiB)</text>",
    ]
    for i, b in enumerate(r.arena):
        x = PAD_L + b.first / n * pw
        w = max(1.5, (b.last - b.first + 1) / n * pw)
        y = PAD_T + b.offset / size * ph
        h = max(1.0, b.nbytes / size * ph)
        hue = (i * 47) % 360
        tip = (
            f"{b.value}: {b.nbytes:,} bytes at offset {b.offset:,}, live from kernel {b.first} "
            f"({r.kernels[b.first].name if b.first < len(r.kernels) else '?'}) to {b.last}"
        )
        out.append(
            f'<rect class="buf" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
            f'fill="hsl({hue},60%,70%)" stroke="#555" stroke-width="0.5"><title>{escape(tip)}</title></rect>'
        )
    out.append("</svg>")
    return "\n".join(out)


__all__ = ["arena_svg", "roofline_svg"]
