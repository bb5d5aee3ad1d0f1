"""Tensor cores in fp16 and bf16 (``mma.sync.aligned.m16n8k16``, float32 accumulation) on the grid interpreter
and through ptxas: the fragment layout of the PTX ISA, the GEMM / implicit-GEMM conv schedules against numpy
on operands rounded to float16 / bfloat16, whole models against the CPU build within half-precision
tolerances, and the ``precision`` option (one definition for CPU and GPU targets)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

import tensorforge as tfg
from tensorforge.codegen import ptx
from tensorforge.codegen.targets import get_target
from tensorforge.compiler.gpu import nvptx_target, simulate
from tensorforge.compiler.pipeline import Build, Options
from tensorforge.examples import bert_encoder, mlp, small_cnn
from tensorforge.ir.dtype import DType
from tensorforge.lower import kir as K
from tensorforge.lower.gpu_kir import Mma, launch
from tensorforge.lower.kir import Buffer, Kernel, Load, Store, Var, binop
from tensorforge.lower.program import Program
from tensorforge.runtime.gridinterp import GridInterpreter

OPSET = 17
KINDS = {"fp16": "f16", "bf16": "bf16"}
needs_ptxas = pytest.mark.skipif(ptx.find_ptxas() is None, reason="ptxas not installed")


def _rounded(x: np.ndarray, precision: str) -> np.ndarray:
    """float32 rounded to float16 / bfloat16 (to nearest even), as float64: torch's conversions."""
    dt = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.from_numpy(np.array(x, np.float32)).to(dt).to(torch.float64).numpy()


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_m16n8k16_fragment_layout(precision, rng):
    """One warp, one instruction, fragments loaded as the PTX ISA lays them out for .f16/.bf16 m16n8k16 (written
    out here, not taken from the compiler): D = A @ B + C with A, B rounded."""
    A, B, C = (rng.standard_normal(s).astype(np.float32) for s in ((16, 16), (16, 8), (16, 8)))
    bufs = [Buffer(n, DType.F32, a.size) for n, a in (("A", A), ("B", B), ("C", C), ("D", C))]
    a_, b_, c_, d_ = bufs

    def per(bi, t):
        g, q = binop("floordiv", t, 4), binop("mod", t, 4)

        def at(r, c, w):
            return binop("add", binop("mul", r, w), c)

        two_q = binop("mul", q, 2)
        # a0,a1: (g, 2q..2q+1); a2,a3: (g+8, 2q..); a4,a5: (g, 2q+8..); a6,a7: (g+8, 2q+8..)
        a_pos = [(g, two_q), (g, two_q + 1), (g + 8, two_q), (g + 8, two_q + 1),
                 (g, two_q + 8), (g, two_q + 9), (g + 8, two_q + 8), (g + 8, two_q + 9)]  # fmt: skip
        a = tuple(Load(a_, at(r, c, 16)) for r, c in a_pos)
        # b0,b1: (2q..2q+1, g); b2,b3: (2q+8.., g)
        b = tuple(Load(b_, at(r, g, 8)) for r in (two_q, two_q + 1, two_q + 8, two_q + 9))
        pos = ((g, two_q), (g, two_q + 1), (g + 8, two_q), (g + 8, two_q + 1))
        c = tuple(Load(c_, at(r, cc, 8)) for r, cc in pos)
        d = tuple(Var(f"d{i}", DType.F32) for i in range(4))
        return K.seq(*[K.Decl(v, K.const(0, DType.F32)) for v in d], Mma(d, a, b, c, KINDS[precision]),
                     *[Store(d_, at(r, cc, 8), v) for (r, cc), v in zip(pos, d)])  # fmt: skip

    k = Kernel("mma", bufs, launch(1, 32, per))
    p = Program("p", get_target("nvptx-sm80"), [k], [[("in", i) for i in range(4)]], [], 0, 0,
                [(b.name, b.dtype, (b.numel,)) for b in bufs], [])  # fmt: skip
    D = np.zeros((16, 8), np.float32)
    GridInterpreter(p).run([A, B, C, D])
    ref = _rounded(A, precision) @ _rounded(B, precision) + C
    np.testing.assert_allclose(D, ref, rtol=1e-5, atol=1e-5)
    # the rounding is real: float32 operands would give a visibly different product
    assert np.abs(A.astype(np.float64) @ B + C - D).max() > 1e-4


