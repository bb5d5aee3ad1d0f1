"""Autotuning: a measured search over the GEMM and convolution plans of a model, kept in a tuning database.

``tune(model)`` lowers the model once to learn which GEMMs and convolutions it has (each by its signature:
for a GEMM dtype, batch, M x N x K, whether B is a constant, transposes: ``lower/gemm.py:gemm_signature``;
for a convolution its whole geometry: ``lower/conv.py:conv_signature``). For each it builds a one-node model
and a set of candidate plans — the cost model's default, the next best register tiles, K blocks, B packed or
read in place, the conv orientation (pixels or channels in vectors) — compiles them in worker processes side by side
(``codegen/parallel.py``) and measures them here, one at a time (rounds of alternating blocks, the median
per candidate), so that measurements do not disturb each other. The best plan and its time beside the
default's go into the database under the CPU it ran on (model name, LLVM's CPU and a digest of its
features): plans tuned on one CPU are never used on another.

``compile`` consults the database (``default_db_path()``, or the file given) for the host's CPU: the plans
become the lowering options ``gemm_tuned`` and ``conv_tuned`` (``plan_gemm``, ``plan_conv``), so they are part of the
compile-cache key and a new tuning result recompiles. The file is JSON, written atomically, and can be
shipped with a model (``--tuning-db FILE``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..codegen.emit import llvm_lock
from ..codegen.parallel import fork_map
from ..codegen.targets import Target, host
from ..errors import TensorforgeError
from ..ir.dtype import DType
from ..lower.gemm_plan import GemmPlan, plan_gemm, ranked_tiles
from ..util.files import atomic_write
from .pipeline import Build, Options

DB_VERSION = 1


class TuningError(TensorforgeError):
    """A tuning database that cannot be read or written."""


# -- the database ----------------------------------------------------------------------------------
def cpu_key(target: Target | None = None) -> str:
    """Which CPU a plan was measured on: the processor's model name, LLVM's CPU name and its features."""
    target = target or host()
    return _cpu_key(target.cpu, target.features)


@functools.cache
def _cpu_key(cpu: str, features: str) -> str:
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    feats = hashlib.sha256(features.encode()).hexdigest()[:10]
    return f"{name or 'unknown'} | {cpu} | {feats}"


def default_db_path() -> str | None:
    """``tuning.json`` in the compile-cache directory (None when caching is off)."""
    from ..runtime.cache import cache_dir

    d = cache_dir()
    return None if d is None else os.path.join(d, "tuning.json")


def load_db(path: str | None) -> dict:
    """The database at ``path`` ({"version", "cpus": {cpu: {signature: record}}}); empty when there is none."""
    if path is None or not os.path.exists(path):
        return {"version": DB_VERSION, "cpus": {}}
    try:
        with open(path) as f:
            db = json.load(f)
    except (OSError, ValueError) as e:
        raise TuningError(f"tuning database {path!r} cannot be read: {e}") from None
    if not isinstance(db, dict) or db.get("version") != DB_VERSION or not isinstance(db.get("cpus"), dict):
        raise TuningError(f"tuning database {path!r} is not a version-{DB_VERSION} tensorforge tuning database")
    return db


def save_db(db: dict, path: str) -> None:
    atomic_write(path, json.dumps(db, indent=1, sort_keys=True))


_PLAN_FIELDS = {"matmul": set(GemmPlan.__dataclass_fields__) - {"W"}, "conv": {"MR", "nv", "pix_vec"}}
_OPTION = {"matmul": "gemm_tuned", "conv": "conv_tuned"}  # the lowering option each kind's plans go to


def tuned_plans(path: str | None, target: Target) -> dict[str, dict]:
    """{signature: plan fields} measured on this target's CPU (for ``Options.lowering["gemm_tuned"]``)."""
    if not target.is_host or path is None or not os.path.exists(path):
        return {}
    recs = load_db(path)["cpus"].get(cpu_key(target), {})
    out = {}
    for sig, rec in sorted(recs.items()):
        plan = rec.get("plan") if isinstance(rec, dict) else None
        fields = _PLAN_FIELDS.get(sig.split("/", 1)[0])
        if isinstance(plan, dict) and plan and fields is not None and set(plan) <= fields:
            out[sig] = dict(sorted(plan.items()))
    return out


