"""The machine model (runtime/peak.py): its probes compute what they claim and return physically
plausible numbers on any CPU, the clock's cross-check and the non-x86 paths, the model's arithmetic on
synthetic numbers, and its on-disk cache. Nothing here asserts this host's clock, caches or speed."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from tensorforge.codegen.targets import host
from tensorforge.errors import CompileError
from tensorforge.runtime import peak
from tensorforge.runtime.peak import MachinePeak

FLOPS_PER_CYCLE = {2, 4, 8, 16, 32, 64, 128}  # 128-bit SSE without FMA .. four 512-bit FMA pipes


def _synthetic(**changes) -> MachinePeak:
    p = MachinePeak(cpu="cpu", cores=4, clock_ghz=3.0, clock_source="measured", vector_bits=512,
                    fma_gflops_core=96.0, mem_gbs_1=10.0, mem_gbs_all=25.0, mem_probe_mib=256)  # fmt: skip
    return dataclasses.replace(p, **changes)


def test_fma_probe_plausible_at_every_width():
    """One core's fp32 FMA rate: between a slow 128-bit core and four 512-bit pipes at 6 GHz, at the
    host's widest vectors and at narrower ones."""
    t = host()
    for bits in sorted({128, min(256, t.vector_bits), t.vector_bits}):
        gflops = peak.measure_fma_gflops(dataclasses.replace(t, vector_bits=bits))
        assert math.isfinite(gflops) and 1.0 < gflops < 4 * 64 * 6.0, (bits, gflops)


def test_fma_probe_keeps_independent_accumulators():
    """Enough chains for latency x pipes on any core, none beyond the registers next to m and c."""
    t = host()
    assert peak.fma_chains(dataclasses.replace(t, num_vregs=16)) == 12
    assert peak.fma_chains(dataclasses.replace(t, num_vregs=32)) == peak.MAX_FMA_CHAINS >= 16
    ir_text = peak._fma_ir(16, 24)
    assert ir_text.count("@llvm.fmuladd.v16f32(") == 24 * peak.FMA_UNROLL + 1  # + the declaration
    assert ir_text.count("load <16 x float>") == 2 + 24  # m, c and every start value come from memory


def test_clock_probe_plausible():
    clock, source = peak.measure_clock()
    assert clock is None or (math.isfinite(clock) and 0.2 < clock < 7.0), (clock, source)
    assert source


def test_clock_cross_check_rejects_a_chain_run_at_rename():
    assert peak.cross_checked_clock(3.0, 3.1) == pytest.approx(3.05)
    assert peak.cross_checked_clock(24.0, 3.1) is None  # immediate adds executed at rename (Golden Cove)
    assert peak.cross_checked_clock(3.0, 1.8) is None  # an imul slower than 3 cycles
    assert peak.cross_checked_clock(0.0, 0.0) is None


def _no_jit(*args, **kwargs):
    raise AssertionError("a probe was JIT-compiled")


def test_clock_off_x86_reads_cpufreq_and_runs_no_asm(monkeypatch, tmp_path):
    arm = dataclasses.replace(host(), triple="aarch64-unknown-linux-gnu")
    monkeypatch.setattr(peak, "_jit", _no_jit)
    freq = tmp_path / "cpuinfo_max_freq"
    monkeypatch.setattr(peak, "CPUFREQ_MAX", str(freq))
    clock, source = peak.measure_clock(arm)
    assert clock is None and "no clock probe for aarch64" in source and "no cpufreq" in source
    freq.write_text("2600000\n")
    clock, source = peak.measure_clock(arm)
    assert clock == pytest.approx(2.6) and "cpufreq" in source


def test_clock_falls_back_when_x86_chains_disagree(monkeypatch, tmp_path):
    x86 = dataclasses.replace(host(), triple="x86_64-unknown-linux-gnu")
    monkeypatch.setattr(peak, "_x86_chain_ghz", lambda t: (24.0, 3.0))
    monkeypatch.setattr(peak, "CPUFREQ_MAX", str(tmp_path / "missing"))
    clock, source = peak.measure_clock(x86)
    assert clock is None and "disagree" in source
    monkeypatch.setattr(peak, "_x86_chain_ghz", lambda t: (3.02, 2.98))
    assert peak.measure_clock(x86) == (pytest.approx(3.0), "measured")