def test_mma_kinds_checked():
    v = tuple(K.const(0.0, DType.F32) for _ in range(4))
    d = tuple(Var(f"d{i}", DType.F32) for i in range(4))
    with pytest.raises(ValueError, match="bf16 mma fragments"):
        Mma(d, v, v[:2], v, "bf16")  # k16 takes 8 A and 4 B values per lane
    with pytest.raises(ValueError, match="no mma of kind"):
        Mma(d, v, v[:2], v, "fp8")


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("M,N,K,ta,tb,batch", [(37, 45, 70, 0, 0, ()), (64, 128, 32, 1, 0, ()),
                                                (5, 9, 3, 0, 1, ()), (20, 24, 40, 0, 0, (2,))])  # fmt: skip
def test_gemm_schedule(precision, M, N, K, ta, tb, batch, rng):
    a_shape = [*batch, K, M] if ta else [*batch, M, K]
    b_shape = [*batch, N, K] if tb else [*batch, K, N]
    if batch:
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        model = _model([node], [_vi("a", a_shape), _vi("b", b_shape)], [_vi("y", [*batch, M, N])])
    else:
        node = helper.make_node("Gemm", ["a", "b"], ["y"], transA=ta, transB=tb)
        model = _model([node], [_vi("a", a_shape), _vi("b", b_shape)], [_vi("y", [M, N])])
    sim = simulate(model, precision=precision)
    assert f"<mma.m16n8k16.{KINDS[precision]}>" in sim.kernel_ir()
    a, b = rng.standard_normal(a_shape).astype(np.float32), rng.standard_normal(b_shape).astype(np.float32)
    got = sim(a, b)
    ar, br = _rounded(a, precision), _rounded(b, precision)
    ar = np.swapaxes(ar, -1, -2) if ta else ar
    br = np.swapaxes(br, -1, -2) if tb else br
    np.testing.assert_allclose(got, ar @ br, rtol=1e-4, atol=1e-4)  # exact products, float32 accumulation
    exact = (np.swapaxes(a, -1, -2) if ta else a).astype(np.float64) @ (np.swapaxes(b, -1, -2) if tb else b)
    tol = (5e-3 if precision == "fp16" else 4e-2) * np.sqrt(K)
    assert np.abs(got - exact).max() < tol


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_conv_implicit_gemm(precision, rng):
    x = rng.standard_normal((2, 6, 9, 11)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(bias, "bias")]
    node = helper.make_node("Conv", ["x", "w", "bias"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1], group=2)
    model = _model([node], [_vi("x", list(x.shape))], [_vi("y", [2, 8, 5, 11])], inits)
    sim = simulate(model, precision=precision)
    assert f"<mma.m16n8k16.{KINDS[precision]}>" in sim.kernel_ir()
    got = sim(x)
    ref = torch.nn.functional.conv2d(torch.from_numpy(_rounded(x, precision)), torch.from_numpy(_rounded(w, precision)),
                                     torch.from_numpy(bias.astype(np.float64)), (2, 1), 1, 1, 2).numpy()  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def _against_cpu(model, precision, rng, rtol, atol):
    sim = simulate(model, precision=precision)
    xs = [rng.standard_normal(s).astype(dt.np) for _, dt, s in sim.program.inputs]
    got = sim.call(*xs)
    ref = tfg.compile(model)(*xs)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    for g, r in zip(got, ref):
        scale = float(np.abs(r).max()) or 1.0
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale)
    return sim


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mlp_within_half_precision(precision, rng):
    tol = 1e-2 if precision == "fp16" else 5e-2
    sim = _against_cpu(mlp(4), precision, rng, tol, tol)
    assert f"<mma.m16n8k16.{KINDS[precision]}>" in sim.kernel_ir()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_small_cnn_within_half_precision(precision, rng):
    tol = 1e-2 if precision == "fp16" else 5e-2
    _against_cpu(small_cnn(2), precision, rng, tol, tol)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_transformer_block_within_half_precision(precision, rng):
    tol = 2e-2 if precision == "fp16" else 8e-2
    sim = _against_cpu(bert_encoder(1, 16, 64, 4, 1), precision, rng, tol, tol)
    assert f"<mma.m16n8k16.{KINDS[precision]}>" in sim.kernel_ir()


