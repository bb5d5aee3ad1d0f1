"""The benchmark harness lives in the package (tensorforge.cli.benchutil) so that `tensorforge bench` shares it;
the plotting helpers every benchmark's ``plot`` uses live here (matplotlib is a `bench` extra)."""

import os

from tensorforge.cli.benchutil import _calibrate, compare, fmt_time, markdown_table, ort_session  # noqa: F401


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, outdir: str, name: str) -> str:
    """Lay out ``fig``, write it as ``outdir/name`` and close it; returns the path."""
    os.makedirs(outdir, exist_ok=True)
    fig.tight_layout()
    path = os.path.join(outdir, name)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
