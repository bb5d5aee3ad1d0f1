"""Calibration: the fp32 model run on sample inputs, with the ranges of chosen tensors observed.

**Calibration data** is one of
* an ``.npz`` file with one array per model input, named after it, whose first axis counts samples: the
  samples are stacked along the model's first (batch) axis, so an input of shape ``[N, 3, 224, 224]`` takes
  an array ``[S, 3, 224, 224]``; when that axis is fixed (``[1, 3, 224, 224]``), ``S`` must be a multiple of it;
* a directory of such ``.npz`` files (read in name order), or a ``{input name: array}`` dict of the same form;
* from Python, any iterable of ``{input name: array}`` dicts, each one a complete feed for one run (as
  onnxruntime's ``CalibrationDataReader`` yields them).

Names, dtypes and shapes are checked against the model's inputs before anything runs. The model runs
compiled by tensorforge itself (a copy whose outputs include the observed tensors), ``batch_size`` samples
per call when its batch axis is symbolic.

**Observers** (``OBSERVERS``, chosen by name): ``minmax`` (the extremes seen), ``percentile`` (the
``percentile``-th and ``100 - percentile``-th percentiles of a histogram, clipping rare outliers) and
``entropy`` (TensorRT's method: the clipping threshold whose 128-level quantized histogram is closest to
the original one in KL divergence). Histograms have 2048 bins a side over [-R, R]; when data outgrows R,
R doubles and neighbouring bins merge, which is exact, so one pass over the data suffices.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError, TensorforgeError
from ..util.progress import Progress
from .onnx_graph import InputInfo, elem_types, inputs

METHODS = ("minmax", "percentile", "entropy")


# ---------------------------------------------------------------------------------------------- the data


class Samples:
    """Validated calibration data: ``batches(n)`` yields feeds of up to ``n`` samples (exactly the fixed batch
    size when the model's first axis is fixed); ``count`` is the number of samples (None for an iterable of
    feeds, whose length is known only once it is read)."""

    def __init__(self, data, specs: list[InputInfo], model: str, what: str = "calibration data"):
        self.specs, self.model, self.what = specs, model, what
        self.stacked: list[tuple[str, dict[str, np.ndarray]]] | None = None
        self.feeds: Iterable | None = None
        if isinstance(data, str | os.PathLike):
            self.stacked = [(p, _read_npz(p, what)) for p in _npz_files(os.fspath(data), what)]
        elif isinstance(data, Mapping):
            self.stacked = [("the dict", dict(data))]
        elif isinstance(data, Iterable) and not isinstance(data, bytes | np.ndarray):
            self.feeds = data
        else:
            raise InputError(f"{what} for model '{model}': expected an .npz file, a directory of .npz files, a "
                             f"dict of arrays or an iterable of dicts, got {type(data).__name__}")  # fmt: skip
        self.count = None
        if self.stacked is not None:
            self.count = sum(self._check_stacked(src, arrays) for src, arrays in self.stacked)
            if self.count == 0:
                raise InputError(f"{what} for model '{model}' is empty: no samples")

    def _check_names(self, src: str, arrays: Mapping) -> None:
        want = [s.name for s in self.specs]
        missing = [n for n in want if n not in arrays]
        extra = [n for n in arrays if n not in want]
        if missing or extra:
            parts = [f"missing input{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}"] if missing else []
            if extra:
                parts.append(f"unknown name{'s' * (len(extra) > 1)} {', '.join(map(repr, extra))}")
            raise InputError(f"{self.what} ({src}) for model '{self.model}': {'; '.join(parts)} (the model's inputs: "
                             f"{', '.join(want)})")  # fmt: skip

    def _check_dtype(self, src: str, spec: InputInfo, a: np.ndarray) -> None:
        if a.dtype != spec.dtype:
            raise InputError(f"{self.what} ({src}) for model '{self.model}': input '{spec.name}' has dtype {a.dtype}, "
                             f"expected {spec.dtype}")  # fmt: skip

    def _check_stacked(self, src: str, arrays: dict[str, np.ndarray]) -> int:
        self._check_names(src, arrays)
        counts = {}
        for s in self.specs:
            a = arrays[s.name] = np.asarray(arrays[s.name])
            self._check_dtype(src, s, a)
            if a.ndim != len(s.shape) or not s.shape:
                raise InputError(f"{self.what} ({src}) for model '{self.model}': input '{s.name}' has shape "
                                 f"{list(a.shape)}; expected samples stacked along the first axis of "
                                 f"{_fmt_shape(s.shape)}, i.e. rank {len(s.shape)}")  # fmt: skip
            for i, (want, got) in enumerate(zip(s.shape[1:], a.shape[1:]), 1):
                if isinstance(want, int) and want != got:
                    raise InputError(f"{self.what} ({src}) for model '{self.model}': input '{s.name}' has shape "
                                     f"{list(a.shape)}, expected [samples, {_fmt_shape(s.shape[1:])[1:]} "
                                     f"(axis {i} is {got}, the model's is {want})")  # fmt: skip
            if isinstance(s.shape[0], int) and s.shape[0] > 0 and a.shape[0] % s.shape[0]:
                raise InputError(f"{self.what} ({src}) for model '{self.model}': input '{s.name}' has {a.shape[0]} "
                                 f"samples, not a multiple of the model's fixed batch size {s.shape[0]}")  # fmt: skip
            counts[s.name] = a.shape[0]
        if len(set(counts.values())) > 1:
            raise InputError(f"{self.what} ({src}) for model '{self.model}': the inputs have different sample counts "
                             f"({', '.join(f'{k}: {v}' for k, v in counts.items())})")  # fmt: skip
        return next(iter(counts.values()), 0)

    def _check_feed(self, i: int, feed) -> dict[str, np.ndarray]:
        src = f"item {i}"
        if not isinstance(feed, Mapping):
            raise InputError(f"{self.what} for model '{self.model}': {src} is a {type(feed).__name__}, expected a "
                             "dict {input name: array}")  # fmt: skip
        self._check_names(src, feed)
        out, dims = {}, {}
        for s in self.specs:
            a = np.asarray(feed[s.name])
            self._check_dtype(src, s, a)
            ok = a.ndim == len(s.shape) and all(
                (w == g) if isinstance(w, int) else (w == "?" or dims.setdefault(w, g) == g)
                for w, g in zip(s.shape, a.shape)
            )
            if not ok:
                raise InputError(f"{self.what} ({src}) for model '{self.model}': input '{s.name}' has shape "
                                 f"{list(a.shape)}, expected {_fmt_shape(s.shape)}")  # fmt: skip
            out[s.name] = a
        return out

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        if self.feeds is not None:
            n = 0
            for n, feed in enumerate(self.feeds, 1):
                yield self._check_feed(n - 1, feed)
            if n == 0:
                raise InputError(f"{self.what} for model '{self.model}' is empty: the iterable yielded no feeds")
            return
        first = self.specs[0].shape[0] if self.specs else 1
        step = first if isinstance(first, int) and first > 0 else batch_size
        for _, arrays in self.stacked:
            total = next(iter(arrays.values())).shape[0]
            for i in range(0, total, step):
                yield {k: np.ascontiguousarray(v[i : i + step]) for k, v in arrays.items()}

    def runs(self, batch_size: int) -> int | None:
        """How many feeds ``batches`` yields (None when unknown)."""
        if self.count is None:
            try:
                return len(self.feeds)  # type: ignore[arg-type]
            except TypeError:
                return None
        first = self.specs[0].shape[0] if self.specs else 1
        step = first if isinstance(first, int) and first > 0 else batch_size
        return sum(-(-next(iter(a.values())).shape[0] // step) for _, a in self.stacked)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _npz_files(path: str, what: str) -> list[str]:
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".npz"))
        if not files:
            raise InputError(f"{what}: directory {path!r} holds no .npz files")
        return files
    if not os.path.isfile(path):
        raise InputError(f"{what}: {path!r}: no such file or directory")
    return [path]


def _read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):
            raise ValueError("a single array (.npy), not an .npz archive with one array per input name")
        with f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{what}: cannot read {path!r}: {e}") from None


# ------------------------------------------------------------------------------------------- observers


class MinMax:
    """The smallest and largest value seen."""

    def __init__(self, **_):
        self.lo, self.hi = np.inf, -np.inf

    def update(self, x: np.ndarray) -> None:
        if x.size:
            self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))

    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


class Histogram(MinMax):
    """Counts of values in 2048 bins a side over [-R, R] (growing by doublings, merging bins exactly)."""

    BINS = 2048

    def __init__(self, **kw):
        super().__init__(**kw)
        self.width = 0.0
        self.pos = np.zeros(self.BINS, np.int64)  # [i*w, (i+1)*w)
        self.neg = np.zeros(self.BINS, np.int64)  # (-(i+1)*w, -i*w]... for x < 0

    def update(self, x: np.ndarray) -> None:
        if not x.size:
            return
        super().update(x)
        a = max(-self.lo, self.hi)
        if not np.isfinite(a):
            return
        if self.width == 0.0:
            self.width = (a if a > 0 else 1.0) / self.BINS
        while a > self.width * self.BINS:
            for h in (self.pos, self.neg):
                merged = h.reshape(-1, 2).sum(axis=1)
                h[:] = 0
                h[: merged.size] = merged
            self.width *= 2
        x = x.ravel()
        for h, part in ((self.pos, x[x >= 0]), (self.neg, -x[x < 0])):
            if part.size:
                idx = np.minimum((part / self.width).astype(np.int64), self.BINS - 1)
                h += np.bincount(idx, minlength=self.BINS)

    def signed(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts over [-R, R] and the bin edges."""
        edges = np.arange(-self.BINS, self.BINS + 1) * self.width
        return np.concatenate([self.neg[::-1], self.pos]), edges


