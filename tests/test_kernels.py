"""The fast paths of the heavy kernels (GEMM, convolution, pooling) against numpy / the ONNX reference.

Shapes include the edge sizes 1, 7, 17, 63, 65 and 1000 (partial micro-tiles, partial panels, K
remainders). The blocked paths (K split into blocks with partial sums, several macro tiles, both loop
orders) only switch on for large shapes, so the tests force them on small ones through the lowering
option ``gemm`` (fields of ``GemmPlan``). Speed is measured in benchmarks/, never here.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from helpers import assert_close, one_node_model, rand, reference
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, compile_graph, to_graph
from tensorforge.ir.dtype import DType
from tensorforge.lower.gemm import plan_gemm

EDGE_SHAPES = [  # (M, N, K): every edge size appears in every role
    (1, 1, 1), (7, 17, 63), (65, 1000, 7), (1000, 65, 17), (63, 7, 1000), (17, 63, 65), (1, 1000, 65),
    (1000, 1, 7), (65, 63, 1),
]  # fmt: skip

BLOCKINGS = {
    "default": None,
    "ksplit": {"KC": 8},  # partial sums in the output between K blocks
    "macro": {"MC": 0, "NC": 0, "KC": 12, "order": "pm"},
    "tiles": {"MR": 3, "nv": 1, "MC": 6, "NC": 0, "KC": 16},  # several macro tiles over M
    "packA": {"pack_a": True, "KC": 20},  # a run-time A copied into micro-panels first
    "inplaceB": {"pack_b": False, "KC": 24, "MC": 8, "MR": 4},  # a run-time B read in place, K split
    "packB": {"pack_b": True},  # a run-time B always packed
}


def _compile(model, threads: int = 1, gemm: dict | None = None):
    m = compile_graph(to_graph(model), host(), Options(lowering={"gemm": gemm} if gemm else {}))
    m.num_threads = threads
    return m


def _check(model, feeds, threads=1, gemm=None, rtol=1e-4, atol=1e-4):
    got = _compile(model, threads, gemm).run(feeds)
    want = reference(model, feeds)
    for (name, g), w in zip(got.items(), want):
        assert_close(g, w, rtol, atol, what=f"output {name}")


@pytest.mark.parametrize("mnk", EDGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("b_kind", ["const", "packed", "in-place"])
def test_matmul_edges(mnk, b_kind, rng):
    m, n, k = mnk
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    if b_kind == "const":
        _check(one_node_model("MatMul", {"a": a}, consts={"b": b}), {"a": a}, threads=2)
    else:
        gemm = {"pack_b": b_kind == "packed"}
        _check(one_node_model("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, threads=2, gemm=gemm)


@pytest.mark.parametrize("blocking", list(BLOCKINGS), ids=list(BLOCKINGS))
@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)], ids=lambda t: f"tA{t[0]}tB{t[1]}")
@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_blockings(blocking, trans, threads, rng):
    """Gemm with alpha, beta, a bias row, transposed operands, under every blocking scheme."""
    m, n, k = 37, 70, 53
    ta, tb = trans
    a = rand(rng, (k, m) if ta else (m, k))
    b = rand(rng, (n, k) if tb else (k, n))
    c = rand(rng, (n,))
    attrs = {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0}
    gemm = BLOCKINGS[blocking]
    _check(one_node_model("Gemm", {"a": a}, attrs, consts={"b": b, "c": c}), {"a": a}, threads, gemm)
    _check(one_node_model("Gemm", {"a": a, "b": b, "c": c}, attrs), {"a": a, "b": b, "c": c}, threads, gemm)


@pytest.mark.parametrize("blocking", ["default", "ksplit", "tiles", "packA", "inplaceB", "packB"])
def test_batched_matmul(blocking, rng):
    """Batched and broadcast-batched MatMul (attention-like shapes), weights constant and not."""
    gemm = BLOCKINGS[blocking]
    for sa, sb in [((3, 17, 33), (3, 33, 65)), ((2, 3, 7, 40), (40, 17)), ((1, 65, 20), (4, 20, 7))]:
        a, b = rand(rng, sa), rand(rng, sb)
        _check(one_node_model("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, 2, gemm)
        _check(one_node_model("MatMul", {"a": a}, consts={"b": b}), {"a": a}, 2, gemm)


@pytest.mark.parametrize("blocking", ["default", "tiles", "packA", "inplaceB"])
@pytest.mark.parametrize("perm", [None, (1, 0, 2), (0, 2, 1)], ids=["contiguous", "batch-transposed", "rows-strided"])
def test_batch_folded_into_rows(blocking, perm, rng):
    """A[batch..., M, K] @ B[K, N] runs as one GEMM of batch*M rows (ViT's [197, 1, 768] x [768, 2304]); A
    read through a view whose strides do not chain, or as an expression, and a fused residual epilogue
    indexed in the original [batch..., M, N] shape."""
    gemm = BLOCKINGS[blocking]
    for sx, k, n in [((19, 1, 40), 40, 33), ((5, 3, 40), 40, 17), ((2, 3, 7, 24), 24, 9)]:
        x = rand(rng, sx if perm is None or len(sx) != 3 else tuple(sx[p] for p in perm))
        b, r = rand(rng, (k, n)), rand(rng, (*sx[:-1], n))
        nodes, a_name = [], "x"
        if perm is not None and x.ndim == 3:
            nodes.append(onnx.helper.make_node("Transpose", ["x"], ["xt"], perm=list(perm)))
            a_name = "xt"
        nodes += [onnx.helper.make_node("MatMul", [a_name, "b"], ["y0"]),
                  onnx.helper.make_node("Add", ["y0", "r"], ["y"])]  # fmt: skip
        for const_b in (True, False):
            feeds = {"x": x, "r": r} if const_b else {"x": x, "r": r, "b": b}
            g = onnx.helper.make_graph(
                nodes, "fold", [onnx.helper.make_tensor_value_info(k_, onnx.TensorProto.FLOAT, v.shape)
                                for k_, v in feeds.items()],
                [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
                [onnx.numpy_helper.from_array(b, "b")] if const_b else [])  # fmt: skip
            model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
            _check(model, feeds, 2, gemm)


def test_ksplit_with_f16_output_uses_workspace(rng):
    """float16 results cannot hold float32 partial sums: the K-split path uses a workspace."""
    a, b = rand(rng, (20, 40)).astype(np.float16), rand(rng, (40, 33)).astype(np.float16)
    model = one_node_model("MatMul", {"a": a}, consts={"b": b})
    got = _compile(model, 2, {"KC": 8})(a)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-2, atol=2e-2)


def test_large_matmul_default_plan(rng):
    """A shape big enough for the default plan to block over K by itself (L2-sized panels). The host's ISA
    with fixed cache sizes and core count, so that a blocked path runs whatever machine runs the test."""
    import dataclasses

    target = dataclasses.replace(host(), l1d=32 * 1024, l2=1024 * 1024, l3=32 * 1024 * 1024, cores=2)
    ctx = type("Ctx", (), {"target": target, "options": {}})()
    m, n = 100, 1000
    k = next(k for k in (2500, 5000, 10000, 20000) if plan_gemm(ctx, DType.F32, m, n, k).KC)
    plan = plan_gemm(ctx, DType.F32, m, n, k)
    assert 0 < plan.KC < k and plan.NC, plan
    a, b = rand(rng, (m, k)), rand(rng, (k, n))
    model = one_node_model("MatMul", {"a": a}, consts={"b": b})
    compiled = compile_graph(to_graph(model), target, Options())
    compiled.num_threads = 2
    got = compiled(a)
    np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("n", [1, 7, 15, 17, 33])
def test_vector_loop_tails(n, rng):
    """Tails of vector loops (masked vector iterations on AVX-512): contiguous, gathered (transposed) and
    reduced accesses, with sizes below, at and above the vector width."""
    x = rand(rng, (3, n))
    _check(one_node_model("Relu", {"x": x}), {"x": x})
    _check(one_node_model("Transpose", {"x": x}, {"perm": [1, 0]}), {"x": x})
    _check(one_node_model("ReduceMax", {"x": x}, {"keepdims": 0}, consts={"axes": np.array([1])}), {"x": x})
    _check(one_node_model("Softmax", {"x": x}, {"axis": 1}), {"x": x}, rtol=1e-5, atol=1e-6)
    y = rand(rng, (n, 3))
    _check(one_node_model("ReduceSum", {"y": y}, {"keepdims": 1}, consts={"axes": np.array([0])}), {"y": y})


# -- convolution -----------------------------------------------------------------------------------------
CONV_CASES = {  # name: (x shape, w shape, attrs)
    "1x1": ((2, 17, 9, 7), (33, 17, 1, 1), {}),  # P is X itself; the last pixel tile shifts back
    "1x1_tiny": ((1, 16, 3, 3), (24, 16, 1, 1), {}),  # fewer pixels than a vector: padded copy
    "1x1_s2": ((1, 20, 13, 13), (40, 20, 1, 1), {"strides": [2, 2]}),  # decimated copy
    "3x3": ((1, 7, 17, 15), (65, 7, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3_s2": ((2, 5, 16, 17), (9, 5, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "3x3_s2_asym": ((1, 3, 15, 16), (8, 3, 3, 3), {"strides": [2, 2], "pads": [0, 0, 1, 1]}),
    "7x7_s2_stem": ((1, 3, 35, 33), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "5x3_dil": ((1, 4, 19, 14), (6, 4, 5, 3), {"dilations": [2, 3], "pads": [2, 1, 3, 2]}),
    "stride3_dil2": ((1, 2, 20, 21), (5, 2, 3, 3), {"strides": [3, 2], "dilations": [2, 2], "pads": [1, 2, 1, 0]}),
    "grouped": ((1, 12, 11, 10), (18, 4, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "1d": ((2, 6, 63), (10, 6, 5), {"pads": [2, 1], "strides": [2]}),
    "7x7_map": ((1, 64, 7, 7), (72, 64, 3, 3), {"pads": [1, 1, 1, 1]}),  # small map, many channels
}
DEPTHWISE_CASES = {
    "dw3x3": ((1, 19, 17, 18), {"pads": [1, 1, 1, 1]}),
    "dw3x3_s2": ((2, 8, 21, 20), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "dw5x5": ((1, 5, 12, 12), {"pads": [2, 2, 2, 2]}),
    "dw_big_plane": ((1, 2, 300, 260), {"pads": [1, 1, 1, 1]}),  # plane too big for the stack: workspace
    "dw_1d": ((1, 7, 40), {"pads": [1, 1]}),
}


def _conv_check(x, w, attrs, rng, threads=2, conv=None, runtime_w=False, relu_input=False):
    b = rand(rng, (w.shape[0],))
    if runtime_w:
        model = one_node_model("Conv", {"x": x, "w": w, "b": b}, attrs)
        feeds = {"x": x, "w": w, "b": b}
    else:
        model = one_node_model("Conv", {"x": x}, attrs, consts={"w": w, "b": b})
        feeds = {"x": x}
    m = compile_graph(to_graph(model), host(), Options(lowering={"conv": conv} if conv else {}))
    m.num_threads = threads
    got = m.run(feeds)["y0"]
    assert_close(got, reference(model, feeds)[0], rtol=1e-4, atol=1e-3, what="conv")


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
@pytest.mark.parametrize("orient", ["auto", "pixels", "channels"])
def test_conv_fast_paths(case, orient, rng):
    xs, ws, attrs = CONV_CASES[case]
    conv = {"auto": None, "pixels": {"pix_vec": True}, "channels": {"pix_vec": False}}[orient]
    _conv_check(rand(rng, xs), rand(rng, ws), attrs, rng, conv=conv)


LARGE_WINDOWS = {  # beyond MAX_UNROLLED_TAPS: the implicit-im2col GEMM
    "patch16": ((1, 3, 48, 64), (24, 3, 16, 16), {"strides": [16, 16]}),  # ViT patch embedding
    "11x11_s4": ((2, 3, 43, 41), (16, 3, 11, 11), {"strides": [4, 4], "pads": [2, 2, 2, 2]}),  # AlexNet stem
    "8x8_grouped": ((1, 8, 20, 20), (12, 4, 8, 8), {"strides": [8, 8], "group": 2, "pads": [0, 0, 4, 4]}),
}


@pytest.mark.parametrize("case", list(LARGE_WINDOWS), ids=list(LARGE_WINDOWS))
def test_large_windows(case, rng):
    xs, ws, attrs = LARGE_WINDOWS[case]
    _conv_check(rand(rng, xs), rand(rng, ws), attrs, rng)


def test_code_size_does_not_grow_with_the_window(rng):
    """A 16x16/16 patch embedding's code is about as big as an 8x8/8 one's (it was 6 MB of LLVM IR)."""
    sizes = []
    for k in (8, 16):
        x, w = rand(rng, (1, 3, 64, 64)), rand(rng, (32, 3, k, k))
        m = _compile(one_node_model("Conv", {"x": x}, {"strides": [k, k]}, consts={"w": w}))
        sizes.append(len(m.artifact.llvm_ir))
    assert sizes[1] < 2 * sizes[0] and sizes[1] < 400_000, sizes  # (other GEMM plans for another K)


@pytest.mark.parametrize("case", ["1x1", "3x3_s2", "grouped", "1d"])
def test_conv_runtime_weights(case, rng):
    xs, ws, attrs = CONV_CASES[case]
    _conv_check(rand(rng, xs), rand(rng, ws), attrs, rng, threads=1, runtime_w=True)


@pytest.mark.parametrize("case", list(DEPTHWISE_CASES), ids=list(DEPTHWISE_CASES))
def test_depthwise(case, rng):
    xs, attrs = DEPTHWISE_CASES[case]
    c = xs[1]
    k = 5 if case == "dw5x5" else 3
    ws = (c, 1, k) if len(xs) == 3 else (c, 1, k, k)
    _conv_check(rand(rng, xs), rand(rng, ws), {**attrs, "group": c}, rng)


# -- profiler (the peak model: test_peak.py) ----------------------------------------------------------
def test_profile_per_kernel_times(rng):
    """One native call with timestamps between kernels: every kernel gets a time, they add up to the run."""
    from tensorforge.examples import small_cnn
    from tensorforge.runtime.peak import MachinePeak
    from tensorforge.runtime.profile import format_profile

    m = _compile(small_cnn(batch=2))
    x = rand(rng, (2, 3, 16, 16))
    rows, total = m.profile({"x": x}, repeat=5)
    assert [r.name for r in rows] == [k.name for k in m.kernels]
    assert all(r.seconds > 0 for r in rows)
    assert sum(r.seconds for r in rows) == pytest.approx(total, rel=0.5)
    conv = next(r for r in rows if "Conv" in r.name)
    assert conv.flops > 0 and conv.gflops > 0
    peak = MachinePeak(cpu="cpu", cores=2, clock_ghz=3.0, clock_source="measured", vector_bits=256,
                       fma_gflops_core=90.0, mem_gbs_1=10.0, mem_gbs_all=20.0, mem_probe_mib=256)  # fmt: skip
    table = format_profile(rows, total, 1, peak)
    body = table.split("-" * 100 + "\n", 1)[1].splitlines()
    assert len(body) == len(rows)
    times = [float(line.split()[0]) * (1e-3 if line.split()[1] == "us" else 1) for line in body]
    assert times == sorted(times, reverse=True) and len(times) >= 1
    # the profiled run computes the same outputs as a normal one
    np.testing.assert_allclose(m(x), reference(small_cnn(batch=2), {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_cli_profile(capsys):
    from tensorforge.cli import main

    assert main(["profile", "mlp", "--threads", "1", "--repeat", "3", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP/s per core" in out and "fp32 peak" in out
    assert "fc1 (Gemm)" in out and "more kernels" in out


# -- the micro-kernel's machine code --------------------------------------------------------------------
def _inner_loop(asm: str) -> list[str]:
    """The innermost loop with the most FMAs: the lines from a label to the backward jump to it."""
    import re

    lines = asm.splitlines()
    labels = {ln.rstrip(":"): i for i, ln in enumerate(lines) if re.match(r"^\.LBB\S+:", ln)}
    loops = []  # (start, end) of every backward jump
    for i, ln in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\S+)", ln)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            loops.append((labels[m.group(1)], i))
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    best: list[str] = []
    for a, b in innermost:
        body = lines[a : b + 1]
        if sum("vfmadd" in x for x in body) > sum("vfmadd" in x for x in best):
            best = body
    return best


@pytest.mark.parametrize("target,reg", [("host", None), ("x86_64", "ymm"), ("x86_64-avx512", "zmm")])
def test_gemm_microkernel_assembly(target, reg):
    """FMAs on full-width vector registers, MR broadcast loads and nv vector loads per k step, K unrolled,
    and no register spills (no stack access) in the inner loop."""
    import re

    import tensorforge as tfg
    from tensorforge.codegen.targets import get_target

    t = get_target(target)
    if t.arch != "x86_64" or not t.fma:
        pytest.skip(f"the checks read x86 FMA assembly; the host is {t.arch} (AArch64: test_asm.py)")
    reg = reg or {512: "zmm", 256: "ymm"}.get(t.vector_bits, "xmm")
    m, n, k = 96, 128, 256
    b = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    model = one_node_model("MatMul", {"a": np.zeros((m, k), np.float32)}, consts={"b": b})
    plan = plan_gemm(type("C", (), {"target": t, "options": {}})(), DType.F32, m, n, k)
    loop = _inner_loop(tfg.assembly(model, target=target))
    fmas = [x for x in loop if "vfmadd" in x]
    assert len(fmas) == plan.MR * plan.nv * plan.KU, (plan, "\n".join(loop))
    assert all(re.search(rf"%{reg}\d+, %{reg}\d+$", x.strip()) for x in fmas), "FMA not on full-width registers"
    broadcasts = [x for x in loop if "vbroadcastss" in x or "{1to" in x]
    assert len(broadcasts) == plan.MR * plan.KU, "\n".join(loop)
    assert not [x for x in loop if "(%rsp)" in x or "(%rbp)" in x], "register spills in the inner loop"


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
@pytest.mark.parametrize("case", ["3x3", "1x1", "7x7_map"])
def test_conv_microkernel_has_no_spills(case, target):
    import tensorforge as tfg

    xs, ws, attrs = CONV_CASES[case]
    w = np.random.default_rng(0).standard_normal(ws).astype(np.float32)
    model = one_node_model("Conv", {"x": np.zeros(xs, np.float32)}, attrs, consts={"w": w})
    loop = _inner_loop(tfg.assembly(model, target=target))
    assert sum("vfmadd" in x for x in loop) >= 8
    assert not [x for x in loop if "(%rsp)" in x or "(%rbp)" in x], "\n".join(loop)


def test_residual_block_written_in_place(rng):
    """A bottleneck block whose last 1x1 conv adds the block input in its epilogue: the memory planner
    writes the sum into the input's buffer, so every output element must be computed and stored once
    (the last pixel tile of a 9x9 map is partial: masked loads, no overlapping tiles)."""
    from onnx import TensorProto, helper, numpy_helper

    c, mid, hw = 32, 16, 9
    ws = {n: rand(rng, s, low=-0.3, high=0.3) for n, s in
          [("w0", (c, c, 1, 1)), ("w1", (mid, c, 1, 1)), ("w2", (mid, mid, 3, 3)), ("w3", (c, mid, 1, 1)),
           ("w4", (c, c, 1, 1))]}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["a"]), helper.make_node("Relu", ["a"], ["t"]),
        helper.make_node("Conv", ["t", "w1"], ["b"]), helper.make_node("Relu", ["b"], ["rb"]),
        helper.make_node("Conv", ["rb", "w2"], ["d"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["d"], ["rd"]),
        helper.make_node("Conv", ["rd", "w3"], ["e"]), helper.make_node("Add", ["e", "t"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]), helper.make_node("Conv", ["r", "w4"], ["y"]),
    ]  # fmt: skip
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])],
                              [numpy_helper.from_array(v, k) for k, v in ws.items()])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rand(rng, (1, c, hw, hw))
    for threads in (1, 2):
        m = _compile(model, threads, None)
        assert_close(m(x), reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4, what="block")
    assert m.program.in_place >= 1


def test_mobilenet_v2_end_to_end(rng):
    """Every conv fast path in one network (strided stem, depthwise, 1x1 expand/project, residual adds,
    ReLU6 epilogues), against ONNX Runtime."""
    import onnxruntime as ort

    from tensorforge.examples import mobilenet_v2

    model = mobilenet_v2(size=32)
    x = rand(rng, (1, 3, 32, 32))
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = _compile(model, 2)(x)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


# -- pooling ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("size,k,s,p", [(112, 3, 2, 1), (17, 3, 2, 1), (56, 2, 2, 0), (20, 3, 1, 1), (33, 5, 3, 2)])
def test_pool_fast_paths(op, size, k, s, p, rng):
    """Border / interior splits on both axes, unrolled constant windows, stride-s vector loads and masked
    row tails; max pooling handles infinities and propagates NaN (as numpy and PyTorch do; the ONNX
    reference evaluator drops it)."""
    x = rand(rng, (1, 3, size, size + 1))
    if op == "MaxPool":
        x[0, 1, 0, 0] = np.inf
        x[0, 2, -1, -1] = -np.inf
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
    model = one_node_model(op, {"x": x}, attrs)
    m = _compile(model, 2)
    assert_close(m(x), reference(model, {"x": x})[0], rtol=1e-5, atol=1e-6, what=op)
    if op == "MaxPool":
        hit = np.zeros_like(x)
        hit[0, 0, size // 2, size // 3] = 1.0
        x[0, 0, size // 2, size // 3] = np.nan
        windows = reference(model, {"x": hit})[0] == 1.0  # the outputs whose window holds the NaN
        assert windows.any() and np.array_equal(np.isnan(m(x)), windows)