def test_stream_reader_reads_every_byte(rng):
    fn, step = peak.stream_reader()
    steps = 37
    buf = rng.integers(0, 2**32, size=steps * step // 4, dtype=np.uint64).astype(np.uint32)
    assert fn(buf.ctypes.data, steps) == int(buf.sum(dtype=np.uint64)) % 2**32
    assert fn(buf.ctypes.data + step, 1) == int(buf[step // 4 : 2 * step // 4].sum(dtype=np.uint64)) % 2**32


def test_bandwidth_probe_plausible_with_any_thread_count():
    """Small buffer (it may sit in cache): positive finite rates below 10 TB/s; the probe itself checks
    that the threads' chunks cover the buffer (an odd number of steps, more threads than cores). No lower
    bound: on a loaded machine a thread descheduled for milliseconds makes any rate possible (seen: 6.6 MB/s
    with a fuzz run sharing the two cores)."""
    _, step = peak.stream_reader()
    for gbs in peak.measure_bandwidth_gbs([1, 2, 3], 101 * step + 17, repeats=1):
        assert math.isfinite(gbs) and 0 < gbs < 10_000, gbs


def test_bandwidth_probe_detects_an_unread_chunk(monkeypatch):
    fn, step = peak.stream_reader()
    monkeypatch.setattr(peak, "stream_reader", lambda t=None: (lambda addr, n: fn(addr, max(1, n - 1)), step))
    with pytest.raises(CompileError, match="checksum"):
        peak.measure_bandwidth_gbs([2], 64 * step, repeats=1)


def test_stream_buffer_exceeds_the_last_level_cache():
    t = host()
    small, big = dataclasses.replace(t, l3=8 << 20), dataclasses.replace(t, l3=400 << 20)
    assert peak.stream_bytes(small) <= 256 << 20
    assert peak.stream_bytes(big) <= 1 << 30
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if free >= 8 << 30:  # enough memory for the sizes the rule asks for
        assert peak.stream_bytes(small) == 256 << 20 and peak.stream_bytes(big) == 1 << 30


def test_measure_end_to_end(monkeypatch):
    monkeypatch.setattr(peak, "stream_bytes", lambda t: 4 << 20)
    p = peak.measure()
    t = host()
    assert (p.cpu, p.cores, p.vector_bits, p.mem_probe_mib) == (t.cpu, t.cores, t.vector_bits, 4)
    assert 1.0 < p.fma_gflops_core < 4 * 64 * 6.0 and 0.01 < p.mem_gbs_1 <= p.mem_gbs_all
    assert p.clock_ghz is None or p.flops_per_cycle in FLOPS_PER_CYCLE, p.describe()
    assert "GFLOP/s per core" in p.describe()


def test_machine_peak_arithmetic():
    p = _synthetic()
    assert p.gflops(1) == 96.0 and p.gflops(3) == 288.0 and p.gflops() == p.gflops(99) == 384.0
    assert p.percent(48.0, 1) == pytest.approx(50.0) and p.percent(384.0) == pytest.approx(100.0)
    assert p.bandwidth(1) == 10.0 and p.bandwidth(2) == 20.0 and p.bandwidth(3) == p.bandwidth() == 25.0
    assert _synthetic(cores=1).bandwidth() == 25.0
    assert p.flops_per_cycle == 32
    # a vector clock below the scalar clock (AVX-512 licenses) or noise still gives the datapath's width
    assert _synthetic(clock_ghz=3.6).flops_per_cycle == 32  # 26.7 flop per scalar cycle
    assert _synthetic(fma_gflops_core=100.0).flops_per_cycle == 32  # 33.3
    assert _synthetic(fma_gflops_core=50.0).flops_per_cycle == 16
    unknown = _synthetic(clock_ghz=None, clock_source="no clock probe for riscv64; no cpufreq")
    assert unknown.flops_per_cycle is None and unknown.gflops() == 384.0
    assert "clock unknown (no clock probe for riscv64" in unknown.describe()
    assert "3.00 GHz (measured)" in p.describe() and "= 32 flop/cycle" in p.describe()


def test_machine_peak_cache(monkeypatch, tmp_path):
    """Measured once, then read back; files of another version, or unreadable, are measured again."""
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TENSORFORGE_CACHE", raising=False)
    monkeypatch.setattr(peak, "_MEASURED", [])
    calls = []
    monkeypatch.setattr(peak, "measure", lambda t: calls.append(1) or _synthetic(cores=t.cores))
    first = peak.machine_peak()
    assert len(calls) == 1 and peak.machine_peak() is first
    (path,) = tmp_path.glob("machine-v*.json")
    assert f"-v{peak.CACHE_VERSION}-" in path.name
    monkeypatch.setattr(peak, "_MEASURED", [])
    assert peak.machine_peak() == first and len(calls) == 1  # from the file
    data = json.loads(path.read_text())
    del data["clock_source"]  # a file written with other fields
    path.write_text(json.dumps(data))
    monkeypatch.setattr(peak, "_MEASURED", [])
    assert peak.machine_peak() == first and len(calls) == 2
    assert peak.machine_peak(refresh=True) == first and len(calls) == 3
