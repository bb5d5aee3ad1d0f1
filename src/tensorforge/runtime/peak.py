"""The machine's limits, so every benchmark and profile can say "% of peak".

Everything is measured, nothing is looked up in a table of CPU models (tables go stale, and a VM or a
new core defeats them), with small probes JIT-compiled from hand-written LLVM IR:

* fp32 peak: an FMA loop on the target's widest vectors with more independent accumulators than
  latency x FMA pipes on any core, so it runs at the FMA pipes' throughput. That rate is the peak per
  core, whatever the datapath is (two 512-bit ports, two 256-bit ports double-pumped, four 128-bit
  NEON pipes). It is plain IR (``llvm.fmuladd``), so it works on every architecture.
* clock: on x86_64, two dependent chains in inline assembly: register-register ``add`` (latency 1)
  and ``imul`` (latency 3 on every x86 core since Nehalem and Zen). A core that executes an op at
  rename (Golden Cove does so for immediate adds) makes one chain read a far too high clock; the two
  must agree. Elsewhere (llvmlite cannot assemble AArch64 inline asm), or when they disagree, the clock
  is the kernel's ``cpuinfo_max_freq``, or unknown. The clock only serves to derive flops per cycle from
  the measured peak, for the description.
* int8 and bf16 peaks, one per instruction family the host has (``FAMILIES``): independent chains of the
  family's instruction in inline assembly (x86_64): ``vpdpbusd`` on zmm (AVX512-VNNI) or ymm (AVX-VNNI),
  ``vdpbf16ps`` on zmm (AVX512-BF16), and the AMX tile products ``tdpbssd`` / ``tdpbf16ps`` on four
  accumulator tiles (16 rows x 64 bytes). Counted as 2 operations per multiply-add, as the fp32 peak is.
* memory bandwidth: a streaming read (vector integer sums) over a buffer 4x the last-level cache, on
  one thread and on all cores (Python threads on separate chunks: ctypes releases the GIL).

The runtime must not import the compiler: the probes use only ``codegen/`` and ``runtime/jit.py``.
Measuring takes a few seconds; the result is cached per machine in the compile cache directory.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import threading
import time
from dataclasses import asdict, dataclass, field

from ..codegen.targets import Target, host
from ..errors import CompileError

CACHE_VERSION = 3  # bump when MachinePeak's fields or the probes' meaning change: old files are not read
CPUFREQ_MAX = "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"  # kHz
CLOCK_CHAIN = 400  # dependent ops per loop iteration in the clock probes
IMUL_LATENCY = 3  # cycles of a 64-bit register imul on every x86 core since Nehalem / Zen
CLOCK_AGREE = 0.10  # the add and imul chains must give the same clock within this fraction
FMA_UNROLL = 4  # FMAs per accumulator per loop iteration (amortizes the loop's counter and branch)
MAX_FMA_CHAINS = 24  # covers latency 4 x 4 pipes (Neoverse V2, Apple) and 4 x 2 (x86) with margin
STREAM_ACCS = 4  # vectors loaded per step of the streaming read, each into its own accumulator
MIN_PROBE_SECONDS = 0.02  # a timed call lasts at least this long (timer resolution, turbo ramp-up)


@dataclass(frozen=True)
class MachinePeak:
    cpu: str
    cores: int
    clock_ghz: float | None  # None: unknown (see clock_source)
    clock_source: str  # how the clock was found: the x86 chains, cpufreq, or why it is unknown
    vector_bits: int  # width of the vectors of the FMA probe (the target's widest)
    fma_gflops_core: float  # measured: fp32 FMA throughput of one core = the fp32 peak per core
    mem_gbs_1: float  # measured: streaming read, one thread
    mem_gbs_all: float  # measured: streaming read, all cores
    mem_probe_mib: int  # size of the buffer the bandwidth probe streams over
    # measured: GOP/s of one core per int8/bf16 instruction family of FAMILIES the host has (2 per MAC)
    family_gops_core: dict[str, float] = field(default_factory=dict)

    @property
    def flops_per_cycle(self) -> int | None:
        """fp32 flops per cycle per core, derived from the measured peak and clock (None: clock unknown).

        The clock is measured with scalar code; wide-vector code may run at a lower clock (AVX-512
        frequency licenses), never a higher one, so the ratio errs low: it is rounded up to a power of
        two (datapaths are powers of two wide) once it is above 90% of one, which also absorbs noise."""
        if not self.clock_ghz or self.fma_gflops_core <= 0:
            return None
        ratio = self.fma_gflops_core / self.clock_ghz
        return 1 << max(0, math.ceil(math.log2(ratio / 1.1)))

    def _threads(self, threads: int | None) -> int:
        return self.cores if threads is None else max(1, min(threads, self.cores))

    def gflops(self, threads: int | None = None) -> float:
        """fp32 peak GFLOP/s on ``threads`` cores (all by default): the measured rate per core x cores."""
        return self.fma_gflops_core * self._threads(threads)

    def bandwidth(self, threads: int | None = None) -> float:
        """Memory bandwidth (GB/s) with ``threads`` threads (all cores by default). Only one thread and all
        cores are measured; in between, each thread adds one thread's bandwidth until the all-cores figure
        (the memory system's limit) is reached."""
        n = self._threads(threads)
        return self.mem_gbs_all if n == self.cores else min(self.mem_gbs_all, n * self.mem_gbs_1)

    def family_gops(self, family: str, threads: int | None = None) -> float | None:
        """The peak GOP/s of an instruction family (``FAMILIES``) on ``threads`` cores (None: not measured:
        the host lacks it). ``fp32`` is the FMA peak."""
        if family == "fp32":
            return self.gflops(threads)
        per_core = self.family_gops_core.get(family)
        return None if per_core is None else per_core * self._threads(threads)

    def percent(self, gflops: float, threads: int | None = None) -> float:
        return 100.0 * gflops / self.gflops(threads)

    def describe(self) -> str:
        clock = f"{self.clock_ghz:.2f} GHz ({self.clock_source})" if self.clock_ghz else \
            f"clock unknown ({self.clock_source})"  # fmt: skip
        fpc = f" = {self.flops_per_cycle} flop/cycle" if self.flops_per_cycle else ""
        return (f"{self.cpu}: {self.cores} cores, {clock}; fp32 FMA on {self.vector_bits}-bit vectors "
                f"(measured): {self.fma_gflops_core:.1f} GFLOP/s per core{fpc}, peak {self.gflops():.1f} "
                f"GFLOP/s on all cores; memory (streaming read over {self.mem_probe_mib} MiB) "
                f"{self.mem_gbs_1:.1f} GB/s on one thread, {self.mem_gbs_all:.1f} GB/s on {self.cores}"
                + "".join(f"; {f} {g:.0f} GOP/s per core" for f, g in self.family_gops_core.items()))  # fmt: skip


# -- probes -------------------------------------------------------------------------------------------
def _jit(ir_text: str, t: Target, signatures: dict[str, type]) -> dict[str, ctypes._CFuncPtr]:
    """Compile ``ir_text`` into this process; the functions named in ``signatures`` (ctypes CFUNCTYPEs).
    The only use of ``runtime/jit.py`` in this file. Each function holds its module, keeping the code
    alive as long as the function is."""
    from .jit import jit

    module = jit(ir_text, t)
    fns = {}
    for name, sig in signatures.items():
        fns[name] = sig(module.address(name))
        fns[name].module = module
    return fns


_LOOP_FN = ctypes.CFUNCTYPE(None, ctypes.c_int64)  # void probe(i64 iterations)


def _best_rate(fn, work_per_iter: float, repeats: int = 5) -> float:
    """Work per second of this thread's CPU time (immune to being descheduled), best of ``repeats``
    calls; the iteration count doubles until a call lasts MIN_PROBE_SECONDS."""
    n = 64
    while True:
        t0 = time.thread_time()
        fn(n)
        dt = time.thread_time() - t0
        if dt >= MIN_PROBE_SECONDS:
            break
        n *= 2
    best = n * work_per_iter / dt
    for _ in range(repeats - 1):
        t0 = time.thread_time()
        fn(n)
        best = max(best, n * work_per_iter / max(time.thread_time() - t0, 1e-9))
    return best


def _chain_ir(name: str, op: str) -> str:
    """``void name(i64 n)``: n iterations of CLOCK_CHAIN dependent ``op %rdx, %rax`` (x86_64 asm)."""
    body = "\\0A".join([f"{op} %rdx, %rax"] * CLOCK_CHAIN)
    return f"""
define void @{name}(i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  call void asm sideeffect "{body}", "~{{rax}},~{{rdx}},~{{flags}}"()
  %next = add i64 %i, 1
  %done = icmp sge i64 %next, %n
  br i1 %done, label %exit, label %loop
exit:
  ret void
}}
"""


def _x86_chain_ghz(t: Target) -> tuple[float, float]:
    """The clock (GHz) as the add chain and as the imul chain see it."""
    import llvmlite.binding as llvm

    llvm.initialize_native_asmparser()  # the chains are inline assembly
    ir_text = _chain_ir("tf_probe_add", "addq") + _chain_ir("tf_probe_imul", "imulq")
    fns = _jit(ir_text, t, {"tf_probe_add": _LOOP_FN, "tf_probe_imul": _LOOP_FN})
    add = _best_rate(fns["tf_probe_add"], CLOCK_CHAIN) / 1e9
    imul = _best_rate(fns["tf_probe_imul"], CLOCK_CHAIN * IMUL_LATENCY) / 1e9
    return add, imul


def cross_checked_clock(add_ghz: float, imul_ghz: float) -> float | None:
    """The clock if the two chains agree (their mean), else None: one of them was not executed at its
    architectural latency (an op eliminated at rename, or a core with another imul latency)."""
    if add_ghz > 0 and imul_ghz > 0 and abs(add_ghz - imul_ghz) <= CLOCK_AGREE * max(add_ghz, imul_ghz):
        return (add_ghz + imul_ghz) / 2
    return None


def _cpufreq_max_ghz() -> float | None:
    try:
        with open(CPUFREQ_MAX) as f:
            khz = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return khz / 1e6 if khz > 0 else None


def measure_clock(t: Target | None = None) -> tuple[float | None, str]:
    """The core clock in GHz (None: unknown) and where it comes from. The inline-assembly chains run only
    on x86_64; other architectures, and x86 cores where the chains disagree, read cpufreq's maximum."""
    t = t or host()
    why = f"no clock probe for {t.arch}"
    if t.arch == "x86_64":
        add, imul = _x86_chain_ghz(t)
        clock = cross_checked_clock(add, imul)
        if clock is not None:
            return clock, "measured"
        why = f"add and imul chains disagree: {add:.2f} vs {imul:.2f} GHz"
    ghz = _cpufreq_max_ghz()
    if ghz is not None:
        return ghz, f"cpufreq maximum; {why}"
    return None, f"{why}; no cpufreq"


def _fma_ir(lanes: int, chains: int) -> str:
    """``void tf_probe_fma(i64 n, ptr io)``: ``chains`` independent accumulators, each updated
    FMA_UNROLL times per iteration as acc = acc * m + c. m, c and the accumulators' start values are
    loaded from ``io`` (io[0] = m, io[1] = c, io[2 + j] = accumulator j) and the accumulators stored
    back, so the optimizer can neither fold nor merge the chains."""
    v = f"<{lanes} x float>"
    fma = f"@llvm.fmuladd.v{lanes}f32"
    lines = [f"declare {v} {fma}({v}, {v}, {v})", "", "define void @tf_probe_fma(i64 %n, ptr %io) {", "entry:",
             f"  %m = load {v}, ptr %io, align 4", f"  %cp = getelementptr {v}, ptr %io, i64 1",
             f"  %c = load {v}, ptr %cp, align 4"]  # fmt: skip
    for j in range(chains):
        lines += [f"  %p{j} = getelementptr {v}, ptr %io, i64 {2 + j}", f"  %init{j} = load {v}, ptr %p{j}, align 4"]
    lines += ["  br label %loop", "loop:", "  %i = phi i64 [ 0, %entry ], [ %next, %loop ]"]
    lines += [f"  %a{j}.0 = phi {v} [ %init{j}, %entry ], [ %a{j}.{FMA_UNROLL}, %loop ]" for j in range(chains)]
    for u in range(FMA_UNROLL):
        lines += [f"  %a{j}.{u + 1} = call {v} {fma}({v} %a{j}.{u}, {v} %m, {v} %c)" for j in range(chains)]
    lines += ["  %next = add i64 %i, 1", "  %done = icmp sge i64 %next, %n",
              "  br i1 %done, label %exit, label %loop", "exit:"]  # fmt: skip
    lines += [f"  store {v} %a{j}.{FMA_UNROLL}, ptr %p{j}, align 4" for j in range(chains)]
    lines += ["  ret void", "}", ""]
    return "\n".join(lines)


def fma_chains(t: Target) -> int:
    """Independent accumulators of the FMA probe: as many as fit in the registers next to m and c."""
    return max(4, min(MAX_FMA_CHAINS, t.num_vregs - 4))


def measure_fma_gflops(t: Target | None = None) -> float:
    """fp32 GFLOP/s of one core running only FMAs on the target's widest vectors."""
    import numpy as np

    t = t or host()
    lanes, chains = max(1, t.vector_bits // 32), fma_chains(t)
    fns = _jit(_fma_ir(lanes, chains), t, {"tf_probe_fma": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)})
    # acc -> c / (1 - m) = 1: the values stay normal (denormals or infinities could be slow)
    io = np.full((2 + chains, lanes), 0.5, np.float32)
    io[0], io[1] = 0.75, 0.25
    io[2:] += np.arange(chains, dtype=np.float32)[:, None] / chains
    fn, ptr = fns["tf_probe_fma"], io.ctypes.data
    rate = _best_rate(lambda n: fn(n, ptr), chains * FMA_UNROLL * lanes * 2)
    if not np.all(np.abs(io[2:] - 1.0) < 0.5):
        raise CompileError(f"the FMA probe computed wrong values (a code-generator bug): {io[2:].ravel()[:4]}")
    return rate / 1e9


# family: (the target features it needs (any one of the alternatives), the instruction (%acc: the
#          accumulator), its accumulators, its source registers, operations per instruction (2 per
#          multiply-add), whether it runs on AMX tiles)
FAMILIES: dict[str, tuple[tuple[tuple[str, ...], ...], str, list[str], list[str], int, bool]] = {
    "int8-amx": ((("amx-int8", "amx-tile"),), "tdpbssd %tmm6, %tmm4, %acc", [f"tmm{i}" for i in range(4)], [],
                 2 * 16 * 16 * 64, True),
    "int8-vnni512": ((("avx512vnni",),), "vpdpbusd %zmm31, %zmm30, %acc", [f"zmm{i}" for i in range(16)],
                     ["zmm30", "zmm31"], 2 * 64, False),
    "int8-vnni256": ((("avxvnni",), ("avx512vnni", "avx512vl")), "vpdpbusd %ymm15, %ymm14, %acc",
                     [f"ymm{i}" for i in range(12)],
                     ["ymm14", "ymm15"], 2 * 32, False),
    "bf16-amx": ((("amx-bf16", "amx-tile"),), "tdpbf16ps %tmm6, %tmm4, %acc", [f"tmm{i}" for i in range(4)], [],
                 2 * 16 * 16 * 32, True),
    "bf16-avx512": ((("avx512bf16",),), "vdpbf16ps %zmm31, %zmm30, %acc", [f"zmm{i}" for i in range(16)],
                    ["zmm30", "zmm31"], 2 * 32, False),
}  # fmt: skip
FAMILY_UNROLL = 4  # instructions per accumulator per loop iteration


def _amx_config() -> bytes:
    """The 64-byte tile configuration of the AMX probes: palette 1, eight tiles of 16 rows x 64 bytes."""
    cfg = bytearray(64)
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t : 18 + 2 * t] = (64).to_bytes(2, "little")
        cfg[48 + t] = 16
    return bytes(cfg)


