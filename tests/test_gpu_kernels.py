"""The GPU vocabulary of the kernel IR (launch nests, shared memory, barriers, warp shuffles): its semantics on the
grid interpreter, the interpreter's checks (races, divergent barriers, partial-warp shuffles, bounds), the
independence analysis of the grid mapping, and the PTX of hand-written kernels through ptxas."""

from __future__ import annotations

import numpy as np
import pytest

from tensorforge.codegen import ptx
from tensorforge.codegen.emit import build_kernel_module
from tensorforge.codegen.targets import get_target
from tensorforge.ir.dtype import DType
from tensorforge.lower import kir as K
from tensorforge.lower.gpu_kir import Barrier, SharedBuffer, Shfl, block_reduce, launch
from tensorforge.lower.gpu_map import independent, map_kernel
from tensorforge.lower.kir import Buffer, Const, For, If, Kernel, Load, Store, Var, binop
from tensorforge.lower.program import Program
from tensorforge.runtime.gridinterp import GridError, GridInterpreter

F32 = DType.F32


def _run(body, bufs: dict[str, np.ndarray], outs: list[str]) -> dict[str, np.ndarray]:
    """Run one kernel over named float32 arrays (all passed as inputs; ``outs`` are read back)."""
    params = [Buffer(n, F32 if a.dtype == np.float32 else DType.I64, a.size) for n, a in bufs.items()]
    by = {b.name: b for b in params}
    k = Kernel("k", params, body(by))
    p = Program("p", get_target("nvptx-sm80"), [k], [[("in", i) for i in range(len(params))]], [], 0, 0,
                [(b.name, b.dtype, (b.numel,)) for b in params], [])  # fmt: skip
    arrays = [np.array(a) for a in bufs.values()]
    GridInterpreter(p).run(arrays)  # inputs are written in place (the interpreter binds them directly)
    return {n: a for n, a in zip(bufs, arrays) if n in outs}


@pytest.mark.parametrize("mode,lane", [("bfly", 1), ("bfly", 16), ("down", 3), ("idx", 5)])
def test_shuffle_semantics(mode, lane, rng):
    x = rng.standard_normal(128).astype(np.float32)

    def body(b):
        def per(bi, t):
            g = binop("add", binop("mul", bi, 64), t)
            return Store(b["y"], g, Shfl(mode, Load(b["x"], g), lane))

        return launch(2, 64, per)

    y = _run(body, {"x": x, "y": np.zeros(128, np.float32)}, ["y"])["y"]
    i = np.arange(128)
    lane_i = i % 32
    src = {"bfly": lane_i ^ lane, "down": np.where(lane_i + lane < 32, lane_i + lane, lane_i),
           "idx": np.full(128, lane)}[mode]  # fmt: skip
    np.testing.assert_array_equal(y, x[i - lane_i + src])


def test_block_reduce_sums_every_thread(rng):
    x = rng.standard_normal(3 * 128).astype(np.float32)

    def body(b):
        def per(bi, t):
            acc = Var("acc", F32)
            scratch = SharedBuffer("red", F32, 4)
            return K.seq(K.Decl(acc, Load(b["x"], binop("add", binop("mul", bi, 128), t))),
                         block_reduce("add", acc, acc, t, 128, scratch),
                         Store(b["y"], binop("add", binop("mul", bi, 128), t), acc))  # fmt: skip

        return launch(3, 128, per)

    y = _run(body, {"x": x, "y": np.zeros(3 * 128, np.float32)}, ["y"])["y"].reshape(3, 128)
    np.testing.assert_allclose(y, np.repeat(x.reshape(3, 128).sum(1, keepdims=True), 128, 1), rtol=1e-5)


def _neighbour(barrier: bool):
    """smem[t] = x[t]; (barrier;) y[t] = smem[(t + 1) % 64]: a race without the barrier."""

    def body(b):
        def per(bi, t):
            sm = SharedBuffer("sm", F32, 64)
            return K.seq(Store(sm, t, Load(b["x"], t)), Barrier() if barrier else None,
                         Store(b["y"], t, Load(sm, binop("mod", binop("add", t, 1), 64))))  # fmt: skip

        return launch(1, 64, per)

    return body


def test_barrier_orders_shared_memory(rng):
    x = rng.standard_normal(64).astype(np.float32)
    y = _run(_neighbour(True), {"x": x, "y": np.zeros(64, np.float32)}, ["y"])["y"]
    np.testing.assert_array_equal(y, np.roll(x, -1))


def test_race_without_barrier_detected():
    with pytest.raises(GridError, match="data race: shared sm"):
        _run(_neighbour(False), {"x": np.zeros(64, np.float32), "y": np.zeros(64, np.float32)}, ["y"])


