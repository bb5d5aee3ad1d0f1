"""Operator fusion: which nodes become one kernel (graph text before -> after), and that the fused
kernels compute what the unfused graph does (compiled, against the reference interpreter)."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from pass_helpers import check_pass, random_feeds
from tensorforge.ir.interp import run_graph
from tensorforge.ir.parser import parse_graph
from tensorforge.lower.kir import binop
from tensorforge.lower.rules import KERNEL_RULES, FusionCaps, kernel_caps, kernel_rule
from tensorforge.lower.schedule import pointwise_nest
from tensorforge.ops import registry
from tensorforge.ops.reduce import REDUCERS


def test_elementwise_chain_is_one_loop():
    check_pass(["dce", "fuse"], """
    graph g(%x: f32[8,32], %b: f32[32]) -> (%y: f32[8,32]) {
      %e: f32[8,32] = Exp(%x)
      %a: f32[8,32] = Add(%e, %b)
      %y: f32[8,32] = Relu(%a)
    }""", """
    graph g(%x: f32[8,32], %b: f32[32]) -> (%y: f32[8,32]) {
      %y: f32[8,32] = Fused(%x, %b) {kind='loop'} {  # e+a+y
        %e: f32[8,32] = Exp(%x)
        %a: f32[8,32] = Add(%e, %b)
        %y: f32[8,32] = Relu(%a)
      }
    }""")  # fmt: skip


def test_epilogues_fuse_into_conv_and_gemm():
    _, pm = check_pass(["dce", "fuse"], """
    graph g(%x: f32[1,3,8,8], %r: f32[5,8], %a: f32[5,16]) -> (%y: f32[1,6,8,8], %z: f32[5,8]) {
      %c: f32[1,6,8,8] = Conv(%x, %w: const f32[6,3,3,3], %cb: const f32[6]) {pads=[1,1,1,1]}
      %s: f32[1,6,8,8] = Mul(%c, %k: const f32[6,1,1])
      %y: f32[1,6,8,8] = Relu(%s)
      %m: f32[5,8] = Gemm(%a, %B: const f32[16,8])
      %h: f32[5,8] = Add(%m, %r)
      %z: f32[5,8] = Sigmoid(%h)
    }""", """
    graph g(%x: f32[1,3,8,8], %r: f32[5,8], %a: f32[5,16]) -> (%y: f32[1,6,8,8], %z: f32[5,8]) {
      %y: f32[1,6,8,8] = Fused(%x) {kind='kernel'} {  # c+s+y
        %c: f32[1,6,8,8] = Conv(%x, %w: const f32[6,3,3,3], %cb: const f32[6]) {pads=[1,1,1,1]}
        %s: f32[1,6,8,8] = Mul(%c, %k: const f32[6,1,1])
        %y: f32[1,6,8,8] = Relu(%s)
      }
      %z: f32[5,8] = Fused(%a, %r) {kind='kernel'} {  # m+h+z
        %m: f32[5,8] = Gemm(%a, %B: const f32[16,8])
        %h: f32[5,8] = Add(%m, %r)
        %z: f32[5,8] = Sigmoid(%h)
      }
    }""")  # fmt: skip
    assert str(pm.log[-1].stats["kernels"]) == "6 -> 2"


def test_residual_add_after_conv_joins_its_epilogue():
    """A conv stores its tile as contiguous pixel runs per channel, so its epilogue reads a full-size
    residual in streaming order: the add and the activation after it join the conv's kernel."""
    check_pass(["dce", "fuse"], """
    graph g(%x: f32[1,3,8,8], %r: f32[1,6,8,8]) -> (%y: f32[1,6,8,8]) {
      %c: f32[1,6,8,8] = Conv(%x, %w: const f32[6,3,3,3], %cb: const f32[6]) {pads=[1,1,1,1]}
      %s: f32[1,6,8,8] = Add(%c, %r)
      %y: f32[1,6,8,8] = Relu(%s)
    }""", """
    graph g(%x: f32[1,3,8,8], %r: f32[1,6,8,8]) -> (%y: f32[1,6,8,8]) {
      %y: f32[1,6,8,8] = Fused(%x, %r) {kind='kernel'} {  # c+s+y
        %c: f32[1,6,8,8] = Conv(%x, %w: const f32[6,3,3,3], %cb: const f32[6]) {pads=[1,1,1,1]}
        %s: f32[1,6,8,8] = Add(%c, %r)
        %y: f32[1,6,8,8] = Relu(%s)
      }
    }""")  # fmt: skip