def _family_ir(family: str) -> str:
    """``void tf_probe_<family>(i64 n, ptr cfg)``: the loop in one inline assembly block (n > 0 iterations of
    FAMILY_UNROLL x accumulators independent instructions; the registers zeroed first; ``cfg``: AMX's tile
    configuration, loaded first and the tiles released at the end)."""
    _, insn, accs, srcs, _, amx = FAMILIES[family]
    if amx:
        head = ["ldtilecfg ($2)"] + [f"tilezero %tmm{i}" for i in range(8)]
        tail, clobbers = ["tilerelease"], ""
    else:
        regs = [*accs, *srcs]
        head = [f"vpxord %{r}, %{r}, %{r}" if r.startswith("zmm") else f"vpxor %{r}, %{r}, %{r}" for r in regs]
        tail = ["vzeroupper"]
        clobbers = "".join(f",~{{{r}}}" for r in regs)
    body = [insn.replace("%acc", f"%{a}") for _ in range(FAMILY_UNROLL) for a in accs]
    text = "\\0A".join([*head, "1:", *body, "decq $0", "jnz 1b", *tail])
    return f"""
define void @tf_probe(i64 %n, ptr %cfg) {{
entry:
  %left = call i64 asm sideeffect "{text}", "=r,0,r,~{{memory}},~{{flags}}{clobbers}"(i64 %n, ptr %cfg)
  ret void
}}
"""


