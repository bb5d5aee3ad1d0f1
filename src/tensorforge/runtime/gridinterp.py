"""The grid interpreter: GPU-mapped kernel IR executed on the CPU with the GPU's semantics.

Every kernel of a program compiled for an NVPTX target is a launch nest (``lower/gpu_kir.py``); this runs it
the way the GPU would, for every block and every thread, vectorized over threads with numpy (the way
Triton's interpreter and Numba's CUDA simulator check kernels without hardware):

* the threads of a group of blocks run in lock step: every value is an array with one element per thread,
  and control flow that depends on the thread masks threads off (``If``, loops with per-thread bounds);
* ``Barrier`` is a phase boundary. Lock step satisfies it trivially, so the interpreter *checks* instead
  what the GPU would not forgive: a barrier reached by only part of a block, a warp shuffle with part of
  the warp masked off, and data races: within one phase of a block, a shared-memory element written by one
  thread and read or written by another, and in global memory, an element written by one thread and
  read or written by a thread of another block (or of the same block without a barrier in between);
* shared memory (``SharedBuffer``) is one array per block; buffers that are no kernel parameter (scratch
  tiles) one per thread;
* ``Shfl`` reads the value of another lane of the thread's 32-lane warp;
* every load and store is bounds-checked (``GridError`` names the kernel, the buffer, the thread and index).

Memory is laid out as on the device: one arena of the planned size (``Program.arena_bytes``), constants,
inputs and outputs, each buffer a typed view (float16 as float16, bfloat16 as its 16 bits).
"""

from __future__ import annotations

import numpy as np

from ..errors import TensorforgeError
from ..ir.dtype import DType
from ..ir.scalar_ops import SCALAR_OPS
from ..lower import kir as K
from ..lower.gpu_kir import (
    MMA_SHAPES,
    WARP,
    Barrier,
    BlockIdx,
    Mma,
    SharedBuffer,
    Shfl,
    ThreadIdx,
    launch_dims,
    mma_fragments,
)
from ..lower.kir import (
    Assign,
    Bin,
    Bitcast,
    Broadcast,
    Cast,
    Cmp,
    Const,
    Decl,
    Expr,
    Fma,
    For,
    If,
    Kernel,
    Load,
    Prefetch,
    Select,
    Seq,
    Stmt,
    Store,
    Un,
    Var,
)

_MMA_DT = {"f16": DType.F16, "bf16": DType.BF16}  # the operand types of the half-precision tensor cores
MAX_THREADS = 1 << 18  # threads run at once (blocks are run in groups of about this many threads)


class GridError(TensorforgeError):
    """A GPU kernel did something the hardware would not forgive (out-of-bounds access, race, divergence)."""


def _cnp(dt: DType) -> np.dtype:
    """numpy dtype values of ``dt`` are computed in."""
    return np.dtype(np.float32) if dt in (DType.F16, DType.BF16) else dt.np


def _mnp(dt: DType) -> np.dtype:
    """numpy dtype of ``dt`` in memory."""
    return np.dtype(np.uint16) if dt is DType.BF16 else dt.np


def _from_mem(x: np.ndarray, dt: DType) -> np.ndarray:
    if dt is DType.BF16:
        return (x.astype(np.uint32) << 16).view(np.float32)
    if dt is DType.F16:
        return x.astype(np.float32)
    return x


def _to_mem(x, dt: DType) -> np.ndarray:
    x = np.asarray(x)
    if dt is DType.BF16:
        b = x.astype(np.float32).view(np.uint32)
        r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)  # round to nearest even
        return np.where(np.isnan(x), np.uint16(0x7FC0), r)
    return x.astype(_mnp(dt), copy=False)


