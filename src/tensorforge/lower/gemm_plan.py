"""GEMM plans: the micro-tile from the register file and the cost model (``choose_tile``), the cache
blocking and thread split from the caches and cores (``plan_gemm``); see ``lower/gemm.py`` for the kernel
they parameterize. Any field can be forced through the lowering option ``gemm`` (tests, tuning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..codegen.targets import Target
from ..ir.dtype import DType
from .rules import LowerCtx


@dataclass(frozen=True)
class GemmPlan:
    """Micro-tile and cache blocking of one GEMM (all sizes in elements)."""

    MR: int
    nv: int
    W: int
    KU: int = 4  # K-loop unroll
    KC: int = 0  # K block; 0: the whole K in one block
    MC: int = 0  # rows per macro tile (a multiple of MR); 0: all rows
    NC: int = 0  # columns per macro tile (a multiple of NR); 0: all columns
    order: str = "mp"  # inside a macro tile: "mp" = m-tiles outer, panels inner; "pm" = the reverse
    pack_a: bool | None = None  # pack a run-time A into micro-panels (None: decided by lower_matmul)
    pack_b: bool | None = None  # pack a run-time B into panels, or read its rows in place (None: decided)

    @property
    def NR(self) -> int:
        return self.nv * self.W


# Waking a sleeping worker (OMP_WAIT_POLICY=PASSIVE) costs ~10 us: a GEMM or conv runs on several threads
# only with >= parallel_threshold x this many flops (~4M flops = ~40 us on one core at 100 GFLOP/s).
PARALLEL_FLOPS_PER_ELEMENT = 32

# One-row products (GEMV) take wider panels: the B loads need no registers, and longer runs of each row of
# B stream better (measured on Sapphire Rapids: 1x784x256 60 vs 43 GFLOP/s at 16 vs 8 vectors)
GEMV_MAX_NV = 16

# A run-time B is read in place (not packed) when at most this many m-tiles reuse it (see _b_in_place)
IN_PLACE_B_MAX_TILES = 12

# -- the micro-tile -----------------------------------------------------------------------------------
FMA_LATENCY = 4  # cycles; every accumulator chain gets one FMA per k step
LOADS_PER_CYCLE = 2
# sustained L2 -> L1 stream per cycle, conservatively, by the width of the FMA datapath (cores with 512-bit FMA
# units, Intel Skylake-SP .. Sapphire Rapids and Zen 5, have a 64-byte L2 -> L1 path, the others 32 bytes).
# Measured on Sapphire Rapids, 1 thread (a shared, loaded machine): with 16 B/cycle the model made 7x7-output
# convolutions (ResNet-50's last stage) pick 12x2 pixel tiles, a quarter of them padding, over 7x3 channel tiles
# that stream ~21 B/cycle (220 bytes per 10.5 FMA cycles) and ran 1.06-1.25x faster on the 1x1 2048->512 layer;
# 32 B/cycle let GEMMs pick 6x4 tiles (256 bytes per 12 cycles) that ran 0.7-0.94x the 8x3 ones.
L2_BYTES_PER_CYCLE = {128: 16, 256: 16, 512: 20}


def _l2_bytes_per_cycle(t: Target) -> int:
    return L2_BYTES_PER_CYCLE.get(min(t.fma_bits, t.vector_bits), 16)


def _fma_per_cycle(t: Target) -> float:
    """Vector FMAs per cycle at the target's vector width (512-bit ops on 256-bit units count half)."""
    return t.fma_units * min(1.0, t.fma_bits / t.vector_bits)