def families_of(t: Target) -> list[str]:
    """The int8/bf16 instruction families of FAMILIES that target ``t`` has (x86_64 only)."""
    if t.arch != "x86_64" or t.is_gpu:
        return []
    return [f for f, (alts, *_) in FAMILIES.items() if any(all(t.has_feature(x) for x in a) for a in alts)]


def measure_family_gops(family: str, t: Target | None = None) -> float:
    """GOP/s of one core running only ``family``'s instruction (2 operations per multiply-add)."""
    import llvmlite.binding as llvm

    t = t or host()
    _, _, accs, _, ops, amx = FAMILIES[family]
    if amx:
        from ..codegen.amx import request_amx

        if not request_amx():
            raise CompileError(f"{family}: the operating system refused this process the AMX tile state")
    llvm.initialize_native_asmparser()
    fn = _jit(_family_ir(family), t, {"tf_probe": ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)})["tf_probe"]
    cfg = ctypes.create_string_buffer(_amx_config(), 64)
    return _best_rate(lambda n: fn(n, ctypes.addressof(cfg)), FAMILY_UNROLL * len(accs) * ops) / 1e9


def measure_families(t: Target | None = None) -> dict[str, float]:
    """GOP/s per core of each int8/bf16 family the host has (a family whose probe fails is left out)."""
    t = t or host()
    out = {}
    for f in families_of(t):
        try:
            out[f] = round(measure_family_gops(f, t), 1)
        except (CompileError, RuntimeError, OSError):
            continue
    return out