class Percentile(Histogram):
    """The ``percentile``-th and (100 - ``percentile``)-th percentiles (clipped to what was seen)."""

    def __init__(self, percentile: float = 99.99, **kw):
        super().__init__(**kw)
        if not 50 < percentile <= 100:
            raise TensorforgeError(f"percentile must be in (50, 100], got {percentile}")
        self.p = percentile

    def range(self) -> tuple[float, float]:
        if self.width == 0.0 or not np.isfinite(self.lo) or not np.isfinite(self.hi):
            return self.lo, self.hi
        h, edges = self.signed()
        cdf = np.cumsum(h) / h.sum()
        hi = edges[1 + int(np.searchsorted(cdf, self.p / 100))]
        lo = edges[int(np.searchsorted(cdf, 1 - self.p / 100))]
        return max(self.lo, float(lo)), min(self.hi, float(hi))


class Entropy(Histogram):
    """TensorRT's entropy calibration on |x|: the threshold T minimizing KL(P || Q) where P is the
    histogram up to T (outliers added to its last bin) and Q that histogram quantized to 128 levels."""

    LEVELS = 128

    def range(self) -> tuple[float, float]:
        if self.width == 0.0 or not np.isfinite(self.lo) or not np.isfinite(self.hi):
            return self.lo, self.hi
        t = (kl_threshold(self.pos + self.neg, self.LEVELS) or 0) * self.width
        if t == 0:
            return self.lo, self.hi
        return max(self.lo, -t), min(self.hi, t)


