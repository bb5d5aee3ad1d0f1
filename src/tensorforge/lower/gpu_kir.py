"""Kernel-IR vocabulary of GPU-mapped kernels (NVIDIA's model: a grid of blocks of threads).

A GPU-mapped kernel's body is a *launch nest*::

    for blockIdx.x in 0..G {        # every block of the grid      (G = gridDim.x)
      for threadIdx.x in 0..B {     # every thread of the block   (B = blockDim.x)
        body                        # per-thread code
      }
    }

The two loops are ordinary ``For`` statements whose variables are ``BlockIdx`` / ``ThreadIdx`` (``Var``
subclasses, so every walk, substitution and printer of the kernel IR handles them): the code generator turns
them into the special registers ``%ctaid.x`` / ``%tid.x`` (no loop, launched with ``G`` blocks of ``B``
threads), the grid interpreter (``runtime/gridinterp.py``) into numpy arrays over all threads at once. Inside
the body, besides the usual statements:

* ``SharedBuffer``: a buffer in the block's shared memory (one copy per block, alive during the kernel);
* ``Barrier()``: ``__syncthreads()``: every thread of the block reaches it before any goes on (must be
  reached by all threads of a block, never under a thread-dependent condition);
* ``Shfl(mode, x, lane)``: the value of ``x`` in another lane of the same 32-thread warp (``bfly``: lane
  ``l ^ lane``, ``down``: lane ``l + lane`` (its own value past the warp's end), ``idx``: lane ``lane``).

Nodes implement the kernel IR's extension protocol (``operands`` / ``with_operands`` for expressions,
``exprs`` / ``map_exprs`` for statements) read by ``kir.traverse``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir.dtype import DType
from .kir import I64, Buffer, Const, Expr, For, Stmt, Var, binop, seq

WARP = 32


@dataclass(frozen=True)
class GpuSpec:
    """What the GPU schedules read about an NVIDIA architecture (from the target description)."""

    sm: int  # compute capability as 80, 86, 90
    warp: int = 32
    max_threads: int = 1024  # per block
    shared_bytes: int = 48 * 1024  # static shared memory per block
    tensor_cores: tuple[str, ...] = ()  # mma.sync element types (``Mma.kind``) the schedules may use


def gpu_spec(target) -> GpuSpec:
    """The GPU description of an NVPTX target (its ``cpu`` is ``sm_XY``)."""
    if not target.is_gpu or not target.cpu.startswith("sm_"):
        raise ValueError(f"target {target.name} is not an NVIDIA GPU target")
    sm = int(target.cpu[3:].rstrip("a"))
    tc = ("f16", "bf16", "tf32") if sm >= 80 else ()  # the m16n8k8 / m16n8k16 shapes need sm_80
    return GpuSpec(sm, tensor_cores=tc)


# the kinds of Shfl: (name in the NVVM intrinsic, how the source lane is found)
SHFL_MODES = ("bfly", "down", "idx")


@dataclass(frozen=True, eq=False, slots=True)
class BlockIdx(Var):
    """``blockIdx.x``: the block's index in the grid (the variable of a launch nest's outer loop)."""


@dataclass(frozen=True, eq=False, slots=True)
class ThreadIdx(Var):
    """``threadIdx.x``: the thread's index in its block (the variable of a launch nest's inner loop)."""


@dataclass(frozen=True, eq=False, slots=True)
class SharedBuffer(Buffer):
    """A buffer in a block's shared memory: one copy per block, shared by its threads."""


@dataclass(frozen=True, eq=False, slots=True)
class Barrier(Stmt):
    """Block-wide barrier (``bar.sync 0``): shared-memory writes before it are seen by every thread after it."""

    def exprs(self):
        return ()

    def map_exprs(self, fe, fb, fs):
        return self

    def format(self) -> str:
        return "barrier()"


