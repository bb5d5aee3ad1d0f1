"""The machine's limits, so every benchmark and profile can say "% of peak".

fp32 peak = FMA units x lanes per unit x 2 flops x cores x clock. The FMA datapath comes from the
target description (``Target.fma_units`` / ``fma_bits``: a Zen 4 core has two 256-bit FMA pipes, so
a 512-bit FMA takes both); the clock is measured, because under turbo (and in a VM) no file tells it:
a chain of dependent integer adds retires one add per cycle on every x86 core since the Pentium Pro,
so adds per second of thread CPU time is the clock. Two probes check the model: an FMA loop with
enough independent accumulators to fill the pipes (per-core FMA throughput), and a streaming sum over
128 MB (memory bandwidth, one thread and all cores, through a kernel compiled by tensorforge itself).

Measuring takes about a second; results are cached per CPU model in the compile cache directory.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass

from ..codegen.targets import Target, host

PROBE_ADDS = 400  # dependent adds per loop iteration in the clock probe
PROBE_FMA_CHAINS = 12  # independent accumulators (>= latency x pipes) in the FMA probe


@dataclass(frozen=True)
class MachinePeak:
    cpu: str
    cores: int
    clock_ghz: float  # measured
    fma_units: int
    fma_bits: int
    vector_bits: int
    fma_gflops_core: float  # measured: one core, FMA-only loop on the widest vectors
    mem_gbs_1: float  # measured: streaming read, one thread
    mem_gbs_all: float  # measured: streaming read, all cores

    @property
    def flops_per_cycle(self) -> int:
        """fp32 flops per cycle per core: units x lanes x 2 (multiply and add)."""
        return self.fma_units * (self.fma_bits // 32) * 2

    def gflops(self, threads: int | None = None) -> float:
        """fp32 peak GFLOP/s on ``threads`` cores (all by default)."""
        n = self.cores if threads is None else max(1, min(threads, self.cores))
        return self.flops_per_cycle * self.clock_ghz * n

    def bandwidth(self, threads: int | None = None) -> float:
        """Measured memory bandwidth (GB/s) with ``threads`` threads (one or all cores)."""
        return self.mem_gbs_1 if threads == 1 or self.cores == 1 else self.mem_gbs_all

    def percent(self, gflops: float, threads: int | None = None) -> float:
        return 100.0 * gflops / self.gflops(threads)

    def describe(self) -> str:
        return (f"{self.cpu}: {self.cores} cores at {self.clock_ghz:.2f} GHz (measured), {self.fma_units} x "
                f"{self.fma_bits}-bit FMA per core = {self.flops_per_cycle} fp32 flop/cycle -> peak "
                f"{self.gflops(1):.1f} GFLOP/s per core, {self.gflops():.1f} on all cores "
                f"(FMA probe: {self.fma_gflops_core:.1f} per core); memory {self.mem_gbs_1:.1f} GB/s on one "
                f"thread, {self.mem_gbs_all:.1f} GB/s on all")  # fmt: skip


# -- probes -------------------------------------------------------------------------------------------
def _jit(ir_text: str):
    import llvmlite.binding as llvm

    from .jit import JitModule

    llvm.initialize_native_asmparser()  # the probes are inline assembly
    return JitModule(ir_text, host())


def _clock_ir() -> str:
    adds = "\\0A".join(["addq $$1, %rax"] * PROBE_ADDS)
    return f"""
define void @tf_probe_clock(i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  call void asm sideeffect "{adds}", "~{{rax}},~{{flags}}"()
  %next = add i64 %i, 1
  %done = icmp sge i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}}
"""


def _fma_ir(t: Target) -> tuple[str, int]:
    """An FMA loop on the widest registers: PROBE_FMA_CHAINS independent vfmadd231ps per step."""
    reg, lanes = ("zmm", 16) if t.vector_bits >= 512 else ("ymm", 8) if t.vector_bits >= 256 else ("xmm", 4)
    body = "\\0A".join(f"vfmadd231ps %{reg}30, %{reg}31, %{reg}{i}" for i in range(PROBE_FMA_CHAINS))
    clobbers = ",".join([*(f"~{{{reg}{i}}}" for i in [*range(PROBE_FMA_CHAINS), 30, 31]), "~{flags}"])
    return (
        f"""