def _stream_ir(lanes: int) -> str:
    """``i32 tf_probe_read(ptr p, i64 steps)``: the wrapping sum of the i32s of steps x STREAM_ACCS
    vectors of ``lanes`` i32 (integer adds: latency 1, the loads are the bottleneck)."""
    v = f"<{lanes} x i32>"
    accs = range(STREAM_ACCS)
    lines = [f"declare i32 @llvm.vector.reduce.add.v{lanes}i32({v})", "",
             "define i32 @tf_probe_read(ptr %p, i64 %steps) {", "entry:", "  br label %loop", "loop:",
             "  %i = phi i64 [ 0, %entry ], [ %next, %loop ]"]  # fmt: skip
    lines += [f"  %s{k} = phi {v} [ zeroinitializer, %entry ], [ %t{k}, %loop ]" for k in accs]
    lines.append(f"  %base = mul i64 %i, {STREAM_ACCS}")
    for k in accs:
        lines += [f"  %o{k} = add i64 %base, {k}", f"  %q{k} = getelementptr {v}, ptr %p, i64 %o{k}",
                  f"  %x{k} = load {v}, ptr %q{k}, align 4", f"  %t{k} = add {v} %s{k}, %x{k}"]  # fmt: skip
    lines += ["  %next = add i64 %i, 1", "  %done = icmp sge i64 %next, %steps",
              "  br i1 %done, label %exit, label %loop", "exit:"]  # fmt: skip
    total = "%t0"
    for k in accs[1:]:
        lines.append(f"  %u{k} = add {v} {total}, %t{k}")
        total = f"%u{k}"
    lines += [f"  %r = call i32 @llvm.vector.reduce.add.v{lanes}i32({v} {total})", "  ret i32 %r", "}", ""]
    return "\n".join(lines)