def test_write_after_read_race_detected():
    def body(b):
        def per(bi, t):
            sm = SharedBuffer("sm", F32, 64)
            v = Var("v", F32)
            return K.seq(Store(sm, t, Load(b["x"], t)), Barrier(),
                         K.Decl(v, Load(sm, binop("mod", binop("add", t, 1), 64))),
                         Store(sm, t, v), Store(b["y"], t, v))  # fmt: skip

        return launch(1, 64, per)

    with pytest.raises(GridError, match="written where another thread read"):
        _run(body, {"x": np.zeros(64, np.float32), "y": np.zeros(64, np.float32)}, ["y"])


def test_divergent_barrier_detected():
    def body(b):
        return launch(1, 64, lambda bi, t: If(K.cmp("lt", t, Const(16)), Barrier()))

    with pytest.raises(GridError, match="divergent"):
        _run(body, {"x": np.zeros(1, np.float32)}, [])


def test_partial_warp_shuffle_detected():
    def body(b):
        return launch(
            1, 64, lambda bi, t: If(K.cmp("lt", t, Const(40)), Store(b["y"], t, Shfl("bfly", Load(b["x"], t), 1)))
        )

    with pytest.raises(GridError, match="part of the warp"):
        _run(body, {"x": np.zeros(64, np.float32), "y": np.zeros(64, np.float32)}, ["y"])


def test_out_of_bounds_detected():
    def body(b):
        return launch(2, 32, lambda bi, t: Store(b["y"], t, Load(b["x"], binop("add", binop("mul", bi, 32), t))))

    with pytest.raises(GridError, match=r"read x\[32\] out of bounds \[0, 32\)"):
        _run(body, {"x": np.zeros(32, np.float32), "y": np.zeros(32, np.float32)}, ["y"])


def test_cross_block_race_detected():
    def body(b):
        return launch(4, 32, lambda bi, t: Store(b["y"], t, K.cast(bi, F32)))

    with pytest.raises(GridError, match="data race: y written at one element by several threads"):
        _run(body, {"y": np.zeros(32, np.float32)}, ["y"])


def test_independence_analysis():
    x, y, idx = Buffer("x", F32, 1000), Buffer("y", F32, 1000), Buffer("idx", DType.I64, 100)
    i, j = Var("i"), Var("j")
    # y[i*10 + j] = x[...]: iterations of i write disjoint rows
    rows = For(i, Const(0), Const(100), For(j, Const(0), Const(10), Store(y, binop("add", binop("mul", i, 10), j),
                                                                      Load(x, j))))  # fmt: skip
    assert independent([rows], rows.body, set())
    # y[i*5 + j] with j < 10: rows overlap
    over = For(i, Const(0), Const(100), For(j, Const(0), Const(10), Store(y, binop("add", binop("mul", i, 5), j),
                                                                      Load(x, j))))  # fmt: skip
    assert not independent([over], over.body, set())
    # a scatter through data: never assumed independent
    scat = For(i, Const(0), Const(100), Store(y, Load(idx, i), Load(x, i)))
    assert not independent([scat], scat.body, set())
    spec = __import__("tensorforge.lower.gpu_kir", fromlist=["gpu_spec"]).gpu_spec(get_target("nvptx-sm80"))
    _, how = map_kernel(Kernel("s", [idx, x, y], scat), spec)
    assert how == "single"
    _, how = map_kernel(Kernel("r", [x, y], rows), spec)
    assert how == "grid"


@pytest.mark.skipif(ptx.find_ptxas() is None, reason="ptxas not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_vocabulary_assembles(arch):
    x, y = Buffer("x", F32, 256), Buffer("y", F32, 256)

    def per(bi, t):
        sm = SharedBuffer("sm", F32, 128)
        acc = Var("acc", F32)
        g = binop("add", binop("mul", bi, 128), t)
        return K.seq(Store(sm, t, Load(x, g)), Barrier(), K.Decl(acc, Load(sm, binop("sub", 127, t))),
                     block_reduce("max", acc, acc, t, 128, SharedBuffer("red", F32, 4)), Store(y, g, acc))  # fmt: skip

    k = Kernel("vocab", [x, y], launch(2, 128, per))
    target = get_target("nvptx-" + arch.replace("_", ""))
    from tensorforge.codegen.emit import assembly_of

    text = assembly_of(build_kernel_module([k], target), target)
    for needle in ("bar.sync", "shfl.sync.bfly", ".shared", ".maxntid 128"):
        assert needle in text, needle
    assert ptx.ptxas_check(text, arch)