define void @tf_probe_fma(i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  call void asm sideeffect "{body}\\0A{body}", "{clobbers}"()
  %next = add i64 %i, 1
  %done = icmp sge i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}}
""",
        lanes,
    )


def _best_rate(fn, n: int, work_per_iter: float, repeats: int = 5) -> float:
    """Work per second of this thread's CPU time (immune to being descheduled), best of ``repeats``."""
    fn(n // 10)
    best = 0.0
    for _ in range(repeats):
        t0 = time.thread_time()
        fn(n)
        dt = time.thread_time() - t0
        if dt > 0:
            best = max(best, n * work_per_iter / dt)
    return best


def measure_clock_ghz() -> float:
    import ctypes

    jm = _jit(_clock_ir())
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int64)(jm.address("tf_probe_clock"))
    return _best_rate(fn, 200_000, PROBE_ADDS) / 1e9


def measure_fma_gflops(t: Target) -> float:
    import ctypes

    ir_text, lanes = _fma_ir(t)
    jm = _jit(ir_text)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int64)(jm.address("tf_probe_fma"))
    return _best_rate(fn, 100_000, 2 * PROBE_FMA_CHAINS * lanes * 2) / 1e9


def measure_bandwidth_gbs(threads: int, mbytes: int = 128) -> float:
    """Streaming read bandwidth: a row-sum over ``mbytes`` (4x a typical L3) compiled by tensorforge,
    ``threads`` threads, best of 5."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from ..compiler import compile as tf_compile

    rows = 64
    cols = mbytes * (1 << 20) // 4 // rows
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    graph = helper.make_graph(
        [node], "bandwidth_probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, cols])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows])],
        [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m = tf_compile(model, num_threads=threads)
    x = np.ones((rows, cols), np.float32)
    m(x)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        m(x)
        best = min(best, time.perf_counter() - t0)
    return x.nbytes / best / 1e9


# -- the cached result ---------------------------------------------------------------------------------
def _cache_path(t: Target) -> str | None:
    from .cache import cache_dir

    d = cache_dir()
    if d is None:
        return None
    cpu = "".join(ch if ch.isalnum() else "_" for ch in t.cpu)
    return os.path.join(d, f"peak-{cpu}-{t.cores}c-{t.vector_bits}b.json")


def measure(t: Target | None = None) -> MachinePeak:
    t = t or host()
    fma = measure_fma_gflops(t)
    clock = measure_clock_ghz()
    bw1 = measure_bandwidth_gbs(1)
    # more threads never have less bandwidth available (one could idle): a lower number is noise
    bwn = max(bw1, measure_bandwidth_gbs(t.cores)) if t.cores > 1 else bw1
    return MachinePeak(t.cpu, t.cores, round(clock, 3), t.fma_units, t.fma_bits, t.vector_bits, round(fma, 1),
                       round(bw1, 1), round(bwn, 1))  # fmt: skip


@functools.cache
def machine_peak(refresh: bool = False) -> MachinePeak:
    """The host's peak model, measured once per machine and cached on disk (``refresh`` re-measures)."""
    t = host()
    path = _cache_path(t)
    if path and not refresh and os.path.exists(path):
        try:
            with open(path) as f:
                return MachinePeak(**json.load(f))
        except (OSError, TypeError, ValueError):
            pass
    p = measure(t)
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(asdict(p), f)
            os.replace(tmp, path)
        except OSError:
            pass
    return p


__all__ = ["MachinePeak", "machine_peak", "measure", "measure_bandwidth_gbs", "measure_clock_ghz",
           "measure_fma_gflops"]  # fmt: skip