LAYER_NORM = """
graph g(%x: f32[4,7,40], %gamma: f32[40]) -> (%y: f32[4,7,40]) {
  %mu: f32[4,7,1] = ReduceMean(%x, %ax=const i64[1] [-1])
  %d: f32[4,7,40] = Sub(%x, %mu)
  %q: f32[4,7,40] = Mul(%d, %d)
  %var: f32[4,7,1] = ReduceMean(%q, %ax)
  %ve: f32[4,7,1] = Add(%var, %eps=const f32[] [1e-05])
  %sd: f32[4,7,1] = Sqrt(%ve)
  %n: f32[4,7,40] = Div(%d, %sd)
  %y: f32[4,7,40] = Mul(%n, %gamma)
}"""


def test_layer_norm_is_one_row_kernel():
    body = "\n".join("    " + line for line in LAYER_NORM.strip().splitlines()[1:-1])
    check_pass(["dce", "fuse"], LAYER_NORM, f"""
    graph g(%x: f32[4,7,40], %gamma: f32[40]) -> (%y: f32[4,7,40]) {{
      %y: f32[4,7,40] = Fused(%x, %gamma) {{kind='rows'}} {{  # mu+d+...+y
    {body}
      }}
    }}""")  # fmt: skip


def test_softmax_takes_its_prologue_and_epilogue():
    check_pass(["dce", "fuse"], """
    graph g(%x: f32[4,64]) -> (%y: f32[4,64]) {
      %s: f32[4,64] = Div(%x, %c=const f32[] [8.0])
      %p: f32[4,64] = Softmax(%s) {axis=-1}
      %y: f32[4,64] = Mul(%p, %two=const f32[] [2.0])
    }""", """
    graph g(%x: f32[4,64]) -> (%y: f32[4,64]) {
      %y: f32[4,64] = Fused(%x) {kind='kernel'} {  # s+p+y
        %s: f32[4,64] = Div(%x, %c=const f32[] [8.0])
        %p: f32[4,64] = Softmax(%s) {axis=-1}
        %y: f32[4,64] = Mul(%p, %two=const f32[] [2.0])
      }
    }""")  # fmt: skip


def test_what_is_not_fused():
    """Views stay views; a value needed elsewhere ends its group; a broadcast value is not recomputed
    per element of a larger output; a GEMM result used twice is stored."""
    text = """
    graph g(%x: f32[6,16], %v: f32[6,1], %w: f32[6,16]) -> (%y: f32[2,3,16], %z: f32[6,16], %u: f32[6,16]) {
      %m: f32[6,16] = MatMul(%x, %W: const f32[16,16])
      %y: f32[2,3,16] = Reshape(%m, %s=const i64[3] [2, 3, 16])
      %e: f32[6,1] = Exp(%v)
      %z: f32[6,16] = Add(%e, %w)
      %u: f32[6,16] = Relu(%m)
    }"""
    check_pass(["dce", "fuse"], text, text)


def test_fusion_never_makes_a_cycle():
    """t = x@W; r = rowmean(t); y = t - r: joining the subtraction to the GEMM would need the row mean
    (computed from the GEMM's result) inside the GEMM kernel. It joins the reduction's row kernel."""
    check_pass(["dce", "fuse"], """
    graph g(%x: f32[6,16]) -> (%y: f32[6,16]) {
      %t: f32[6,16] = MatMul(%x, %W: const f32[16,16])
      %r: f32[6,1] = ReduceMean(%t, %ax=const i64[1] [-1])
      %y: f32[6,16] = Sub(%t, %r)
    }""", """
    graph g(%x: f32[6,16]) -> (%y: f32[6,16]) {
      %t: f32[6,16] = MatMul(%x, %W: const f32[16,16])
      %y: f32[6,16] = Fused(%t) {kind='rows'} {  # r+y
        %r: f32[6,1] = ReduceMean(%t, %ax=const i64[1] [-1])
        %y: f32[6,16] = Sub(%t, %r)
      }
    }""")  # fmt: skip


