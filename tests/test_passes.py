"""Graph passes, each shown at work on a small graph: before -> expected, as text (see pass_helpers)."""

from __future__ import annotations

import numpy as np
import pytest

from pass_helpers import check_pass, run_passes
from tensorforge.errors import TensorforgeError
from tensorforge.ir.parser import ParseError, parse_graph
from tensorforge.passes import PIPELINES, pipeline_for


# -- the text form ---------------------------------------------------------------------------------
def test_text_round_trip_of_imported_models():
    from tensorforge.examples import bert_encoder, resnet50
    from tensorforge.frontends.onnx import import_onnx
    from tensorforge.ir.interp import run_graph

    models = [resnet50(size=32, width=8, blocks=(1, 1, 1, 1), classes=10), bert_encoder(seq=8, hidden=32, heads=2)]
    for model in models:
        g = import_onnx(model)
        text = str(g)
        g2 = parse_graph(text, {v.name: v.const for v in g.constants()})
        assert str(g2) == text
        x = np.random.default_rng(0).standard_normal([int(d) for d in g.inputs[0].shape]).astype(np.float32)
        np.testing.assert_array_equal(run_graph(g, [x])[0], run_graph(g2, [x])[0])


@pytest.mark.parametrize("text, msg", [
    ("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%z)\n}", "%z is used before it is defined"),
    ("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%x)\n  %y: f32[2] = Relu(%x)\n}", "defined twice"),
    ("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: q7[2] = Relu(%x)\n}", "unknown dtype 'q7'"),
    ("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Add(%x, %c: const i64[2])\n}", "has no data"),
    ("graph g(%x: f32[2]) -> (%w: f32[2]) {\n  %y: f32[2] = Relu(%x)\n}", "%w is never defined"),
])  # fmt: skip
def test_parse_errors_name_the_problem(text, msg):
    with pytest.raises(ParseError, match=msg):
        parse_graph(text)


# -- dce / cse -------------------------------------------------------------------------------------
def test_dce_removes_unused_nodes():
    check_pass("dce", """
    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %dead: f32[4,8] = Exp(%x)
      %dead2: f32[4,8] = Neg(%dead)
      %y: f32[4,8] = Relu(%x)
    }""", """
    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %y: f32[4,8] = Relu(%x)
    }""")  # fmt: skip


def test_cse_merges_identical_nodes_and_constants():
    check_pass(["cse", "dce"], """
    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %a: f32[4,8] = Mul(%x, %c1=const f32[] [2.0])
      %b: f32[4,8] = Mul(%x, %c2=const f32[] [2.0])
      %l1: f32[4,8] = LeakyRelu(%a) {alpha=0.1}
      %l2: f32[4,8] = LeakyRelu(%b) {alpha=0.2}
      %s: f32[4,8] = Add(%l1, %l2)
      %y: f32[4,8] = Add(%s, %b)
    }""", """
    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %a: f32[4,8] = Mul(%x, %c1=const f32[] [2.0])
      %l1: f32[4,8] = LeakyRelu(%a) {alpha=0.1}
      %l2: f32[4,8] = LeakyRelu(%a) {alpha=0.2}
      %s: f32[4,8] = Add(%l1, %l2)
      %y: f32[4,8] = Add(%s, %a)
    }""")  # fmt: skip


# -- constant folding ------------------------------------------------------------------------------
def test_fold_evaluates_constant_subgraphs_and_shapes():
    check_pass(["fold", "dce"], """
    graph g(%x: f32[2,6]) -> (%y: f32[2,6]) {
      %s: i64[2] = Shape(%x)
      %n: i64[] = ReduceProd(%s) {keepdims=0}
      %nf: f32[] = Cast(%n) {to=1}
      %m: f32[2,6] = Div(%x, %nf)
      %w2: f32[6] = Mul(%w: const f32[6], %two=const f32[] [2.0])
      %w3: f32[6] = Exp(%w2)
      %y: f32[2,6] = Add(%m, %w3)
    }""", """
    graph g(%x: f32[2,6]) -> (%y: f32[2,6]) {
      %m: f32[2,6] = Div(%x, %nf=const f32[] [12.0])
      %y: f32[2,6] = Add(%m, %w3: const f32[6])
    }""")  # fmt: skip


def test_fold_keeps_broadcasts_that_would_blow_up():
    text = """
    graph g(%x: f32[512,512]) -> (%y: f32[512,512]) {
      %e: f32[512,512] = Expand(%one=const f32[] [1.0], %shape=const i64[2] [512, 512])
      %y: f32[512,512] = Add(%x, %e)
    }"""
    check_pass("fold", text, text)


