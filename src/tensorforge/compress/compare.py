"""``tfg.compare`` / ``tensorforge compare``: a reference model and its variants (quantized, pruned, ...)
side by side on the same data — agreement with the reference's outputs, size on disk and latency.

Each model (ONNX: a path, bytes or ModelProto) runs compiled by tensorforge (``runtime="tfg"``), by ONNX
Runtime (``"ort"``) or both (``"tfg,ort"``). The data is an .npz with one array per input, first axis
samples (as for calibration), or — without data — seeded random inputs of the reference's shapes.

Per row: **top-1** agreement with the reference (the fraction of samples whose argmax over the last axis
matches; only for a first output of shape [samples, classes]), **max abs** error over every output, **max
rel** error (max abs error divided by the largest reference magnitude, so a few near-zero outputs do not
dominate), **size** of the model file (or of the serialized model), median **latency** of one batch and the
**speedup** over the reference row. Latencies are medians of blocks run alternately over the rows, so a
machine whose speed drifts (other load, frequency) affects every row alike.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..errors import TensorforgeError
from . import onnx_graph as og
from .calibrate import Runner, Samples

RUNTIMES = ("tfg", "ort")


@dataclass
class Row:
    model: str
    runtime: str
    size_bytes: int
    latency_s: float
    speedup: float
    top1: float | None
    max_abs: float
    max_rel: float
    quantization: str = ""


@dataclass
class Comparison:
    """The result of ``compare``: one row per (model, runtime), the reference first."""

    rows: list[Row]
    samples: int
    batch: int
    data: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "batch": self.batch, "data": self.data, "notes": self.notes,
                "rows": [asdict(r) for r in self.rows]}  # fmt: skip

    def __str__(self) -> str:
        head = ["model", "runtime", "top-1", "max abs", "max rel", "size", "latency", "speedup"]
        body = [[r.model + (f" [{r.quantization}]" if r.quantization else ""), r.runtime,
                 "-" if r.top1 is None else f"{100 * r.top1:.2f}%", f"{r.max_abs:.3g}", f"{r.max_rel:.3g}",
                 _size(r.size_bytes), f"{r.latency_s * 1e3:.3f} ms", f"{r.speedup:.2f}x"]
                for r in self.rows]  # fmt: skip
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [f"{self.samples} samples ({self.data}), latency of one batch of {self.batch}; reference: "
                 f"{self.rows[0].model} on {self.rows[0].runtime}", fmt.format(*head)]  # fmt: skip
        lines += [fmt.format(*b) for b in body]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def compare(reference, *models, data=None, runtime: str = "tfg", compile_fn: Callable | None = None,
            batch_size: int = 32, samples: int = 64, seed: int = 0, blocks: int = 5, block_seconds: float = 0.05,
            num_threads: int | None = None) -> Comparison:  # fmt: skip
    """Run ``reference`` and each of ``models`` on ``data`` (or ``samples`` seeded random samples) and
    return their agreement, size and latency (see the module's docstring)."""
    runtimes = [r.strip() for r in runtime.split(",")] if runtime != "both" else list(RUNTIMES)
    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad or not runtimes:
        raise TensorforgeError(f"unknown runtime {', '.join(map(repr, bad or [runtime]))}; runtimes: "
                               f"{', '.join(RUNTIMES)} (comma-separated, or 'both')")  # fmt: skip
    if "tfg" in runtimes and compile_fn is None:
        raise TensorforgeError("compare runs models compiled by tensorforge: pass compile_fn (tfg.compare does)")
    for what, v, lo in (("batch_size", batch_size, 1), ("samples", samples, 1), ("blocks", blocks, 1)):
        if v < lo:
            raise TensorforgeError(f"{what} must be >= {lo}, got {v}")
    loaded = [_load(m) for m in (reference, *models)]
    ref_proto, ref_name = loaded[0][0], loaded[0][1]
    specs = og.inputs(ref_proto)
    for proto, name, _ in loaded[1:]:
        mine = [(s.name, s.dtype) for s in og.inputs(proto)]
        if mine != [(s.name, s.dtype) for s in specs]:
            raise TensorforgeError(f"model '{name}' has inputs {_fmt(mine)}, but the reference '{ref_name}' has "
                                   f"{_fmt([(s.name, s.dtype) for s in specs])}")  # fmt: skip
    if data is None:
        arrays, what = random_data(specs, samples, seed, batch_size), f"random, seed {seed}"
        data_set = Samples(arrays, specs, ref_name, "comparison data")
    else:
        data_set = Samples(data, specs, ref_name, "comparison data")
        what = os.path.basename(os.fspath(data)) if isinstance(data, str | os.PathLike) else "given data"
    feeds = list(data_set.batches(batch_size))
    rows, outputs, runners = [], [], []
    for proto, name, size in loaded:
        meta = next((json.loads(p.value) for p in proto.metadata_props if p.key == "tensorforge.quantization"), None)
        label = f"int8 {meta['mode']}" if meta else ""
        for rt in runtimes:
            run = _runner(proto, name, rt, compile_fn, num_threads)
            outs = [run(f) for f in feeds]
            outputs.append([_cat([o[i] for o in outs]) for i in range(len(outs[0]))])
            runners.append(run)
            rows.append(Row(name, rt, size, 0.0, 1.0, None, 0.0, 0.0, label))
    ref = outputs[0]
    for row, outs in zip(rows, outputs):
        if len(outs) != len(ref):
            raise TensorforgeError(f"model '{row.model}' has {len(outs)} outputs, the reference '{ref_name}' "
                                   f"{len(ref)}")  # fmt: skip
        row.max_abs, row.max_rel, row.top1 = _agreement(row.model, ref, outs)
    lat = _latencies(runners, feeds[0], blocks, block_seconds)
    for row, t in zip(rows, lat):
        row.latency_s, row.speedup = t, lat[0] / t
    n = sum(next(iter(f.values())).shape[0] if f else 1 for f in feeds)
    return Comparison(rows, n, next(iter(feeds[0].values())).shape[0] if feeds[0] else 1, what)


def _fmt(items) -> str:
    return "(" + ", ".join(f"{n}: {d}" for n, d in items) + ")"


def _load(model) -> tuple[onnx.ModelProto, str, int]:
    proto, name = og.load_proto(model)
    if isinstance(model, str | os.PathLike):
        size, name = os.path.getsize(model), os.path.basename(os.fspath(model))
    else:
        size = proto.ByteSize()
    return proto, name, size


def random_data(specs: list[og.InputInfo], samples: int, seed: int, batch_size: int) -> dict[str, np.ndarray]:
    """Seeded inputs of the model's shapes (symbolic first axis: ``samples``; fixed: ``samples`` rounded to
    a multiple of it; other symbolic dims 1): floats standard normal, integers 0..2."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in specs:
        if not s.shape:
            raise TensorforgeError(f"input '{s.name}' is a scalar; give data to compare on")
        first = s.shape[0]
        n = samples if not isinstance(first, int) else first * max(1, samples // max(first, 1))
        shape = (n, *[d if isinstance(d, int) else 1 for d in s.shape[1:]])
        out[s.name] = (rng.standard_normal(shape).astype(s.dtype) if np.issubdtype(s.dtype, np.floating)
                       else rng.integers(0, 3, shape).astype(s.dtype))  # fmt: skip
    return out


def _runner(proto: onnx.ModelProto, name: str, runtime: str, compile_fn, num_threads) -> Callable:
    """A function feed -> list of outputs, in the model's output order."""
    names = [o.name for o in proto.graph.output]
    if runtime == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        if num_threads:
            so.intra_op_num_threads = num_threads
        try:
            sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise TensorforgeError(f"model '{name}': ONNX Runtime cannot load it: {' '.join(str(e).split())}") from None
        return lambda feed: sess.run(names, dict(feed))
    runner = Runner(proto, compile_fn, name, num_threads)
    return lambda feed: [runner(feed)[n] for n in names]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [np.asarray(p) for p in parts]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts[0].ndim else np.stack(parts)


def _agreement(name: str, ref: list[np.ndarray], outs: list[np.ndarray]) -> tuple[float, float, float | None]:
    max_abs, scale = 0.0, 0.0
    for i, (r, y) in enumerate(zip(ref, outs)):
        if r.shape != y.shape:
            raise TensorforgeError(f"model '{name}': output {i} has shape {list(y.shape)}, the reference's "
                                   f"{list(r.shape)}")  # fmt: skip
        if r.size:
            d = np.abs(y.astype(np.float64) - r.astype(np.float64))
            max_abs = max(max_abs, float(np.nanmax(d)) if not np.isnan(d).all() else float("nan"))
            scale = max(scale, float(np.abs(r.astype(np.float64)).max()))
    top1 = None
    r, y = ref[0], outs[0]
    if r.ndim == 2 and r.shape[1] > 1 and np.issubdtype(r.dtype, np.floating):
        top1 = float(np.mean(r.argmax(axis=1) == y.argmax(axis=1)))
    return max_abs, (max_abs / scale if scale > 0 else max_abs), top1


def _latencies(runners: list[Callable], feed: Mapping, blocks: int, block_seconds: float) -> list[float]:
    """Median seconds per call of each runner on ``feed``, blocks alternating between runners."""
    reps = []
    for run in runners:
        run(feed)  # warm up (first-call compilation, caches)
        t0 = time.perf_counter()
        run(feed)
        reps.append(max(1, int(block_seconds / max(time.perf_counter() - t0, 1e-7))))
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(blocks):
        for i, run in enumerate(runners):
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                run(feed)
            times[i].append((time.perf_counter() - t0) / reps[i])
    return [float(np.median(t)) for t in times]


__all__ = ["RUNTIMES", "Comparison", "Row", "compare", "random_data"]