def kl_threshold(hist: np.ndarray, levels: int = 128) -> int | None:
    """The number of leading bins of ``hist`` to keep (the clipping threshold in bins), by minimum KL
    divergence; None when the histogram is empty."""
    nz = np.flatnonzero(hist)
    if nz.size == 0:
        return None
    last = int(nz[-1]) + 1
    if last <= levels:
        return last
    h = hist[:last].astype(np.float64)
    if h.size > 1:  # the spike of exact zeros (after a Relu) would pull the threshold down: weigh it like bin 1
        h[0] = h[1]
    tail = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # tail[i] = sum(h[i:])
    best, best_i = np.inf, last
    for i in range(levels, last + 1):
        p = h[:i].copy()
        p[-1] += tail[i]
        group = (np.arange(i) * levels) // i
        used = p != 0
        sums = np.bincount(group, weights=h[:i], minlength=levels)
        counts = np.bincount(group, weights=used, minlength=levels)
        q = np.where(used, sums[group] / np.maximum(counts[group], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        mask = p > 0
        pn, qn = p[mask] / ps, np.maximum(q[mask] / qs, 1e-12)
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best:
            best, best_i = kl, i
    return best_i


OBSERVERS = {"minmax": MinMax, "percentile": Percentile, "entropy": Entropy}


def observer(method: str, **kw):
    if method not in OBSERVERS:
        raise TensorforgeError(f"unknown calibration method {method!r}; methods: {', '.join(OBSERVERS)}")
    return OBSERVERS[method](**kw)


# --------------------------------------------------------------------------------------------- the run


def calibrate(proto: onnx.ModelProto, tensors: list[str], data, method: str = "minmax", *, compile_fn: Callable,
              name: str = "model", percentile: float = 99.99, batch_size: int = 32, num_threads: int | None = None
              ) -> dict[str, tuple[float, float]]:  # fmt: skip
    """The observed range (lo, hi) of each of ``tensors`` over the calibration ``data``, the model run by
    ``compile_fn`` (``tfg.compile``: the compiler hands itself down, so that compress/ never imports it)."""
    observer(method, percentile=percentile)  # an unknown method fails before anything runs
    if batch_size < 1:
        raise TensorforgeError(f"batch_size must be >= 1, got {batch_size}")
    samples = data if isinstance(data, Samples) else Samples(data, inputs(proto), name)
    augmented = with_outputs(proto, tensors)
    obs = {t: observer(method, percentile=percentile) for t in tensors}
    runner = Runner(augmented, compile_fn, name, num_threads)
    with Progress(samples.runs(batch_size), f"calibrating {name} ({method})") as bar:
        for feed in samples.batches(batch_size):
            out = runner(feed)
            for t in tensors:
                obs[t].update(out[t])
            bar.update(1)
    ranges = {t: tuple(map(float, o.range())) for t, o in obs.items()}
    bad = [t for t, (lo, hi) in ranges.items() if not (np.isfinite(lo) and np.isfinite(hi))]
    if bad:
        raise TensorforgeError(f"model '{name}': calibration saw non-finite values (inf or NaN) in tensor"
                               f"{'s' * (len(bad) > 1)} {', '.join(map(repr, bad[:5]))}"
                               f"{' ...' if len(bad) > 5 else ''}; no scale can represent them")  # fmt: skip
    return ranges


def with_outputs(proto: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` whose graph outputs include ``tensors``."""
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    types = elem_types(m)
    for t in tensors:
        if t not in have:
            m.graph.output.append(helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
    return m


class Runner:
    """A model compiled by tensorforge once per distinct input-shape signature; ``runner(feed)`` returns
    every output by name."""

    def __init__(self, proto: onnx.ModelProto, compile_fn: Callable, name: str, num_threads: int | None = None):
        self.proto, self.compile_fn, self.name, self.num_threads = proto, compile_fn, name, num_threads
        self.compiled: dict[tuple, object] = {}

    def __call__(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = tuple((k, v.shape) for k, v in sorted(feed.items()))
        m = self.compiled.get(key)
        if m is None:
            shapes = {k: list(v.shape) for k, v in feed.items()}
            m = self.compiled[key] = self.compile_fn(self.proto, input_shapes=shapes, num_threads=self.num_threads,
                                                     name=self.name)  # fmt: skip
        return m.run(dict(feed))


__all__ = ["METHODS", "OBSERVERS", "Entropy", "Histogram", "MinMax", "Percentile", "Runner", "Samples", "calibrate",
           "kl_threshold", "observer", "with_outputs"]  # fmt: skip