# -- algebraic simplification ----------------------------------------------------------------------
def test_simplify_identities():
    check_pass("simplify", """
    graph g(%x: f32[4,8]) -> (%y: f32[4,8]) {
      %a: f32[4,8] = Mul(%x, %one=const f32[] [1.0])
      %b: f32[4,8] = Add(%zero=const f32[] [0.0], %a)
      %c: f32[4,8] = Sub(%b, %zero2=const f32[8] [0.0, 0.0, 0.0, 0.0, ...])
      %d: f32[4,8] = Div(%c, %one)
      %e: f32[4,8] = Identity(%d)
      %f: f32[4,8] = Neg(%e)
      %y: f32[4,8] = Neg(%f)
    }""", """
    graph g(%x: f32[4,8]) -> (y=%x: f32[4,8]) {
    }""", consts={"zero2": np.zeros(8, np.float32)})  # fmt: skip


def test_simplify_keeps_identities_that_change_the_shape():
    text = """
    graph g(%x: f32[8]) -> (%y: f32[4,8], %z: f32[8]) {
      %y: f32[4,8] = Add(%x, %zero: const f32[4,8])
      %z: f32[8] = Sub(%zero1=const f32[] [0.0], %x)
    }"""
    check_pass("simplify", text, text, consts={"zero": np.zeros((4, 8), np.float32)})


def test_simplify_transpose_and_reshape_chains():
    check_pass("simplify", """
    graph g(%x: f32[2,3,4]) -> (%y: f32[4,2,3], %z: f32[2,3,4], %w: f32[6,4]) {
      %t1: f32[3,4,2] = Transpose(%x) {perm=[1,2,0]}
      %t2: f32[4,2,3] = Transpose(%t1) {perm=[1,2,0]}
      %y: f32[4,2,3] = Transpose(%t2) {perm=[0,1,2]}
      %t3: f32[2,4,3] = Transpose(%x) {perm=[0,2,1]}
      %z: f32[2,3,4] = Transpose(%t3) {perm=[0,2,1]}
      %r1: f32[24] = Reshape(%x, %s1=const i64[1] [24])
      %r2: f32[4,6] = Reshape(%r1, %a=const i64[2] [4, 6])
      %w: f32[6,4] = Reshape(%r2, %s3=const i64[2] [6, 4])
    }""", """
    graph g(%x: f32[2,3,4]) -> (y=%t2: f32[4,2,3], z=%x: f32[2,3,4], %w: f32[6,4]) {
      %t2: f32[4,2,3] = Transpose(%x) {perm=[2,0,1]}
      %w: f32[6,4] = Reshape(%x, %w_shape=const i64[2] [6, 4])
    }""")  # fmt: skip


def test_simplify_casts():
    check_pass("simplify", """
    graph g(%x: f32[4], %i: i32[4]) -> (%a: f32[4], %b: i32[4], %c: f16[4], %d: i64[4]) {
      %a: f32[4] = Cast(%x) {to=1}
      %w: f64[4] = Cast(%x) {to=11}
      %c: f16[4] = Cast(%w) {to=10}
      %n: i8[4] = Cast(%i) {to=3}
      %b: i32[4] = Cast(%n) {to=6}
      %l: i64[4] = Cast(%i) {to=7}
      %d: i64[4] = Cast(%l) {to=7}
    }""", """
    graph g(%x: f32[4], %i: i32[4]) -> (a=%x: f32[4], %b: i32[4], %c: f16[4], d=%l: i64[4]) {
      %c: f16[4] = Cast(%x) {to=10}
      %n: i8[4] = Cast(%i) {to=3}
      %b: i32[4] = Cast(%n) {to=6}
      %l: i64[4] = Cast(%i) {to=7}
    }""")  # fmt: skip


def test_simplify_slices_and_constant_reassociation():
    check_pass("simplify", """
    graph g(%x: f32[4,6]) -> (%y: f32[4,6], %r: f32[4,6]) {
      %s: f32[4,6] = Slice(%x, %st=const i64[1] [0], %en=const i64[1] [100], %ax=const i64[1] [1])
      %m1: f32[4,6] = Mul(%s, %c1=const f32[] [2.0])
      %y: f32[4,6] = Mul(%c2=const f32[] [3.0], %m1)
      %r: f32[4,6] = Slice(%x, %a=const i64[1] [-1], %b=const i64[1] [-9], %ax, %k=const i64[1] [-1])
    }""", """
    graph g(%x: f32[4,6]) -> (%y: f32[4,6], %r: f32[4,6]) {
      %y: f32[4,6] = Mul(%x, %c2_1=const f32[] [6.0])
      %r: f32[4,6] = Slice(%x, %a=const i64[1] [-1], %b=const i64[1] [-9], %ax=const i64[1] [1], %k=const i64[1] [-1])
    }""")  # fmt: skip