def tile_cycles(t: Target, dtype: DType, M: int, N: int, K: int, mr: int, nv: int) -> float:
    """Modelled cycles of an ``M x N x K`` product in ``mr x nv*W`` tiles (see ``choose_tile``)."""
    W = t.lanes(dtype)
    es = max(dtype.itemsize, 4)
    tiles = -(-M // mr) * -(-N // (nv * W))
    streamed = nv * W * es + (mr * es if K * mr * es > t.l1d // 2 else 0)
    step = max(mr * nv / _fma_per_cycle(t), (mr + nv) / LOADS_PER_CYCLE, FMA_LATENCY, streamed / _l2_bytes_per_cycle(t))
    cycles = tiles * (max(K, 1) * step + 3 * mr * nv + 20)
    # the model's bounds never overlap perfectly: favour arithmetic intensity (FMAs per load)
    return cycles * (1 + 0.1 * (mr + nv) / (mr * nv))


def register_budget(t: Target) -> int:
    """Vector registers a micro-kernel may plan for. LLVM's scheduler keeps a few more values live than
    the textbook count (loads hoisted across unrolled k steps): measured, 31 of 32 zmm (14x2 tiles)
    spill in the inner loop while 29 do not; 15 of 16 ymm (6x2) do not."""
    return t.num_vregs - 3 if t.num_vregs >= 32 else t.num_vregs - 1


def ranked_tiles(t: Target, dtype: DType, M: int, N: int, K: int, max_nv: int = 8,
                 keep: Callable[[int, int], bool] | None = None) -> list[tuple[int, int]]:  # fmt: skip
    """Every ``(MR, nv)`` whose accumulators, B vectors and one broadcast fit the registers (and that ``keep``
    accepts), best modelled first: fewest modelled cycles, then the larger tile (``choose_tile``). One-row
    tiles may take up to ``GEMV_MAX_NV`` vectors, others ``max_nv``."""
    W = t.lanes(dtype)
    R = register_budget(t)
    n_vecs = max(1, -(-N // W))
    scored = []
    for nv in range(1, max(1, max_nv, GEMV_MAX_NV) + 1):
        if nv > n_vecs:
            break
        for mr in range(1, 17):
            if mr > max(M, 1) or (mr > 1 and nv > max_nv):
                break
            regs = mr * nv + (nv if mr > 1 else 0) + 1
            if regs > R:
                break
            if keep is not None and not keep(mr, nv):
                continue
            scored.append(((round(tile_cycles(t, dtype, M, N, K, mr, nv), 3), -mr * nv, -mr), mr, nv))
    return [(mr, nv) for _, mr, nv in sorted(scored)]


def choose_tile(t: Target, dtype: DType, M: int, N: int, K: int, max_nv: int = 8,
                mr_choices: Sequence[int] | None = None) -> tuple[int, int]:  # fmt: skip
    """``(MR, nv)`` minimizing modelled cycles. Per k step a tile is bound by FMA throughput, the load
    ports (MR broadcasts + nv vector loads), FMA latency (each accumulator chain gets one FMA), and the
    L2 stream (the B micro-panel always, the A micro-panel when it does not fit in half of L1); zero-padded
    edge tiles count as work and each tile pays an epilogue. Registers must hold the accumulators, the B
    vectors and one broadcast. Measured on Zen 4 (zmm) at 1024-2048 cubed, 6x4, 8x3, 14x2 and 16x1 tiles
    are all within a few % of peak; the intensity factor breaks such near-ties."""
    keep = None if mr_choices is None else (lambda mr, nv: mr in mr_choices)
    return ranked_tiles(t, dtype, M, N, K, max_nv, keep)[0]


def _ceil_to(x: int, m: int) -> int:
    return -(-x // m) * m


def plan_gemm(ctx: LowerCtx, dtype: DType, M: int, N: int, Kd: int, batch: int = 1,
              signature: str | None = None) -> GemmPlan:  # fmt: skip
    """The micro-tile from the register file, the blocking from the caches (see the module docstring).

    ``ctx.options["gemm"]`` may override any field (used by tests to force the blocked paths on small
    shapes, and by benchmarks to explore); so may the plan the tuner found for this GEMM's ``signature``
    (``ctx.options["gemm_tuned"]``, ``compiler/tuning.py``), unless ``gemm`` sets the field."""
    t = ctx.target
    if t.is_gpu:
        return GemmPlan(1, 1, 1, 1)
    W = t.lanes(dtype)
    over = dict((ctx.options.get("gemm_tuned") or {}).get(signature) or {})
    over.update(ctx.options.get("gemm") or {})
    mr, nv = choose_tile(t, dtype, M, N, Kd)
    mr, nv = int(over.get("MR", mr)), int(over.get("nv", nv))  # the rest is derived for the forced tile
    NR = nv * W
    es = max(dtype.itemsize, 4)
    KU = 4
    # K blocking: only when the micro-panels of a whole-K tile (A: K x MR, B: K x NR) would not stay in
    # L2 between uses; then the A micro-panel (KC x MR) is sized for half of L1.
    KC = 0
    if Kd * (mr + NR) * es > t.l2 // 2:
        kc_max = max(KU * 16, (t.l1d // 2) // (mr * es) // KU * KU)
        nk = -(-Kd // kc_max)
        KC = _ceil_to(-(-Kd // nk), KU)
    kc = KC or Kd
    # NC: the B block (KC x NC) fills half of L2
    nc = max(NR, (t.l2 // 2) // (max(kc, 1) * es) // NR * NR)
    NC = 0 if nc >= N else nc
    # MC: enough macro tiles to balance the threads, each A block (KC x MC) within half of L3 per core
    mt_n = -(-M // mr)
    jc_n = -(-N // (NC or N))
    want = max(1, (4 * t.cores) // max(1, batch * jc_n))
    mc_tiles = max(1, -(-mt_n // want))
    l3_tiles = max(1, (t.l3 // (2 * max(t.cores, 1))) // (max(kc, 1) * mr * es))
    mc_tiles = min(mc_tiles, l3_tiles)
    MC = 0 if mc_tiles >= mt_n else mc_tiles * mr
    # few rows (a GEMV, a small batch): split the columns too, so that the threads get balanced shares
    panels, ic_n = -(-N // NR), -(-mt_n // mc_tiles)
    if batch * ic_n * -(-panels // (NC // NR if NC else panels)) < 4 * t.cores and panels > 1:
        per = max(1, -(-panels * batch * ic_n // (4 * t.cores)))
        NC = min(NC or panels * NR, per * NR)
        NC = 0 if NC >= panels * NR else NC
    plan = GemmPlan(mr, nv, W, KU, KC, MC, NC)
    if over:
        fields = {k: v for k, v in over.items() if k in GemmPlan.__dataclass_fields__}
        plan = GemmPlan(**{**plan.__dict__, **fields})
        # forced blockings are rounded to whole tiles and panels
        MC = _ceil_to(plan.MC, plan.MR) if plan.MC else 0
        NC = _ceil_to(plan.NC, plan.NR) if plan.NC else 0
        plan = GemmPlan(**{**plan.__dict__, "MC": MC, "NC": NC})
    return plan
