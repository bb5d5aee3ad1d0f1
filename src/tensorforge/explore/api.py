"""``tfg.explore``: compile (or take a compiled model), profile, and write the explorer's HTML report.

``explore(model, "report.html")`` accepts what ``tfg.compile`` accepts (an ONNX path, bytes, a ModelProto, a
Graph) or a ``CompiledModel``; ``compare=[{"opt_level": 0}, {"opt_level": 2}]`` writes two builds side by
side (``compare.py``). A model given as a file or proto also gets the graph after every pass: its import and
passes are run once more with the printer capturing each graph (the LLVM stages come from the compile cache).
``step.explore(path, x, y)`` profiles a training step on a batch (``TrainingStep.profile_rows``).

``CompiledModel.explore`` and ``TrainingStep.explore`` are installed here: ``runtime/`` imports nothing above
``codegen/`` and the explorer sits above ``train/``, so neither class may import the explorer; the explorer
adds the methods to them (``tensorforge/__init__.py`` imports this module, so they are always there).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..compiler.api import compile as compile_model
from ..compiler.pipeline import Options
from ..errors import TensorforgeError
from ..runtime.artifact import Artifact
from ..runtime.model import CompiledModel
from ..runtime.peak import MachinePeak, machine_peak
from ..train.step import TrainingStep
from ..util.files import atomic_write
from .gather import Listings, gather, pass_snapshots
from .page import render
from .report import Report, build_report

DEFAULT_REPEAT = 10
MIN_REPEAT = 3
PROFILE_BUDGET = 1.5  # seconds of profiled runs ``explore`` aims at (a long model gets fewer than ``repeat``)


def random_feeds(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for profiling (floats: standard normal; integers: 0..2, valid indices for any table)."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(dt.np) if dt.is_float else rng.integers(0, 3, shape).astype(dt.np)
        for name, dt, shape in specs
    }


def report_of(
    m: CompiledModel,
    feeds: Mapping[str, np.ndarray] | None = None,
    repeat: int = DEFAULT_REPEAT,
    peak: MachinePeak | None = None,
    title: str | None = None,
    pass_graphs: list[str] | None = None,
    listings: Listings | None = None,
    budget: float | None = None,
) -> Report:
    """Profile ``m`` (on ``feeds``, else seeded random inputs) and gather its report. ``budget``: seconds
    the profile may take (fewer runs than ``repeat``, at least ``MIN_REPEAT``, when one run is long)."""
    if not isinstance(m, CompiledModel):
        raise TensorforgeError(
            f"explore needs a model compiled for fixed input shapes, got {type(m).__name__} "
            "(give input_shapes for symbolic dims)"
        )
    xs = dict(random_feeds(m.inputs))
    xs.update(feeds or {})
    listings = listings or gather(m.artifact)  # before profiling: its worker processes are gone by then
    if budget is not None and repeat > MIN_REPEAT:
        t0 = time.perf_counter()
        m.run(xs)  # one run (also the warm-up) sizes the profile
        repeat = max(MIN_REPEAT, min(repeat, int(budget / max(time.perf_counter() - t0, 1e-9))))
    rows, total = m.profile(xs, repeat=repeat)
    return build_report(
        m.artifact, rows, total, m.num_threads, peak or machine_peak(), repeat, title, pass_graphs, listings=listings
    )


def write_report(
    art: Artifact,
    rows,
    total: float,
    threads: int,
    path: str | os.PathLike,
    repeat: int,
    title: str | None = None,
    model_hint: str = "MODEL",
) -> str:
    """Write the page of a build already profiled (``TrainingStep.explore``); returns the path."""
    r = build_report(art, rows, total, threads, machine_peak(), repeat, title)
    return _write(path, render(r, model_hint))


def _write(path: str | os.PathLike, html: str) -> str:
    p = os.fspath(path)
    if os.path.isdir(p):
        raise TensorforgeError(f"explore: {p!r} is a directory; give a file name such as report.html")
    atomic_write(p, html.encode())
    os.chmod(p, 0o644)  # a page to read and share, not a private temporary file
    return p


def _compile(model, opts: Mapping, input_shapes, num_threads) -> CompiledModel:
    m = compile_model(
        model,
        opt_level=opts.get("opt_level", 2),
        passes=opts.get("passes"),
        input_shapes=input_shapes,
        num_threads=num_threads,
        tuning_db=opts.get("tuning_db"),
    )
    if not isinstance(m, CompiledModel):
        raise TensorforgeError(
            f"model '{m.name}' has symbolic input dims or data-dependent shapes; explore needs "
            "fixed shapes: give them with input_shapes (CLI: --input-shape)"
        )
    return m


def _describe(opts: Mapping) -> str:
    parts = [f"-O{opts.get('opt_level', 2)}"]
    if opts.get("passes"):
        parts.append(f"--passes={opts['passes']}")
    return " ".join(parts)


def explore(
    model,
    path: str | os.PathLike,
    *,
    feeds: Mapping[str, np.ndarray] | None = None,
    repeat: int = DEFAULT_REPEAT,
    opt_level: int = 2,
    passes: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
    compare: Sequence[Mapping] | None = None,
    compare_model=None,
    title: str | None = None,
    model_hint: str | None = None,
) -> str:
    """Write the explorer report of ``model`` to ``path`` (one self-contained HTML file); returns the path.

    ``model``: an ONNX path / bytes / ModelProto, a Graph, or a ``CompiledModel`` (compiled as it is).
    ``compare``: two dicts of compile options (``opt_level``, ``passes``), e.g. ``[{"opt_level": 0},
    {"opt_level": 2}]``, for two builds side by side. ``feeds``: inputs to profile on (missing ones seeded
    random); ``repeat``: profiled runs (per-kernel medians). ``compare_model``: a second model (e.g. the int8
    version of ``model``) compiled with the same options and shown beside it, kernels matched by graph node
    names (a quantized node keeps its float node's name)."""
    if repeat < 1:
        raise TensorforgeError(f"explore: repeat must be >= 1, got {repeat}")
    t0 = time.perf_counter()
    peak = machine_peak()
    hint = model_hint or (os.fspath(model) if isinstance(model, str | os.PathLike) else "MODEL")
    if compare_model is not None:
        from .compare import render_compare

        if compare is not None or isinstance(model, CompiledModel) or isinstance(compare_model, CompiledModel):
            raise TensorforgeError("explore: compare_model takes two models to compile (not compiled models) "
                                   "and no compare options")  # fmt: skip
        reports = []
        for which, mdl in (("", model), (" (compared)", compare_model)):
            m = _compile(mdl, {"opt_level": opt_level, "passes": passes}, input_shapes, num_threads)
            reports.append(report_of(m, feeds, repeat, peak, f"{title or m.name}{which}", budget=PROFILE_BUDGET))
        return _write(path, render_compare(reports[0], reports[1], hint))
    if compare is not None:
        from .compare import render_compare

        if isinstance(model, CompiledModel) or len(compare) != 2:
            raise TensorforgeError(
                "explore: compare takes a model to compile (not a compiled model) and exactly two "
                f"sets of options, got {len(compare)}"
            )
        reports = []
        for opts in compare:
            m = _compile(model, opts, input_shapes, num_threads)
            label = f"{title or m.name} {_describe(opts)}"
            reports.append(report_of(m, feeds, repeat, peak, label, budget=PROFILE_BUDGET))
        return _write(path, render_compare(reports[0], reports[1], hint))
    if isinstance(model, CompiledModel):
        r = report_of(model, feeds, repeat, peak, title, budget=PROFILE_BUDGET)
    else:
        m = _compile(model, {"opt_level": opt_level, "passes": passes}, input_shapes, num_threads)
        options = Options(opt_level=opt_level, passes=passes, input_shapes=dict(input_shapes) if input_shapes else None)
        lst = gather(m.artifact, model, options)  # listings and the graph after each pass, side by side
        r = report_of(m, feeds, repeat, peak, title, listings=lst, budget=PROFILE_BUDGET)
        if lst.cached:
            r.notes.append("listings and pass graphs read from the cache directory (made by an earlier report)")
    r.notes.append(f"report built in {time.perf_counter() - t0:.1f} s (compile or cache load, profile, listings)")
    return _write(path, render(r, hint))


def _model_explore(
    self: CompiledModel,
    path: str | os.PathLike,
    feeds: Mapping[str, np.ndarray] | None = None,
    repeat: int = DEFAULT_REPEAT,
) -> str:
    """Write the explorer report of this model (graph, kernels, assembly, roofline) to ``path`` (HTML); profiles
    it on ``feeds`` (missing inputs seeded random). See ``tfg.explore``."""
    return explore(self, path, feeds=feeds, repeat=repeat)


def _step_explore(self: TrainingStep, path: str | os.PathLike, x, y, repeat: int = DEFAULT_REPEAT) -> str:
    """Write the explorer report of this training step, compiled for the batch ``(x, y)``, to ``path`` (HTML):
    forward, loss, backward and update kernels with their assembly and measured times. Profiling trains on
    the batch ``repeat`` + 2 times (as ``profile`` does). Returns the path."""
    prog, rows, total = self.profile_rows(x, y, repeat)
    return write_report(prog.artifact, rows, total, prog.num_threads, path, repeat, f"{self.name} training step")


# runtime/ and train/ sit below the explorer: it adds their methods (see the module docstring)
CompiledModel.explore = _model_explore
TrainingStep.explore = _step_explore

__all__ = ["explore", "pass_snapshots", "random_feeds", "report_of", "write_report"]