# -- BatchNorm / affine folding --------------------------------------------------------------------
def test_fold_bn_into_conv():
    check_pass("fold_bn", """
    graph g(%x: f32[1,3,8,8]) -> (%y: f32[1,6,8,8]) {
      %c: f32[1,6,8,8] = Conv(%x, %w: const f32[6,3,3,3]) {pads=[1,1,1,1]}  # cv
      %bn: f32[1,6,8,8] = BatchNormalization(%c, %s: const f32[6], %b: const f32[6], %m: const f32[6], %v: const f32[6])
      %y: f32[1,6,8,8] = Relu(%bn)
    }""", """
    graph g(%x: f32[1,3,8,8]) -> (%y: f32[1,6,8,8]) {
      %bn: f32[1,6,8,8] = Conv(%x, %w_folded: const f32[6,3,3,3], %cv_bias_folded: const f32[6]) {pads=[1,1,1,1]}  # cv
      %y: f32[1,6,8,8] = Relu(%bn)
    }""")  # fmt: skip


def test_fold_scale_and_shift_into_conv():
    check_pass("fold_bn", """
    graph g(%x: f32[2,3,8,8]) -> (%y: f32[2,6,8,8]) {
      %c: f32[2,6,8,8] = Conv(%x, %w: const f32[6,3,1,1], %b: const f32[6])  # conv
      %m: f32[2,6,8,8] = Mul(%c, %k: const f32[6,1,1])
      %d: f32[2,6,8,8] = Div(%m, %two=const f32[] [2.0])
      %y: f32[2,6,8,8] = Add(%shift: const f32[1,6,1,1], %d)
    }""", """
    graph g(%x: f32[2,3,8,8]) -> (%y: f32[2,6,8,8]) {
      %y: f32[2,6,8,8] = Conv(%x, %w_folded: const f32[6,3,1,1], %b_folded: const f32[6])  # conv
    }""")  # fmt: skip


def test_fold_bn_leaves_shared_or_non_channel_producers_alone():
    text = """
    graph g(%x: f32[1,3,8,8]) -> (%y: f32[1,4,8,8], %z: f32[1,4,8,8]) {
      %c: f32[1,4,8,8] = Conv(%x, %w: const f32[4,3,3,3]) {pads=[1,1,1,1]}
      %y: f32[1,4,8,8] = Mul(%c, %k: const f32[4,1,1])
      %c2: f32[1,4,8,8] = Conv(%x, %w2: const f32[4,3,3,3]) {pads=[1,1,1,1]}
      %z: f32[1,4,8,8] = Add(%c2, %c)
    }"""
    check_pass("fold_bn", text, text)
    text2 = """
    graph g(%x: f32[1,3,8,8]) -> (%y: f32[1,4,8,8]) {
      %c: f32[1,4,8,8] = Conv(%x, %w: const f32[4,3,3,3]) {pads=[1,1,1,1]}
      %y: f32[1,4,8,8] = Mul(%c, %k: const f32[8,8])
    }"""
    check_pass("fold_bn", text2, text2)


def test_fold_affine_into_gemm_and_matmul():
    check_pass("fold_bn", """
    graph g(%a: f32[5,8], %x: f32[2,5,8]) -> (%y: f32[5,6], %z: f32[5,6], %u: f32[2,5,6]) {
      %g: f32[5,6] = Gemm(%a, %B: const f32[6,8], %C: const f32[6]) {transB=1, beta=0.5}  # gemm
      %g2: f32[5,6] = Mul(%g, %k: const f32[6])
      %y: f32[5,6] = Sub(%g2, %t: const f32[1,6])
      %mm: f32[5,6] = MatMul(%a, %W: const f32[8,6])  # mm
      %z: f32[5,6] = Add(%mm, %bias: const f32[6])
      %bm: f32[2,5,6] = MatMul(%x, %W2: const f32[8,6])  # bmm
      %u: f32[2,5,6] = Mul(%bm, %half=const f32[] [0.5])
    }""", """
    graph g(%a: f32[5,8], %x: f32[2,5,8]) -> (%y: f32[5,6], %z: f32[5,6], %u: f32[2,5,6]) {
      %y: f32[5,6] = Gemm(%a, %B_folded_1: const f32[6,8], %C_folded_1: const f32[6]) {transB=1}  # gemm
      %z: f32[5,6] = Gemm(%a, %W_folded: const f32[8,6], %mm_bias_folded: const f32[6])  # mm
      %u: f32[2,5,6] = MatMul(%x, %W2_folded: const f32[8,6])  # bmm
    }""")  # fmt: skip


