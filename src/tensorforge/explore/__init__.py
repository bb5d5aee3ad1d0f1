"""The assembly explorer: one self-contained HTML report from a model's graph down to every kernel's machine
code and its share of the machine's peak (docs/EXPLORER.md).

    report.py   the report model: kernels tied to graph nodes, listings, loop analysis and measured times
    asm.py      loops from back edges, the hot loop and its summary (vector width, FMAs, loads/FMA, spills)
    layout.py   the graph's layered layout, as SVG
    charts.py   the roofline and the arena timeline, as SVG
    listing.py  highlighted, truncatable listings
    page.py     one build's page; compare.py: two builds side by side
    api.py      ``tfg.explore`` and ``CompiledModel.explore``
"""

from .api import explore, report_of, write_report
from .report import Report, build_report

__all__ = ["Report", "build_report", "explore", "report_of", "write_report"]