@dataclass(frozen=True, eq=False, slots=True)
class Shfl(Expr):
    """``x`` as held by another lane of this thread's warp (``shfl.sync.<mode>``, all 32 lanes taking part)."""

    mode: str
    a: Expr
    lane: int
    dtype: DType = field(init=False)
    lanes: int = 1

    def __post_init__(self):
        if self.mode not in SHFL_MODES:
            raise ValueError(f"shuffle mode must be one of {SHFL_MODES}, got {self.mode!r}")
        if self.a.lanes != 1:
            raise ValueError("a warp shuffle moves scalars")
        object.__setattr__(self, "dtype", self.a.dtype)

    def operands(self) -> tuple[Expr, ...]:
        return (self.a,)

    def with_operands(self, kids: tuple[Expr, ...]) -> Shfl:
        return Shfl(self.mode, kids[0], self.lane)

    def format(self, ops) -> str:
        return f"shfl_{self.mode}({ops[0]}, {self.lane})"


# the tensor-core instructions (``Mma.kind``): (m, n, k), values per lane of a, b, c/d, PTX operand types
MMA_SHAPES = {"tf32": ((16, 8, 8), 4, 2, 4), "f16": ((16, 8, 16), 8, 4, 4), "bf16": ((16, 8, 16), 8, 4, 4)}


def mma_fragments(kind: str) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]], list[tuple[int, int]]]:
    """Where each lane's fragment values sit in A (m x k), B (k x n) and C/D (m x n) for ``kind``, as affine
    forms in the lane's ``g = lane // 4`` and ``q = lane % 4`` (PTX ISA, "Matrix Fragments for mma.m16n8k8"
    (.tf32) and "for mma.m16n8k16 with floating point type" (.f16/.bf16)):

    * A: ``(row offset, k multiplier, k offset)``: element ``A[g + row][kmul * q + koff]``;
    * B: ``(k multiplier, k offset)``: element ``B[kmul * q + koff][g]``;
    * C/D: ``(row offset, column offset)``: element ``C[g + row][2q + col]``.
    """
    cd = [(0, 0), (0, 1), (8, 0), (8, 1)]
    if kind == "tf32":
        return [(0, 1, 0), (8, 1, 0), (0, 1, 4), (8, 1, 4)], [(1, 0), (1, 4)], cd
    if kind in ("f16", "bf16"):  # pairs along k packed in one 32-bit register, low half first
        a = [(8 * ((i >> 1) & 1), 2, (i & 1) + 8 * (i >> 2)) for i in range(8)]
        return a, [(2, (i & 1) + 8 * (i >> 1)) for i in range(4)], cd
    raise ValueError(f"no mma of kind {kind!r} (one of {', '.join(MMA_SHAPES)})")


@dataclass(frozen=True, eq=False, slots=True)
class Mma(Stmt):
    """``D = A @ B + C`` by the whole warp on tensor cores, float32 accumulation, A row-major, B column-major,
    C and D 16x8 float32, each matrix spread over the warp's 32 lanes (``mma_fragments``):

    * ``kind="tf32"``: ``mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32``, A 16x8, B 8x8; lane ``l``
      (``g = l // 4``, ``q = l % 4``) gives ``a = (A[g][q], A[g+8][q], A[g][q+4], A[g+8][q+4])``,
      ``b = (B[q][g], B[q+4][g])``, ``c = (C[g][2q], C[g][2q+1], C[g+8][2q], C[g+8][2q+1])`` and receives D at
      the positions of C in ``d``. A and B are rounded to tf32 (10-bit mantissa, to nearest, ties away:
      ``cvt.rna.tf32.f32``).
    * ``kind="f16"`` / ``"bf16"``: ``mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32``, A 16x16,
      B 16x8; ``a`` 8 values (``A[g + 8*((i>>1)&1)][2q + (i&1) + 8*(i>>2)]``), ``b`` 4 values
      (``B[2q + (i&1) + 8*(i>>1)][g]``); operands rounded to float16 / bfloat16 (to nearest even).
    """

    d: tuple[Var, ...]
    a: tuple[Expr, ...]
    b: tuple[Expr, ...]
    c: tuple[Expr, ...]
    kind: str = "tf32"

    def __post_init__(self):
        if self.kind not in MMA_SHAPES:
            raise ValueError(f"no mma of kind {self.kind!r} (one of {', '.join(MMA_SHAPES)})")
        _, na, nb, nc = MMA_SHAPES[self.kind]
        if (len(self.d), len(self.a), len(self.b), len(self.c)) != (nc, na, nb, nc):
            raise ValueError(f"{self.kind} mma fragments: d {nc}, a {na}, b {nb}, c {nc} values per lane")

    def exprs(self):
        return (*self.a, *self.b, *self.c)

    def map_exprs(self, fe, fb, fs):
        return Mma(self.d, tuple(map(fe, self.a)), tuple(map(fe, self.b)), tuple(map(fe, self.c)), self.kind)

    def format(self) -> str:
        m, n, k = MMA_SHAPES[self.kind][0]
        return f"<mma.m{m}n{n}k{k}.{self.kind}>"