def tuned_lowering(path: str | None, target: Target) -> dict:
    """The lowering options carrying the tuned plans for ``target``'s CPU: ``gemm_tuned``, ``conv_tuned``."""
    out: dict[str, dict] = {}
    for sig, plan in tuned_plans(path, target).items():
        out.setdefault(_OPTION[sig.split("/", 1)[0]], {})[sig] = plan
    return out


# -- the search ------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    signature: str
    default_seconds: float
    best_seconds: float
    plan: dict  # the best plan's fields that differ from the default ({}: the default won)
    candidates: int

    @property
    def speedup(self) -> float:
        return self.default_seconds / self.best_seconds if self.best_seconds else 1.0


def signatures(model, target: Target, options: Options | None = None) -> dict[str, dict]:
    """The GEMMs and convolutions the model lowers to: {signature: geometry} (lowered once, nothing compiled).
    A signature starts with its kind: ``matmul/`` or ``conv/``."""
    gemms: dict[str, dict] = {}
    convs: dict[str, dict] = {}
    opts = Options(**{**(options or Options()).__dict__})
    opts.lowering = {**opts.lowering, "gemm_signatures": gemms, "conv_signatures": convs}
    Build(model, target, opts).run("lower")
    return {**gemms, **convs}


def candidates(sig: str, info: dict, target: Target) -> list[dict]:
    """Plans worth measuring for one GEMM or convolution, the default (``{}``) first."""
    out = _conv_candidates(info, target) if sig.startswith("conv/") else _gemm_candidates(info, target)
    uniq, seen = [], set()
    for c in out:
        key = tuple(sorted(c.items()))
        if key not in seen:
            seen.add(key)
            uniq.append(c)
    return uniq