# -- the fused kernels compute the same values ---------------------------------------------------------
CASES = {
    "layer_norm": LAYER_NORM,
    "softmax_decomposed_two_axes": """
    graph g(%x: f32[3,2,5,9]) -> (%y: f32[3,2,5,9], %m: f32[3,2,1,1]) {
      %m: f32[3,2,1,1] = ReduceMax(%x, %ax=const i64[2] [2, 3])
      %d: f32[3,2,5,9] = Sub(%x, %m)
      %e: f32[3,2,5,9] = Exp(%d)
      %s: f32[3,2,1,1] = ReduceSum(%e, %ax)
      %y: f32[3,2,5,9] = Div(%e, %s)
    }""",
    "loop_multi_output_and_transpose": """
    graph g(%x: f32[5,33], %b: f32[33]) -> (%y: f32[33,5], %z: f32[33,5]) {
      %a: f32[5,33] = Add(%x, %b)
      %t: f32[33,5] = Transpose(%a) {perm=[1,0]}
      %y: f32[33,5] = Tanh(%t)
      %z: f32[33,5] = Neg(%t)
    }""",
    "conv_epilogue_residual": """
    graph g(%x: f32[2,5,9,11], %r: f32[2,7,9,11]) -> (%y: f32[2,7,9,11]) {
      %c: f32[2,7,9,11] = Conv(%x, %w: const f32[7,5,3,3], %cb: const f32[7]) {pads=[1,1,1,1]}
      %s: f32[2,7,9,11] = Add(%r, %c)
      %y: f32[2,7,9,11] = LeakyRelu(%s) {alpha=0.1}
    }""",
    "batched_matmul_epilogue": """
    graph g(%a: f32[3,17,20], %b: f32[3,20,19]) -> (%y: f32[3,17,19]) {
      %m: f32[3,17,19] = MatMul(%a, %b)
      %s: f32[3,17,19] = Mul(%m, %c=const f32[] [0.125])
      %y: f32[3,17,19] = Softmax(%s) {axis=-1}
    }""",
    "reduce_prologue_epilogue": """
    graph g(%x: f32[6,10,12]) -> (%y: f32[6,1,12]) {
      %q: f32[6,10,12] = Mul(%x, %x)
      %s: f32[6,1,12] = ReduceSum(%q, %ax=const i64[1] [1])
      %y: f32[6,1,12] = Sqrt(%s)
    }""",
    "pool_epilogue": """
    graph g(%x: f32[1,4,10,10]) -> (%y: f32[1,4,5,5]) {
      %p: f32[1,4,5,5] = MaxPool(%x) {kernel_shape=[2,2], strides=[2,2]}
      %y: f32[1,4,5,5] = Sigmoid(%p)
    }""",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_kernels_match_the_interpreter(name):
    g = parse_graph(CASES[name])
    feeds = random_feeds(g, seed=len(name))
    want = run_graph(g, feeds)
    m = tfg.compile(g, opt_level=2, verify=True)
    assert any(n.op == "Fused" for n in m.graph.nodes), m.graph
    assert len(m.program.kernels) < len(tfg.compile(g, opt_level=0).program.kernels)
    for w, got in zip(want, m.run(feeds).values()):
        np.testing.assert_allclose(got, w, rtol=2e-5, atol=2e-5)


def test_row_kernel_reads_rows_with_unit_stride():
    m = tfg.compile(parse_graph(LAYER_NORM), opt_level=2)
    (k,) = [k for k in m.program.kernels if k.name.startswith("k0_rows")]
    text = str(k)
    assert text.count("vector(") == 3  # two reduction passes and the output pass, vectorized
    assert "((row * 40) + r)" in text


def test_report_shows_kernel_counts_before_and_after_fusion():
    from tensorforge.examples import bert_encoder

    m = tfg.compile(bert_encoder(seq=8, hidden=32, heads=2, layers=1))
    rep = m.report()
    assert "(before fusion: 41)" in rep and f"kernels: {len(m.program.kernels)} " in rep
    assert "kernels 41 -> 11" in rep
    assert len(m.program.kernels) <= 12


# -- fusion capabilities, declared with the kernel rules ----------------------------------------------
EPILOGUE = {"Gemm", "MatMul", "Conv", "MaxPool", "AveragePool", "Concat", "Softmax", "LogSoftmax", "GlobalAveragePool",
            "GlobalMaxPool", "MatMulInteger", "ConvInteger", *REDUCERS}  # fmt: skip
PROLOGUE = {"Concat", "Softmax", "LogSoftmax", "GlobalAveragePool", "GlobalMaxPool", *REDUCERS}
EPILOGUE_READS_TENSORS = {"Gemm", "MatMul", "Conv", "Concat", "Softmax", "LogSoftmax", "MatMulInteger", "ConvInteger",
                          *REDUCERS}  # fmt: skip
EPILOGUE_CASTS = {"MatMulInteger", "ConvInteger"}  # int32 accumulators rescaled and requantized in the epilogue


def test_kernel_ops_declare_what_fuses_into_them():
    """Every kernel op's flags, as the fusion pass sees them (``kernel_caps``); a kernel op not listed
    here takes nothing. A rule that gains or loses a flag changes what fuses: update this table with it."""
    assert EPILOGUE <= set(KERNEL_RULES)
    want = {op: FusionCaps(op in EPILOGUE, op in PROLOGUE, op in EPILOGUE_READS_TENSORS, op in EPILOGUE_CASTS)
            for op in KERNEL_RULES}  # fmt: skip
    assert {op: kernel_caps(op) for op in KERNEL_RULES} == want
    assert kernel_caps("Relu") is None and kernel_caps("Reshape") is None  # index and view rules


def test_kernel_rule_flags_need_an_epilogue():
    """Kernel groups form around ops that take an epilogue; the other flags alone would never be used."""
    with pytest.raises(ValueError, match="epilogue=True"):
        kernel_rule("NoSuchOp", prologue=True)
    with pytest.raises(ValueError, match="epilogue=True"):
        kernel_rule("NoSuchOp", epilogue_reads_tensors=True)
    assert "NoSuchOp" not in KERNEL_RULES


@pytest.fixture(params=[True, False], ids=["epilogue", "no_epilogue"])
def twice(request):
    """A kernel op known only to this test, ``y = x + x``, written through its Sink; registered with or
    without ``epilogue=True``, and removed again afterwards."""
    name = "TestTwice"
    registry.register(registry.OpDef(name, registry.Pattern.OPAQUE, lambda ctx: [ctx.type(0)], lambda a, x: (x + x,)))

    @kernel_rule(name, epilogue=request.param)
    def _twice(ctx, node, ins, outs):
        (x,), (sink,) = ins, outs
        return pointwise_nest(sink.shape, lambda idx: sink.store(idx, binop("add", x(idx), x(idx))),
                              ctx.lanes(sink.dtype), ctx.parallel_threshold)  # fmt: skip

    try:
        yield request.param
    finally:
        del KERNEL_RULES[name]
        del registry._REGISTRY[name]  # the registry has no unregister: ops are never removed outside tests


TWICE = """
graph g(%x: f32[4,33]) -> (%y: f32[4,33]) {
  %t: f32[4,33] = TestTwice(%x)
  %y: f32[4,33] = Relu(%t)
}"""


def test_a_new_kernel_op_fuses_as_its_rule_declares(twice):
    """The flag on ``kernel_rule`` is all it takes: the pass then groups an elementwise consumer into the
    new op's kernel, and the lowering applies it through the op's Sink."""
    fused = """
    graph g(%x: f32[4,33]) -> (%y: f32[4,33]) {
      %y: f32[4,33] = Fused(%x) {kind='kernel'} {  # t+y
        %t: f32[4,33] = TestTwice(%x)
        %y: f32[4,33] = Relu(%t)
      }
    }"""
    check_pass(["dce", "fuse"], TWICE, fused if twice else TWICE)
    g = parse_graph(TWICE)
    feeds = random_feeds(g)
    m = tfg.compile(g, opt_level=2, verify=True)
    assert len(m.program.kernels) == (1 if twice else 2)
    np.testing.assert_allclose(m.run(feeds)["y"], run_graph(g, feeds)[0])