def stream_reader(t: Target | None = None) -> tuple[ctypes._CFuncPtr, int]:
    """The streaming-read kernel ``fn(address, steps) -> wrapping i32 sum`` and the bytes of one step."""
    t = t or host()
    lanes = max(1, t.vector_bits // 32)
    sig = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64)
    return _jit(_stream_ir(lanes), t, {"tf_probe_read": sig})["tf_probe_read"], STREAM_ACCS * lanes * 4


def stream_bytes(t: Target) -> int:
    """The bandwidth probe's buffer: 4x the last-level cache, so that even a replacement policy that keeps
    part of a streamed working set (adaptive insertion) serves at most a quarter of it from cache; at
    least 256 MiB; at most 1 GiB (mapping the pages is the slow part of the probe, seconds in a VM) and a
    quarter of the free memory."""
    size = min(max(256 << 20, 4 * t.l3), 1 << 30)
    try:
        size = min(size, os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4)
    except (ValueError, OSError):
        pass
    return max(size, 16 << 20)


def measure_bandwidth_gbs(thread_counts: list[int], nbytes: int | None = None, t: Target | None = None,
                          repeats: int = 5) -> list[float]:  # fmt: skip
    """Streaming-read bandwidth (GB/s) with each of ``thread_counts`` threads, over one buffer of
    ``nbytes`` (``stream_bytes`` by default) split between threads that start together: wall time from
    the first start to the last finish, best of ``repeats`` passes after one warm-up pass."""
    import numpy as np

    t = t or host()
    fn, step = stream_reader(t)
    steps = max(1, (nbytes or stream_bytes(t)) // step)
    buf = np.ones(steps * step, np.uint8)  # written, so every page is mapped to its own memory
    return [_stream_gbs(fn, step, buf, max(1, min(n, steps)), repeats) for n in thread_counts]


def _stream_gbs(fn, step: int, buf, threads: int, repeats: int) -> float:
    steps = buf.nbytes // step
    cuts = [steps * k // threads for k in range(threads + 1)]
    chunks = [(buf.ctypes.data + lo * step, hi - lo) for lo, hi in zip(cuts, cuts[1:])]
    # every byte is 1: the i32 sums of the chunks add up to this iff the threads covered the buffer
    want = buf.nbytes // 4 * 0x01010101 % (1 << 32)
    best = 0.0
    for rep in range(repeats + 1):
        seconds, checksum = _stream_pass(fn, chunks)
        if checksum != want:
            raise CompileError(f"the bandwidth probe on {threads} threads read a checksum of {checksum:#x}, "
                               f"not {want:#x}: a chunk was not read")  # fmt: skip
        if rep > 0:
            best = max(best, buf.nbytes / max(seconds, 1e-9) / 1e9)
    return best


def _stream_pass(fn, chunks: list[tuple[int, int]]) -> tuple[float, int]:
    """One thread per chunk, released together: seconds from the first start to the last finish, and the
    sum of the chunks' checksums (mod 2**32)."""
    n = len(chunks)
    starts, ends, sums = [0.0] * n, [0.0] * n, [0] * n
    barrier = threading.Barrier(n)

    def work(k: int) -> None:
        barrier.wait()
        starts[k] = time.perf_counter()
        sums[k] = fn(*chunks[k])
        ends[k] = time.perf_counter()

    workers = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return max(ends) - min(starts), sum(sums) % (1 << 32)


# -- the cached result ---------------------------------------------------------------------------------
def _cache_path(t: Target) -> str | None:
    from .cache import cache_dir

    d = cache_dir()
    if d is None:
        return None
    cpu = "".join(ch if ch.isalnum() else "_" for ch in t.cpu)
    return os.path.join(d, f"machine-v{CACHE_VERSION}-{t.arch}-{cpu}-{t.cores}c-{t.vector_bits}b.json")


def measure(t: Target | None = None) -> MachinePeak:
    """Run every probe on the host (``t``: the host target, possibly with other cache sizes)."""
    t = t or host()
    fma = measure_fma_gflops(t)
    clock, source = measure_clock(t)
    nbytes = stream_bytes(t)
    bw1, *bwn = measure_bandwidth_gbs([1, t.cores] if t.cores > 1 else [1], nbytes, t)
    bwn = max([bw1, *bwn])  # more threads never have less bandwidth available (one could idle): noise
    return MachinePeak(t.cpu, t.cores, None if clock is None else round(clock, 3), source, t.vector_bits,
                       round(fma, 1), round(bw1, 1), round(bwn, 1), nbytes >> 20, measure_families(t))  # fmt: skip


_MEASURED: list[MachinePeak] = []  # this process's model, once read or measured


def machine_peak(refresh: bool = False) -> MachinePeak:
    """The host's peak model, measured once per machine and cached on disk (``refresh`` re-measures)."""
    if _MEASURED and not refresh:
        return _MEASURED[0]
    t = host()
    path = _cache_path(t)
    p = None
    if path and not refresh and os.path.exists(path):
        try:
            with open(path) as f:
                p = MachinePeak(**json.load(f))
        except (OSError, TypeError, ValueError):
            p = None  # unreadable or from another version: measure again
    if p is None:
        p = measure(t)
        if path:
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "w") as f:
                    json.dump(asdict(p), f)
                os.replace(tmp, path)
            except OSError:
                pass
    _MEASURED[:] = [p]
    return p


__all__ = ["FAMILIES", "MachinePeak", "cross_checked_clock", "families_of", "fma_chains", "machine_peak", "measure",
           "measure_bandwidth_gbs", "measure_clock", "measure_family_gops", "measure_families", "measure_fma_gflops",
           "stream_bytes", "stream_reader"]  # fmt: skip