def test_precision_option_is_one_definition():
    g = mlp(1)
    with pytest.raises(tfg.TensorforgeError, match="GPU precision must be one of"):
        simulate(g, precision="fp8")
    with pytest.raises(tfg.TensorforgeError, match="sm_80 or newer"):
        simulate(g, nvptx_target("sm_75"), precision="bf16")
    with pytest.raises(tfg.TensorforgeError, match="fp16 is a GPU precision"):
        tfg.compile(g, precision="fp16")  # CPU targets: fp32 or bf16 only
    b = Build(g, get_target("nvptx-sm80"), Options(lowering={"precision": "fp16"})).run("llvm")
    assert any("precision fp16 (tensor cores mma.sync.m16n8k16.f16" in n for n in b.notes)


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_tensor_core_kernels_assemble(arch, precision):
    target = get_target("nvptx-" + arch.replace("_", ""))
    for model in (small_cnn(2), bert_encoder(1, 16, 64, 4, 1)):
        b = Build(model, target, Options(lowering={"precision": precision})).run("llvm")
        text = b.artifact().assembly()
        ptx.ptxas_check(text, arch)
        t = "f16" if precision == "fp16" else "bf16"
        assert f"mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32" in text


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("tensorforge.runtime.cuda").runtime.cuda.available(), reason="no NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_tensor_cores_on_gpu(precision, rng):
    """The m16n8k16 fragment layout and conversions as the hardware has them."""
    from tensorforge.compiler.gpu import compile_cuda

    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([node], [_vi("a", [70, 45]), _vi("b", [45, 99])], [_vi("y", [70, 99])])
    m = compile_cuda(model, precision=precision)
    a, b = rng.standard_normal((70, 45)).astype(np.float32), rng.standard_normal((45, 99)).astype(np.float32)
    np.testing.assert_allclose(m(a, b), _rounded(a, precision) @ _rounded(b, precision), rtol=1e-4, atol=1e-4)
    t = "f16" if precision == "fp16" else "bf16"
    assert f"mma.sync.aligned.m16n8k16.row.col.f32.{t}.{t}.f32" in m.assembly()


def test_compile_cuda_precision_reaches_the_kernels(monkeypatch, rng):
    """``tfg.compile(model, target="cuda", precision=...)`` on a fake driver (kernels run on the grid
    interpreter): the option reaches the GPU lowering."""
    from tensorforge.runtime import cuda
    from test_gpu_cuda import FakeDriver

    fake = FakeDriver(type("P", (), {"kernels": []})())
    monkeypatch.setattr(cuda, "_DRIVER", fake)
    init = cuda.CudaModel.__init__

    def register(self, art, ordinal=0):
        fake.kernels.update({k.name: k for k in art.program.kernels})
        init(self, art, ordinal)

    monkeypatch.setattr(cuda.CudaModel, "__init__", register)
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    model = _model([node], [_vi("a", [20, 33])], [_vi("y", [20, 12])],
                   [onnx.numpy_helper.from_array(rng.standard_normal((33, 12)).astype(np.float32), "b")])  # fmt: skip
    b = onnx.numpy_helper.to_array(model.graph.initializer[0])
    a = rng.standard_normal((20, 33)).astype(np.float32)
    for precision in ("fp16", "bf16"):
        m = tfg.compile(model, target="cuda", precision=precision)
        assert "m16n8k16" in m.assembly()
        np.testing.assert_allclose(m(a), _rounded(a, precision) @ _rounded(b, precision), rtol=1e-4, atol=1e-4)
    with pytest.raises(tfg.TensorforgeError, match="GPU precision must be one of"):
        tfg.compile(model, target="cuda", precision="int4")


def test_operand_pairs_load_as_one_word():
    """The PTX of an f16/bf16 mma reads an operand pair with one 32-bit shared load only when the two values are
    provably the halves of one aligned word (same shared tile, indices i and i + 1, i even)."""
    from tensorforge.codegen.ptx import _word_pair
    from tensorforge.lower.gpu_kir import SharedBuffer

    sh, other = SharedBuffer("As", DType.F16, 256), SharedBuffer("Bs", DType.F16, 256)
    q, r = Var("q"), Var("r")
    base = binop("add", binop("mul", r, 16), binop("mul", q, 2))
    assert _word_pair(Load(sh, base), Load(sh, binop("add", base, 1)))
    assert _word_pair(Load(sh, binop("add", base, 8)), Load(sh, binop("add", base, 9)))
    assert not _word_pair(Load(sh, binop("add", base, 1)), Load(sh, binop("add", base, 2)))  # odd: straddles words
    assert not _word_pair(Load(sh, base), Load(sh, binop("add", base, 2)))  # not adjacent
    assert not _word_pair(Load(sh, base), Load(other, binop("add", base, 1)))  # another tile
    assert not _word_pair(Load(sh, q), Load(sh, binop("add", q, 1)))  # q may be odd
    f32 = SharedBuffer("Cs", DType.F32, 256)
    assert not _word_pair(Load(f32, base), Load(f32, binop("add", base, 1)))