def test_fastmath_turns_divisions_into_multiplications():
    check_pass("fastmath", """
    graph g(%x: f32[4,8], %s: f32[4,1], %t: f32[4,8]) -> (%y: f32[4,8], %z: f32[4,8], %u: f32[4,8]) {
      %y: f32[4,8] = Div(%x, %c=const f32[] [8.0])
      %z: f32[4,8] = Div(%x, %s)
      %u: f32[4,8] = Div(%x, %t)
    }""", """
    graph g(%x: f32[4,8], %s: f32[4,1], %t: f32[4,8]) -> (%y: f32[4,8], %z: f32[4,8], %u: f32[4,8]) {
      %y: f32[4,8] = Mul(%x, %c_recip=const f32[] [0.125])
      %s_recip: f32[4,1] = Reciprocal(%s)
      %z: f32[4,8] = Mul(%x, %s_recip)
      %u: f32[4,8] = Div(%x, %t)
    }""", rtol=1e-6)  # fmt: skip


# -- specialization, pipelines, the manager --------------------------------------------------------
def test_specialize_fixes_symbolic_dims_and_folds_shapes():
    check_pass(["specialize", "dce"], """
    graph g(%x: f32[N,8]) -> (%y: f32[N,8]) {
      %s: i64[2] = Shape(%x)
      %n: i64[] = ReduceProd(%s) {keepdims=0}
      %f: f32[] = Cast(%n) {to=1}
      %y: f32[N,8] = Div(%x, %f)
    }""", """
    graph g(%x: f32[3,8]) -> (%y: f32[3,8]) {
      %y: f32[3,8] = Div(%x, %f=const f32[] [24.0])
    }""", options={"input_shapes": {"x": [3, 8]}})  # fmt: skip


def test_pipelines_by_level_and_edits():
    assert pipeline_for(0) == []
    assert set(PIPELINES[1]) <= set(PIPELINES[2]) <= set(PIPELINES[3])
    assert "fold_bn" not in pipeline_for(2, "-fold_bn,-cse")
    assert "cse" not in pipeline_for(2, "-fold_bn,-cse")
    assert pipeline_for(0, "+dce") == ["dce"]
    with pytest.raises(TensorforgeError, match="unknown pass 'nope'"):
        pipeline_for(2, "+nope")


def test_pass_manager_checks_requirements_and_records_stats():
    from tensorforge.passes.manager import PASSES, Pass, PassManager, check_pipeline

    PASSES["_needs_dce"] = Pass("_needs_dce", lambda g, o: (g, {"checked": 1}), requires=("dce",))
    try:
        with pytest.raises(TensorforgeError, match="requires pass 'dce' to run before it"):
            check_pipeline(["_needs_dce", "dce"])
        printed = []
        pm = PassManager(["dce", "_needs_dce"], print_after="all", printer=printed.append)
        pm.run(parse_graph("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%x)\n}"))
        assert [r.name for r in pm.log] == ["dce", "_needs_dce"] and pm.log[1].stats == {"checked": 1}
        assert "IR after _needs_dce" in printed[1] and "checked 1" in printed[1]
    finally:
        del PASSES["_needs_dce"]


def test_verifier_names_the_pass_that_broke_the_graph():
    from tensorforge.ir.graph import TensorType
    from tensorforge.passes.manager import PASSES, Pass

    def bad(g, options):  # retype a value: the verifier must catch it
        g = g.copy()
        g.nodes[0].outputs[0].type = TensorType(g.nodes[0].outputs[0].dtype, (3,))
        return g

    PASSES["_bad"] = Pass("_bad", bad)
    try:
        with pytest.raises(TensorforgeError, match=r"after pass _bad"):
            run_passes(["_bad"], "graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%x)\n}")
    finally:
        del PASSES["_bad"]


def test_graph_and_output_names_that_are_not_identifiers_round_trip(tmp_path):
    """A model file named 'resnet50-v1.onnx' or a TensorFlow output 'logits:0' names the graph / an output with
    characters an identifier cannot hold: the text quotes them and parses back (a cached artifact's graph is read
    from its text), also after a compile-cache hit in a new compile."""
    import numpy as np
    from onnx import TensorProto, helper

    import tensorforge as tfg
    from tensorforge.ir.parser import parse_graph

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["logits:0"])], "resnet50-v1",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("logits:0", TensorProto.FLOAT, [2, 3])])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cm = tfg.compile(model)
    text = str(cm.graph)
    back = parse_graph(text)
    assert str(back) == text and back.output_names == ["logits:0"]
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    path = tmp_path / "m.tfa"
    cm.save(str(path))
    loaded = tfg.load(str(path))
    assert str(loaded.graph) == text
    np.testing.assert_array_equal(loaded(x), np.maximum(x, 0))