def _tf32(x: np.ndarray) -> np.ndarray:
    """float32 rounded to tf32 (10-bit mantissa), to nearest with ties away from zero (``cvt.rna.tf32.f32``)."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32)
    r = ((b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    return np.where(np.isfinite(x), r, x)


def _round(x: np.ndarray, dt: DType) -> np.ndarray:
    """``x`` (float32) rounded to float16/bfloat16, kept as float32 (how such values live in registers)."""
    return _from_mem(_to_mem(x, dt), dt) if dt in (DType.F16, DType.BF16) else x


class _Launch:
    """One group of blocks of one kernel in lock step."""

    def __init__(self, interp: GridInterpreter, k: Kernel, b0: int, b1: int, threads: int):
        self.k = k
        self.mem = interp.mem_of
        self.nb, self.B = b1 - b0, threads
        n = self.nb * threads
        self.n = n
        self.tid = np.tile(np.arange(threads, dtype=np.int64), self.nb)
        self.blk = np.repeat(np.arange(self.nb, dtype=np.int64), threads)  # block within the group
        self.bid = self.blk + b0
        self.gtid = self.bid * threads + self.tid  # unique over the grid
        self.env: dict[int, object] = {}
        self.shared: dict[int, np.ndarray] = {}
        self.private: dict[int, np.ndarray] = {}
        self.phase = np.zeros(self.nb, dtype=np.int64)  # barriers passed, per block
        self.races = interp.races  # buffer id -> (writer gtid, writer phase) arrays, over the whole launch
        self.sh_track: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # shared id -> (writer, reader) per phase
        self.cur_mask: np.ndarray | None = None

    # -- errors --
    def fail(self, what: str, mask: np.ndarray | None = None) -> None:
        at = 0 if mask is None else int(np.argmax(mask))
        raise GridError(f"kernel {self.k.name} ({'; '.join(self.k.labels)}): {what} "
                        f"(block {int(self.bid[at])}, thread {int(self.tid[at])})")  # fmt: skip

    # -- statements --
    def run(self, s: Stmt, mask: np.ndarray | None) -> None:
        """Run ``s`` for the threads of ``mask`` (None: all); loads read under the running statement's mask."""
        prev, self.cur_mask = self.cur_mask, mask
        try:
            self._run(s, mask)
        finally:
            self.cur_mask = prev

    def _run(self, s: Stmt, mask: np.ndarray | None) -> None:
        if isinstance(s, Seq):
            for x in s.body:
                self.run(x, mask)
        elif isinstance(s, Store):
            self.store(s, mask)
        elif isinstance(s, For):
            self.loop(s, mask)
        elif isinstance(s, Decl | Assign):
            v = self.eval(s.value if isinstance(s, Assign) else s.init)
            v = np.asarray(v, dtype=_cnp(s.var.dtype))
            if mask is not None:
                old = self.env.get(s.var.uid)
                v = np.where(mask, v, np.zeros((), v.dtype) if old is None else old)
            self.env[s.var.uid] = v
        elif isinstance(s, If):
            c = np.broadcast_to(np.asarray(self.eval(s.cond), dtype=bool), (self.n,))
            m1 = c if mask is None else (mask & c)
            if m1.any():
                self.run(s.then, m1)
            if s.orelse is not None:
                m2 = ~c if mask is None else (mask & ~c)
                if m2.any():
                    self.run(s.orelse, m2)
        elif isinstance(s, Barrier):
            self.barrier(mask)
        elif isinstance(s, Mma):
            self.mma(s, mask)
        elif isinstance(s, Prefetch):
            pass
        else:
            raise GridError(f"kernel {self.k.name}: the grid interpreter has no rule for {type(s).__name__}")

    def loop(self, s: For, mask: np.ndarray | None) -> None:
        if isinstance(s.var, BlockIdx | ThreadIdx):
            self.env[s.var.uid] = self.bid if isinstance(s.var, BlockIdx) else self.tid
            self.run(s.body, mask)
            return
        start, stop = self.eval(s.start), self.eval(s.stop)
        if np.ndim(start) == 0 and np.ndim(stop) == 0:
            for i in range(int(start), int(stop), s.step):
                self.env[s.var.uid] = np.int64(i)
                self.run(s.body, mask)
            return
        i = np.broadcast_to(np.asarray(start, dtype=np.int64), (self.n,)).copy()
        stop = np.broadcast_to(stop, (self.n,))
        while True:
            active = i < stop
            if mask is not None:
                active &= mask
            if not active.any():
                break
            self.env[s.var.uid] = i
            self.run(s.body, active)
            i = i + s.step

    def barrier(self, mask: np.ndarray | None) -> None:
        if mask is not None:
            per = mask.reshape(self.nb, self.B)
            part = per.any(axis=1) & ~per.all(axis=1)
            if part.any():
                self.fail("barrier reached by only part of the block (divergent __syncthreads)",
                          np.repeat(part, self.B) & ~mask)  # fmt: skip
            hit = per.all(axis=1)
        else:
            hit = np.ones(self.nb, dtype=bool)
        self.phase[hit] += 1
        for w, r in self.sh_track.values():
            w[hit] = -1
            r[hit] = -1

    # -- memory --
    def where(self, buf) -> tuple[np.ndarray, np.ndarray | None]:
        """(array, row index per thread or None): shared buffers have a row per block, private ones per thread."""
        if isinstance(buf, SharedBuffer):
            a = self.shared.get(id(buf))
            if a is None:
                a = self.shared[id(buf)] = np.zeros((self.nb, max(buf.numel, 1)), _mnp(buf.dtype))
                self.sh_track[id(buf)] = (np.full(a.shape, -1, np.int64), np.full(a.shape, -1, np.int64))
            return a, self.blk
        a = self.mem(buf)
        if a is not None:
            return a, None
        a = self.private.get(id(buf))
        if a is None:
            if self.n * buf.numel > 1 << 27:
                raise GridError(f"kernel {self.k.name}: per-thread scratch {buf.name}[{buf.numel}] too large")
            a = self.private[id(buf)] = np.zeros((self.n, max(buf.numel, 1)), _mnp(buf.dtype))
        return a, np.arange(self.n)

    def _index(self, buf, idx, mask, what: str) -> tuple[np.ndarray, np.ndarray]:
        idx = np.broadcast_to(np.asarray(idx, dtype=np.int64), (self.n,))
        act = np.ones(self.n, dtype=bool) if mask is None else mask
        bad = act & ((idx < 0) | (idx >= buf.numel))
        if bad.any():
            j = int(np.argmax(bad))
            self.fail(f"{what} {buf.name}[{int(idx[j])}] out of bounds [0, {buf.numel})", bad)
        return np.where(act, idx, 0), act

    def load(self, e: Load, idx) -> np.ndarray:
        a, row = self.where(e.buf)
        if row is None and np.ndim(idx) == 0:
            i = int(idx)
            if not 0 <= i < e.buf.numel:
                self.fail(f"read {e.buf.name}[{i}] out of bounds [0, {e.buf.numel})")
            self.check_read(e.buf, np.full(self.n, i), self.cur_mask)
            return _from_mem(a[i : i + 1], e.buf.dtype)[0]
        ix, act = self._index(e.buf, idx, self.cur_mask, "read")
        self.check_read(e.buf, ix, act)
        v = a[ix] if row is None else a[row, ix]
        return _from_mem(v, e.buf.dtype)

    def store(self, s: Store, mask: np.ndarray | None) -> None:
        idx, val = self.eval(s.index), self.eval(s.value)
        a, row = self.where(s.buf)
        ix, act = self._index(s.buf, idx, mask, "write")
        val = np.broadcast_to(_to_mem(val, s.buf.dtype), (self.n,))
        self.check_write(s.buf, ix, act)
        if row is None:
            a[ix[act]] = val[act]
        else:
            a[row[act], ix[act]] = val[act]

    # -- races --
    def check_read(self, buf, ix: np.ndarray, act: np.ndarray) -> None:
        if isinstance(buf, SharedBuffer):
            w, r = self.sh_track[id(buf)]
            wr = w[self.blk[act], ix[act]]
            me = self.gtid[act]
            if ((wr >= 0) & (wr != me)).any():
                self.fail(f"data race: shared {buf.name} read where another thread wrote in the same phase "
                          "(missing barrier)", act)  # fmt: skip
            cur = r[self.blk[act], ix[act]]
            r[self.blk[act], ix[act]] = np.where((cur == -1) | (cur == me), me, -2)
            return
        track = self.races.get(id(buf))
        if track is None:
            return
        self._global_conflict(buf, track, ix, act, "read")

    def check_write(self, buf, ix: np.ndarray, act: np.ndarray) -> None:
        me = self.gtid[act]
        flat = ix[act] + (self.blk[act] * buf.numel if isinstance(buf, SharedBuffer) else 0)
        if len(flat) > 1 and len(np.unique(flat)) < len(flat):
            self.fail(f"data race: {buf.name} written at one element by several threads at once", act)
        if isinstance(buf, SharedBuffer):
            w, r = self.sh_track[id(buf)]
            b, i = self.blk[act], ix[act]
            wr, rd = w[b, i], r[b, i]
            if (((wr >= 0) & (wr != me)) | ((rd != -1) & (rd != me))).any():
                self.fail(f"data race: shared {buf.name} written where another thread read or wrote in the same "
                          "phase (missing barrier)", act)  # fmt: skip
            w[b, i] = me
            return
        track = self.races.setdefault(id(buf), (np.full(buf.numel, -1, np.int64), np.zeros(buf.numel, np.int64)))
        self._global_conflict(buf, track, ix, act, "written")
        track[0][ix[act]] = me
        track[1][ix[act]] = self.phase[self.blk[act]]

    def _global_conflict(self, buf, track, ix, act, what: str) -> None:
        wr, ph = track[0][ix[act]], track[1][ix[act]]
        me = self.gtid[act]
        other = (wr >= 0) & (wr != me)
        if not other.any():
            return
        same_block = (wr // self.B) == (me // self.B)
        synced = same_block & (ph < self.phase[self.blk[act]])
        if (other & ~synced).any():
            self.fail(f"data race: {buf.name} {what} at an element another thread wrote in this kernel", act)

    # -- expressions --
    def eval(self, e: Expr):
        return K.transform(e, self._value, {}, lambda x: not isinstance(x, Load | Shfl))

    def _value(self, x: Expr, ops: tuple):
        if isinstance(x, Const):
            return np.asarray(x.value, dtype=_cnp(x.dtype))
        if isinstance(x, Var):
            v = self.env.get(x.uid)
            if v is None:
                raise GridError(f"kernel {self.k.name}: variable {x.name} read before it is set")
            return v
        if isinstance(x, Load):
            return self.load(x, self.eval(x.index))
        if isinstance(x, Shfl):
            return self.shfl(x, self.eval(x.a))
        if isinstance(x, Bin | Cmp | Un):
            r = SCALAR_OPS[x.op].numpy(*ops)
            return np.asarray(r, dtype=_cnp(x.dtype))
        if isinstance(x, Select):
            return np.where(ops[0], ops[1], ops[2]).astype(_cnp(x.dtype), copy=False)
        if isinstance(x, Bitcast):
            src = np.asarray(ops[0], dtype=_cnp(x.a.dtype))
            return src.view(_cnp(x.dtype)) if src.dtype.itemsize == _cnp(x.dtype).itemsize else src
        if isinstance(x, Cast):
            v = np.asarray(ops[0])
            if x.dtype.is_int and v.dtype.kind == "f":
                with np.errstate(invalid="ignore"):
                    v = np.trunc(v)
            with np.errstate(invalid="ignore", over="ignore"):
                r = v.astype(_cnp(x.dtype))
            return _round(r, x.dtype)
        if isinstance(x, Broadcast) and x.lanes == 1:
            return ops[0]
        if isinstance(x, Fma):
            if x.dtype is DType.F32 or x.dtype.compute is DType.F32:
                r = ops[0].astype(np.float64) * ops[1] + ops[2]
                return r.astype(np.float32)
            return np.asarray(ops[0] * ops[1] + ops[2], dtype=_cnp(x.dtype))
        raise GridError(f"kernel {self.k.name}: the grid interpreter has no rule for {type(x).__name__}")

    def mma(self, s: Mma, mask: np.ndarray | None) -> None:
        """The warp-wide tensor-core product, from each lane's fragments (layout: ``gpu_kir.Mma``)."""
        if self.B % WARP:
            self.fail(f"mma in a block of {self.B} threads (not whole warps)")
        if mask is not None and not mask.all():
            per = mask.reshape(-1, WARP)
            if (per.any(axis=1) & ~per.all(axis=1)).any():
                self.fail("mma with part of the warp inactive", ~mask)
        (m, n_, k), na, nb, _ = MMA_SHAPES[s.kind]
        fa, fb, fc = mma_fragments(s.kind)
        vals = [np.broadcast_to(np.asarray(self.eval(x), np.float32), (self.n,)) for x in (*s.a, *s.b, *s.c)]
        rnd = _tf32 if s.kind == "tf32" else (lambda v: _round(v, _MMA_DT[s.kind]))
        a, b, c = [rnd(v) for v in vals[:na]], [rnd(v) for v in vals[na : na + nb]], vals[na + nb :]
        w = self.n // WARP
        lane = np.arange(self.n) % WARP
        g, q = (lane >> 2).reshape(w, WARP), (lane % 4).reshape(w, WARP)
        wi = np.repeat(np.arange(w), WARP).reshape(w, WARP)
        A = np.zeros((w, m, k))
        B = np.zeros((w, k, n_))
        C = np.zeros((w, m, n_))
        for v, (ro, km, ko) in zip(a, fa):
            A[wi, g + ro, km * q + ko] = v.reshape(w, WARP)
        for v, (km, ko) in zip(b, fb):
            B[wi, km * q + ko, g] = v.reshape(w, WARP)
        pos = [(g + ro, 2 * q + co) for ro, co in fc]
        for v, (r, col) in zip(c, pos):
            C[wi, r, col] = v.reshape(w, WARP)
        D = (A @ B + C).astype(np.float32)  # products exact; the sum in float64, then rounded once
        for var, (r, col) in zip(s.d, pos):
            v = D[wi, r, col].reshape(-1)
            old = self.env.get(var.uid)
            self.env[var.uid] = v if mask is None or old is None else np.where(mask, v, old)

    def shfl(self, x: Shfl, v) -> np.ndarray:
        if self.B % WARP:
            self.fail(f"warp shuffle in a block of {self.B} threads (not whole warps)")
        m = self.cur_mask
        if m is not None:
            per = m.reshape(-1, WARP)
            part = per.any(axis=1) & ~per.all(axis=1)
            if part.any():
                self.fail("warp shuffle with part of the warp inactive", np.repeat(part, WARP))
        v = np.broadcast_to(v, (self.n,))
        lane = self.tid % WARP
        base = np.arange(self.n) - lane
        if x.mode == "bfly":
            src = lane ^ x.lane
        elif x.mode == "down":
            src = np.where(lane + x.lane < WARP, lane + x.lane, lane)
        else:
            src = np.full(self.n, x.lane % WARP)
        return v[base + src]


class GridInterpreter:
    """Runs a program of GPU-mapped kernels on numpy arrays: ``run(inputs) -> outputs``."""

    def __init__(self, program):
        self.p = program
        for k in program.kernels:
            if launch_dims(k.body) is None:
                raise GridError(f"kernel {k.name} is not GPU-mapped (compile for an NVPTX target)")
        self.arena = np.zeros(max(program.arena_bytes, 8) + 64, np.uint8)
        self.races: dict = {}
        self._bound: dict[int, np.ndarray] = {}

    def _view(self, buf, kind: str, index: int, ins, outs) -> np.ndarray:
        dt = _mnp(buf.dtype)
        if kind == "in":
            return np.ascontiguousarray(ins[index]).reshape(-1).view(dt)
        if kind == "out":
            return outs[index].reshape(-1).view(dt)
        if kind == "const":
            return np.ascontiguousarray(self.p.consts[index]).reshape(-1).view(dt)
        return self.arena[index : index + buf.numel * dt.itemsize].view(dt)

    def mem_of(self, buf) -> np.ndarray | None:
        return self._bound.get(id(buf))

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        p = self.p
        ins = [np.ascontiguousarray(np.asarray(x, dtype=_mnp(dt) if dt is not DType.BF16 else np.uint16))
               for x, (_, dt, _) in zip(inputs, p.inputs)]  # fmt: skip
        outs = [np.zeros(shape, _mnp(dt)) for _, dt, shape in p.outputs]
        for k, args in zip(p.kernels, p.kernel_args):
            self._bound = {id(b): self._view(b, kind, idx, ins, outs) for b, (kind, idx) in zip(k.params, args)}
            self.run_kernel(k)
        res = []
        for i, ((_, dt, shape), o) in enumerate(zip(p.outputs, outs)):
            if i in p.const_outputs:
                res.append(np.asarray(p.const_outputs[i]))
            else:
                res.append(_from_mem(o, dt).reshape(shape) if dt is DType.BF16 else o)
        return res

    def run_kernel(self, k: Kernel) -> None:
        blocks, threads = launch_dims(k.body)
        self.races = {}
        per = max(1, MAX_THREADS // threads)
        with np.errstate(all="ignore"):  # inf - inf is NaN on a GPU, without a word
            for b0 in range(0, blocks, per):
                _Launch(self, k, b0, min(blocks, b0 + per), threads).run(k.body, None)


class SimulatedModel:
    """A model compiled for an NVPTX target, run on the grid interpreter: numpy in, numpy out (checked at the
    border like every compiled model). ``assembly()`` is the PTX the GPU would run."""

    def __init__(self, artifact):
        from ..ir.signature import InputSpec

        self.artifact = artifact
        self.program = artifact.program
        self.name = self.program.name
        self.inputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in self.program.inputs]
        self.interp = GridInterpreter(self.program)

    def call(self, *args, **kwargs) -> list[np.ndarray]:
        from ..ir.signature import check_inputs

        xs, _ = check_inputs(self.name, self.inputs, args, kwargs)
        return self.interp.run(xs)

    def __call__(self, *args, **kwargs):
        outs = self.call(*args, **kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def assembly(self) -> str:
        return self.artifact.assembly()

    def kernel_ir(self) -> str:
        return self.artifact.kernel_ir()


__all__ = ["GridError", "GridInterpreter", "SimulatedModel"]
