"""GPU schedules checked on the grid interpreter: whole models and the GEMM / conv / row-reduction schedules
compiled for NVPTX, every block and thread run on the CPU, against the CPU build and numpy references."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tensorforge as tfg
from tensorforge.codegen.targets import get_target
from tensorforge.compiler.gpu import simulate
from tensorforge.examples import bert_encoder, mlp, resnet50, small_cnn

OPSET = 17


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _against_cpu(model, rng, rtol=1e-4, atol=1e-5, target="nvptx-sm80"):
    sim = simulate(model, target)
    xs = [rng.standard_normal(s).astype(dt.np) for _, dt, s in sim.program.inputs]
    got = sim.call(*xs)
    ref = tfg.compile(model)(*xs)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)
    return sim


def _schedules(sim) -> str:
    return sim.kernel_ir()


def test_mlp_matches_cpu(rng):
    sim = _against_cpu(mlp(4), rng)
    ir = _schedules(sim)
    assert "barrier()" in ir and "for blockIdx.x" in ir  # the tiled GEMM schedule


def test_small_cnn_matches_cpu(rng):
    _against_cpu(small_cnn(2), rng)


def test_transformer_block_matches_cpu(rng):
    sim = _against_cpu(bert_encoder(1, 16, 64, 4, 1), rng, rtol=1e-4, atol=1e-4)
    assert "shfl_bfly" in _schedules(sim)  # layer norm rows reduced by warp shuffles


@pytest.mark.slow
def test_reduced_resnet_matches_cpu(rng):
    _against_cpu(resnet50(1, 32, 10, 8, (1, 1, 1, 1)), rng, rtol=1e-4, atol=1e-4)


def test_sm90_program_matches_too(rng):
    _against_cpu(mlp(2, sizes=(50, 33, 7)), rng, target="nvptx-sm90")


@pytest.mark.parametrize(
    "M,N,K,ta,tb,batch",
    [(1, 1, 1, False, False, ()), (37, 45, 70, False, False, ()), (70, 17, 33, True, False, ()),
     (19, 66, 21, False, True, ()), (5, 9, 40, True, True, ()), (13, 30, 17, False, False, (3,)),
     (8, 24, 12, False, False, (2, 3))],
)  # fmt: skip
def test_gemm_schedule(M, N, K, ta, tb, batch, rng):
    a_shape = [*batch, *((K, M) if ta else (M, K))]
    b_shape = [*((N, K) if tb else (K, N))]
    if batch:
        b_shape = [batch[-1], *b_shape] if len(batch) > 1 else b_shape  # broadcast over the leading dims
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        out = [*batch, M, N]
        model = _model([node], [_vi("a", a_shape), _vi("b", b_shape)], [_vi("y", out)])
    else:
        node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=int(ta), transB=int(tb), alpha=0.5, beta=2.0)
        model = _model([node], [_vi("a", a_shape), _vi("b", b_shape), _vi("c", [N])], [_vi("y", [M, N])])
    sim = simulate(model)
    xs = [rng.standard_normal(s).astype(np.float32) for _, _, s in sim.program.inputs]
    (got,) = sim.call(*xs)
    a = xs[0].astype(np.float64)
    b = xs[1].astype(np.float64)
    if batch:
        ref = np.matmul(a, b)
    else:
        ref = 0.5 * ((a.T if ta else a) @ (b.T if tb else b)) + 2.0 * xs[2]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_gemm_epilogue_fused(rng):
    """Bias, ReLU and a residual add fused into the GPU GEMM's stores (one kernel)."""
    w = rng.standard_normal((24, 40)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]  # fmt: skip
    model = _model(nodes, [_vi("x", [33, 24]), _vi("r", [33, 40])], [_vi("y", [33, 40])],
                   [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])  # fmt: skip
    sim = simulate(model)
    assert len(sim.program.kernels) == 1
    x, r = rng.standard_normal((33, 24)).astype(np.float32), rng.standard_normal((33, 40)).astype(np.float32)
    np.testing.assert_allclose(sim(x, r), np.maximum(x.astype(np.float64) @ w + r, 0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "xs,ws,attrs",
    [((2, 5, 11, 9), (7, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
     ((1, 6, 10, 10), (6, 2, 3, 3), {"pads": [0, 2, 1, 0], "strides": [2, 1], "group": 3}),
     ((1, 4, 9, 12), (8, 4, 2, 3), {"dilations": [2, 1], "strides": [1, 2]})],
)  # fmt: skip
def test_conv_implicit_gemm(xs, ws, attrs, rng):
    w = (rng.standard_normal(ws) * 0.3).astype(np.float32)
    bias = rng.standard_normal(ws[0]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(ws[2:]), **attrs)
    model = _model([node], [_vi("x", list(xs))], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   [helper.make_tensor("w", TensorProto.FLOAT, ws, w.ravel()),
                    helper.make_tensor("b", TensorProto.FLOAT, [ws[0]], bias)])  # fmt: skip
    sim = simulate(model)
    assert "for blockIdx.x" in sim.kernel_ir() and "barrier()" in sim.kernel_ir()
    x = rng.standard_normal(xs).astype(np.float32)
    from onnx.reference import ReferenceEvaluator

    (ref,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(sim(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op,n", [("Softmax", 100), ("LogSoftmax", 333), ("ReduceSum", 300), ("ReduceMax", 64)])
def test_row_reduction_schedule(op, n, rng):
    """Rows of a warp or more: one block per row, warp shuffles and shared memory across the block."""
    attrs = {"axis": -1} if "Softmax" in op else {"keepdims": 1}
    ins, inits = ["x"], []
    if op == "ReduceSum":  # axes an input since opset 13; ReduceMax's an attribute until opset 18
        ins, inits = ["x", "axes"], [helper.make_tensor("axes", TensorProto.INT64, [1], [-1])]
    elif op == "ReduceMax":
        attrs["axes"] = [-1]
    node = helper.make_node(op, ins, ["y"], **attrs)
    model = _model([node], [_vi("x", [3, 5, n])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                   inits)  # fmt: skip
    sim = simulate(model)
    ir = sim.kernel_ir()
    assert "shfl_bfly" in ir and "barrier()" in ir, ir
    x = rng.standard_normal((3, 5, n)).astype(np.float32)
    from onnx.reference import ReferenceEvaluator

    (ref,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(sim(x), ref, rtol=1e-5, atol=1e-5)


def test_layer_norm_rows(rng):
    """A decomposed layer norm (a fused ``rows`` group with two reductions) on the block-per-row schedule."""
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    g, b = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    model = _model(nodes, [_vi("x", [7, 96])], [_vi("y", [7, 96])],
                   [helper.make_tensor("g", TensorProto.FLOAT, [96], g),
                    helper.make_tensor("b", TensorProto.FLOAT, [96], b)])  # fmt: skip
    sim = simulate(model)
    x = rng.standard_normal((7, 96)).astype(np.float32) * 3 + 1
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(sim(x), (x - mu) / np.sqrt(var + 1e-5) * g + b, rtol=1e-4, atol=1e-4)


def test_elementwise_grid_mapping(rng):
    """Elementwise chains become one thread per element over the whole grid (no serial loop left)."""
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["t", "x"], ["y"])]
    model = _model(nodes, [_vi("x", [3, 1000])], [_vi("y", [3, 1000])])
    sim = simulate(model)
    (k,) = sim.program.kernels
    assert "for blockIdx.x in 0..12" in str(k) and "for threadIdx.x in 0..256" in str(k)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    np.testing.assert_allclose(sim(x), np.tanh(x) * x, rtol=1e-5, atol=1e-6)


def test_simulate_checks_inputs():
    sim = simulate(mlp(2))
    with pytest.raises(tfg.InputError, match="expected"):
        sim(np.zeros((3, 784), np.float32))


def test_simulate_needs_gpu_target():
    with pytest.raises(tfg.TensorforgeError, match="GPU target"):
        simulate(mlp(1), get_target("x86_64"))


# -- tf32 tensor cores ----------------------------------------------------------------------------------------
def _tf32(x: np.ndarray) -> np.ndarray:
    b = x.astype(np.float32).view(np.uint32)
    return ((b + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)


def test_mma_fragment_layout(rng):
    """One warp's mma.m16n8k8 with fragments read in the PTX ISA's layout gives A @ B + C (A, B rounded to tf32)."""
    from tensorforge.ir.dtype import DType
    from tensorforge.lower import kir as K
    from tensorforge.lower.gpu_kir import Mma, launch
    from tensorforge.lower.kir import Buffer, Kernel, Load, Store, Var, binop
    from tensorforge.lower.program import Program
    from tensorforge.runtime.gridinterp import GridInterpreter

    A, B, C = (rng.standard_normal(s).astype(np.float32) for s in ((16, 8), (8, 8), (16, 8)))
    bufs = [Buffer(n, DType.F32, a.size) for n, a in (("A", A), ("B", B), ("C", C), ("D", C))]
    a_, b_, c_, d_ = bufs

    def per(bi, t):
        g, q = binop("floordiv", t, 4), binop("mod", t, 4)

        def at(buf, r, c, w=8):
            return binop("add", binop("mul", r, w), c)

        a = tuple(Load(a_, at(a_, r, c)) for r, c in ((g, q), (g + 8, q), (g, q + 4), (g + 8, q + 4)))
        b = tuple(Load(b_, at(b_, r, g)) for r in (q, q + 4))
        pos = ((g, q * 2), (g, q * 2 + 1), (g + 8, q * 2), (g + 8, q * 2 + 1))
        c = tuple(Load(c_, at(c_, r, cc)) for r, cc in pos)
        d = tuple(Var(f"d{i}", DType.F32) for i in range(4))
        return K.seq(*[K.Decl(v, K.const(0, DType.F32)) for v in d], Mma(d, a, b, c),
                     *[Store(d_, at(d_, r, cc), v) for (r, cc), v in zip(pos, d)])  # fmt: skip

    k = Kernel("mma", bufs, launch(1, 32, per))
    p = Program("p", get_target("nvptx-sm80"), [k], [[("in", i) for i in range(4)]], [], 0, 0,
                [(b.name, b.dtype, (b.numel,)) for b in bufs], [])  # fmt: skip
    D = np.zeros((16, 8), np.float32)
    GridInterpreter(p).run([A, B, C, D])
    np.testing.assert_allclose(D, _tf32(A) @ _tf32(B) + C, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("M,N,K", [(37, 45, 70), (64, 128, 32), (5, 9, 3)])
def test_tf32_gemm_schedule(M, N, K, rng):
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([node], [_vi("a", [M, K]), _vi("b", [K, N])], [_vi("y", [M, N])])
    sim = simulate(model, precision="tf32")
    assert "<mma.m16n8k8.tf32>" in sim.kernel_ir()
    a, b = rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32)
    got = sim(a, b)
    np.testing.assert_allclose(got, _tf32(a) @ _tf32(b), rtol=1e-4, atol=1e-4)  # exact up to fp32 accumulation
    assert np.abs(got - a.astype(np.float64) @ b).max() < 2e-3 * np.sqrt(K) * 4


def test_tf32_cnn_matches_cpu_within_tf32(rng):
    sim = simulate(small_cnn(2), precision="tf32")
    x = rng.standard_normal(sim.program.inputs[0][2]).astype(np.float32)
    np.testing.assert_allclose(sim(x), tfg.compile(small_cnn(2))(x), rtol=2e-2, atol=2e-3)


def test_precision_checked():
    with pytest.raises(tfg.TensorforgeError, match="precision"):
        simulate(mlp(1), precision="fp8")