def launch(blocks: int, threads: int, body: Callable[[BlockIdx, ThreadIdx], Stmt]) -> Stmt:
    """The launch nest of ``blocks`` blocks of ``threads`` threads running ``body(blockIdx, threadIdx)``."""
    if blocks < 1 or not 1 <= threads <= 1024:
        raise ValueError(f"bad launch: {blocks} blocks of {threads} threads")
    b, t = BlockIdx("blockIdx.x"), ThreadIdx("threadIdx.x")
    return For(b, Const(0), Const(blocks), For(t, Const(0), Const(threads), body(b, t)))


def launch_dims(body: Stmt) -> tuple[int, int] | None:
    """(blocks, threads) of a launch nest; None when ``body`` is not one."""
    if not (isinstance(body, For) and isinstance(body.var, BlockIdx) and isinstance(body.body, For)):
        return None
    inner = body.body
    if not isinstance(inner.var, ThreadIdx):
        return None
    if not all(isinstance(x, Const) for x in (body.start, body.stop, inner.start, inner.stop)):
        return None
    return int(body.stop.value), int(inner.stop.value)


def is_launch(body: Stmt) -> bool:
    return launch_dims(body) is not None


def block_reduce(op: str, value: Expr, acc: Var, t: Expr, threads: int, scratch: SharedBuffer) -> Stmt:
    """Combine ``value`` (one per thread) over the block with ``op`` into ``acc`` in every thread: a butterfly
    of warp shuffles, then each warp's result through shared memory (``scratch``, one slot per warp), every
    thread combining the warps' slots in the same order (so all hold the same value)."""
    from .kir import Assign, Decl, If, Load, Store, cmp

    stmts: list[Stmt] = [Assign(acc, value)] if value is not acc else []
    width = min(threads, WARP)
    k = width // 2
    while k >= 1:
        stmts.append(Assign(acc, binop(op, acc, Shfl("bfly", acc, k))))
        k //= 2
    warps = -(-threads // WARP)
    if warps > 1:
        lane0 = cmp("eq", binop("mod", t, WARP), Const(0))
        stmts += [Barrier(), If(lane0, Store(scratch, binop("floordiv", t, WARP), acc)), Barrier()]
        tot = Var("wsum", acc.dtype)
        stmts.append(Decl(tot, Load(scratch, Const(0))))
        for w in range(1, warps):
            stmts.append(Assign(tot, binop(op, tot, Load(scratch, Const(w)))))
        stmts.append(Assign(acc, tot))
    return seq(stmts)


def shared(dtype: DType, numel: int, name: str) -> SharedBuffer:
    return SharedBuffer(name, dtype, numel)


def global_index(b: Expr, t: Expr, threads: int) -> Expr:
    return binop("add", binop("mul", b, Const(threads, I64)), t)


__all__ = [
    "SHFL_MODES",
    "WARP",
    "Barrier",
    "GpuSpec",
    "MMA_SHAPES",
    "Mma",
    "BlockIdx",
    "SharedBuffer",
    "Shfl",
    "ThreadIdx",
    "block_reduce",
    "global_index",
    "gpu_spec",
    "is_launch",
    "launch",
    "launch_dims",
    "mma_fragments",
    "shared",
]