def _gemm_candidates(info: dict, target: Target) -> list[dict]:
    """Other register tiles (the cost model's next best), K blocks, for a run-time B packing it or not, the
    other loop order."""
    dt = DType.parse(info["dtype"])
    M, N, K = info["M"], info["N"], info["K"]
    ctx = type("Ctx", (), {"target": target, "options": {}})()
    default = plan_gemm(ctx, dt, M, N, K, info["batch"])
    out: list[dict] = [{}]
    tiles = [tile for tile in ranked_tiles(target, dt, M, N, K) if tile != (default.MR, default.nv)]
    out += [{"MR": mr, "nv": nv} for mr, nv in tiles[:4]]
    if K >= 128:
        for kc in (K // 2, 256, 128):
            kc = kc // 4 * 4
            if 16 <= kc < K and kc != default.KC:
                out.append({"KC": kc})
    if not info["const_b"] and not info["trans_b"]:
        out += [{"pack_b": True}, {"pack_b": False}]
    if default.order == "mp":
        out.append({"order": "pm"})
    return out


def _conv_candidates(info: dict, target: Target) -> list[dict]:
    """Both orientations (pixels or output channels in vectors), each with its next best register tiles
    (``lower/conv.py:plan_conv``: a direct input without masked loads needs pixel tiles that divide the image;
    channels in vectors needs MR to divide the output width)."""
    dt = DType.parse(info["dtype"])
    W = target.lanes(dt)
    nq, mg, K, ow = info["nq"], info["mg"], info["K"], info["ow"]
    direct_ok = not info["direct"] or target.masked_ops
    out: list[dict] = [{}, {"pix_vec": True}, {"pix_vec": False}]
    pix = ranked_tiles(target, dt, mg, nq, K, keep=lambda mr, nv: nv <= 8 and (direct_ok or nq % (nv * W) == 0))
    out += [{"pix_vec": True, "MR": mr, "nv": nv} for mr, nv in pix[:2]]
    chan = ranked_tiles(target, dt, info["oh"] * ow, mg, K, keep=lambda mr, nv: ow % mr == 0)
    out += [{"pix_vec": False, "MR": mr, "nv": nv} for mr, nv in chan[:2]]
    return out


def _micro_model(sig: str, info: dict, rng: np.random.Generator):
    """A one-node model computing this GEMM or convolution, and its inputs (None when it cannot be built)."""
    if sig.startswith("conv/"):
        return _conv_model(sig, info, rng)
    return _gemm_model(sig, info, rng)


def _conv_model(sig: str, info: dict, rng: np.random.Generator):
    from onnx import TensorProto, helper, numpy_helper

    if info["dtype"] != "f32":
        return None, None
    x = rng.standard_normal(info["x"]).astype(np.float32)
    w = (rng.standard_normal(info["w"]) / np.sqrt(info["K"])).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=info["strides"], dilations=info["dilations"],
                            pads=info["pads"], group=info["group"])  # fmt: skip
    graph = helper.make_graph([node], "tune_" + hashlib.sha256(sig.encode()).hexdigest()[:8],
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, info["x"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), {"x": x}


def _gemm_model(sig: str, info: dict, rng: np.random.Generator):
    from onnx import TensorProto, helper, numpy_helper

    dt = DType.parse(info["dtype"])
    npdt = dt.np
    b_, M, N, K = info["batch"], info["M"], info["N"], info["K"]
    a_shape = [b_, M, K] if b_ > 1 else [M, K]
    if info["trans_a"]:
        a_shape[-2:] = [K, M]
    b_shape = [b_, K, N] if (b_ > 1 and not info["const_b"]) else [K, N]
    if info["trans_b"]:
        b_shape[-2:] = [N, K]
    a = rng.standard_normal(a_shape).astype(npdt)
    b = rng.standard_normal(b_shape).astype(npdt)
    onnx_dt = {DType.F32: TensorProto.FLOAT, DType.F64: TensorProto.DOUBLE}.get(dt)
    if onnx_dt is None or ((info["trans_a"] or info["trans_b"]) and len(a_shape) != 2):
        return None, None
    if info["trans_a"] or info["trans_b"]:
        node = helper.make_node("Gemm", ["a", "b"], ["c"], transA=int(info["trans_a"]), transB=int(info["trans_b"]))
    else:
        node = helper.make_node("MatMul", ["a", "b"], ["c"])
    ins = [helper.make_tensor_value_info("a", onnx_dt, a_shape)]
    inits = []
    feeds = {"a": a}
    if info["const_b"]:
        inits.append(numpy_helper.from_array(b, "b"))
    else:
        ins.append(helper.make_tensor_value_info("b", onnx_dt, b_shape))
        feeds["b"] = b
    graph = helper.make_graph([node], "tune_" + hashlib.sha256(sig.encode()).hexdigest()[:8], ins,
                              [helper.make_tensor_value_info("c", onnx_dt, None)], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), feeds


def _measure(fns: list[Callable[[], object]], seconds: float) -> list[float]:
    """Median time per call of each function: rounds of one block each, in turn (alternating blocks)."""
    reps = []
    for fn in fns:  # calibrate a block to ~5 ms
        fn()
        t0 = time.perf_counter()
        fn()
        reps.append(max(1, int(0.005 / max(time.perf_counter() - t0, 1e-7))))
    samples: list[list[float]] = [[] for _ in fns]
    end = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or (time.perf_counter() < end and rounds < 15):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(reps[i]):
                fn()
            samples[i].append((time.perf_counter() - t0) / reps[i])
        rounds += 1
    return [float(np.median(s)) for s in samples]


def tune(model, *, budget_seconds: float = 60.0, db_path: str | None = None, num_threads: int | None = None,
         options: Options | None = None, progress: Callable[[str], None] | None = None) -> list[TuneResult]:
    """Tune every GEMM and convolution of ``model`` on this machine within about ``budget_seconds``; records
    the results in the database at ``db_path`` (default: ``default_db_path()``) and returns them, slowest
    default first."""
    from ..runtime.artifact import Artifact
    from ..runtime.model import CompiledModel

    target = host()
    path = db_path or default_db_path()
    if path is None:
        raise TuningError("no tuning database: the compile cache is off (TENSORFORGE_CACHE=0); pass a file")
    db = load_db(path)
    cpu = cpu_key(target)
    sigs = signatures(model, target, options)
    start = time.perf_counter()
    results: list[TuneResult] = []
    rng = np.random.default_rng(0)
    per_sig = budget_seconds / max(1, len(sigs))
    with tempfile.TemporaryDirectory(prefix="tf-tune-") as tmp:
        for n, (sig, info) in enumerate(sorted(sigs.items())):
            if time.perf_counter() - start > budget_seconds:
                if progress:
                    progress(f"time budget spent: {len(sigs) - n} layer(s) left untuned")
                break
            micro, feeds = _micro_model(sig, info, rng)
            if micro is None:
                continue
            cands = candidates(sig, info, target)
            if progress:
                progress(f"[{n + 1}/{len(sigs)}] {sig}: compiling {len(cands)} candidates")

            def build(i: int, micro=micro, cands=cands, sig=sig, n=n) -> str | None:
                os.environ["TENSORFORGE_COMPILE_JOBS"] = "1"  # a worker compiles on its own core
                option = _OPTION[sig.split("/", 1)[0]]
                opts = Options(lowering={option: {sig: cands[i]}} if cands[i] else {})
                try:
                    art = Build(micro, target, opts).run("object").artifact()
                except TensorforgeError:
                    return None  # a candidate the lowering refuses is no candidate
                out = os.path.join(tmp, f"{n}_{i}.tfa")
                art.save(out)
                return out

            paths = fork_map(build, len(cands), llvm_lock())
            models, kept = [], []
            for c, p in zip(cands, paths):
                if p is not None:
                    models.append(CompiledModel(Artifact.load(p), num_threads))
                    kept.append(c)
            if not models or kept[0] != {}:
                continue
            want = models[0].run(feeds)
            for m in models[1:]:  # a faster wrong answer is no candidate
                got = m.run(feeds)
                for k in want:
                    if not np.allclose(got[k], want[k], rtol=1e-3, atol=1e-3 * np.sqrt(info["K"])):
                        raise TuningError(f"{sig}: a candidate plan computes a different result (a lowering bug)")
            args = tuple(feeds.values())
            times = _measure([lambda m=m, a=args: m(*a) for m in models], min(per_sig, 3.0))
            best = int(np.argmin(times))
            res = TuneResult(sig, times[0], times[best], kept[best], len(kept))
            results.append(res)
            db["cpus"].setdefault(cpu, {})[sig] = {
                "plan": res.plan, "default_seconds": res.default_seconds, "best_seconds": res.best_seconds,
                "candidates": res.candidates, "tuned": time.strftime("%Y-%m-%d %H:%M:%S"),
            }  # fmt: skip
            save_db(db, path)
            if progress:
                progress(f"    default {res.default_seconds * 1e6:.1f} us, best {res.best_seconds * 1e6:.1f} us "
                         f"({res.speedup:.2f}x) {res.plan or '(the default)'}")  # fmt: skip
    return sorted(results, key=lambda r: -r.default_seconds)


__all__ = ["TuneResult", "TuningError", "candidates", "cpu_key", "default_db_path", "load_db", "save_db",
           "signatures", "tune", "tuned_lowering", "tuned_plans"]  # fmt: skip
