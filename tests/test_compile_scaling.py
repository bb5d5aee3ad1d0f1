"""Compile time and depth: kernel-IR expressions are DAGs (Relu reads its input twice, so n fused Relus have
2^n paths), so every walk visits each distinct node once and none recurses on expression depth; the fusion
pass caps a group's members, which bounds the lowering's own recursion (it composes index functions).

Time bounds are generous for a loaded 2-core machine: walking the trees took minutes (50 alternating
Neg/Relu: 432 s, 18 SiLU blocks: 106 s), a 3000-node chain raised RecursionError."""

from __future__ import annotations

import ctypes
import time

import numpy as np
import pytest
from onnx import TensorProto, helper

import tensorforge as tfg
from tensorforge.codegen.emit import build_kernel_module
from tensorforge.codegen.targets import host
from tensorforge.ir.dtype import DType
from tensorforge.lower import kir as K
from tensorforge.lower.printer import format_kernel, structural_key
from tensorforge.passes import fuse
from tensorforge.runtime.jit import jit

F32 = DType.F32
N = 37  # a vector loop of 8 lanes and a remainder


def _relu(e: K.Expr) -> K.Expr:
    return K.select(K.cmp("lt", e, K.const(0, F32)), K.const(0, F32), e)


def _neg_relu(n: int, x: K.Buffer, i: K.Var, tree_levels: int = 0) -> K.Expr:
    """neg, relu, neg, ... applied n times to x[i]: each relu reads its input twice, one shared node, except
    the first ``tree_levels`` relus, which read two copies built apart (a tree below, a DAG above)."""

    def build(k: int) -> K.Expr:
        e = x[i]
        for j in range(1, k + 1):
            if j % 2:
                e = K.unop("neg", e)
            elif j <= 2 * tree_levels:
                e = K.select(K.cmp("lt", e, K.const(0, F32)), K.const(0, F32), build(j - 1))
            else:
                e = _relu(e)
        return e

    return build(n)


def _kernel(name: str, e: K.Expr, x: K.Buffer, y: K.Buffer, i: K.Var) -> K.Kernel:
    return K.Kernel(name, [x, y], K.loop(i, N, K.Store(y, i, e), K.LoopKind.VECTOR, lanes=8))


def _run_kernel(k: K.Kernel, x: np.ndarray) -> np.ndarray:
    jm = jit(build_kernel_module([k], host()), host())
    y = np.zeros_like(x)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(jm.address(k.name))(x.ctypes.data, y.ctypes.data)
    return y


def _tree_buffers(s: K.Stmt) -> list[K.Buffer]:
    """buffers_of as a walk of the tree (each path): the order the DAG walk must keep."""
    seen: dict[int, K.Buffer] = {}
    for st in K.walk_stmt(s):
        if isinstance(st, K.Store | K.Prefetch):
            seen.setdefault(id(st.buf), st.buf)
        for e in K.stmt_exprs(st):
            stack = [e]
            while stack:
                x = stack.pop()
                if isinstance(x, K.Load):
                    seen.setdefault(id(x.buf), x.buf)
                stack.extend(K.children(x))
    return list(seen.values())


def test_walks_visit_each_node_of_a_dag_once():
    x, y, i = K.Buffer("x", F32, N), K.Buffer("y", F32, N), K.Var("i")
    e = _neg_relu(60, x, i)  # 2^30 paths
    t0 = time.perf_counter()
    nodes = list(K.walk_expr(e))
    assert len(nodes) == len({id(n) for n in nodes}) < 200
    k = _kernel("dag", e, x, y, i)
    assert K.buffers_of(k.body) == [y, x]
    assert K.expr_vars(e) == {i} and K.uses_var(e, i)
    shifted = K.substitute(e, {i: K.binop("add", i, 1)})
    assert len(list(K.walk_expr(shifted))) == len(nodes) + 2  # the sharing kept: one new load, one add
    assert sum(isinstance(n, K.Load) for n in K.walk_expr(shifted)) == 1
    index = i
    for _ in range(60):
        index = K.binop("sub", K.binop("add", index, index), index)  # 2^60 paths, == i
    coef, rest = K.linear_in(index, i)
    assert coef == 1 and isinstance(rest, K.Const) and rest.value == 0
    assert time.perf_counter() - t0 < 5


def test_dag_walks_keep_the_tree_walks_order():
    x, w, y, i = K.Buffer("x", F32, N), K.Buffer("w", F32, N), K.Buffer("y", F32, N), K.Var("i")
    a, b = x[i], w[K.binop("add", i, 1)]
    shared = K.binop("mul", a, b)
    body = K.seq(K.Store(y, i, K.select(K.cmp("lt", shared, b), shared, K.binop("add", w[i], a))),
                 K.Store(x, i, shared))  # fmt: skip
    assert K.buffers_of(body) == _tree_buffers(body)
    e = body.body[0].value
    tree, stack = [], [e]
    while stack:
        tree.append(stack.pop())
        stack.extend(K.children(tree[-1]))
    assert [id(n) for n in K.walk_expr(e)] == list(dict.fromkeys(id(n) for n in tree))


def test_printing_and_structural_keys_are_linear_and_exact():
    x, y, i = K.Buffer("x", F32, N), K.Buffer("y", F32, N), K.Var("i")
    k = _kernel("dag", _neg_relu(60, x, i), x, y, i)
    t0 = time.perf_counter()
    text = format_kernel(k)
    assert len(text) < 4000 and text.count("let ") == 30, text  # each relu's input named once
    key = structural_key(k)
    assert time.perf_counter() - t0 < 5
    # the same computation built with other objects and without some of the sharing has the same key
    x2, y2, i2 = K.Buffer("in", F32, N), K.Buffer("out", F32, N), K.Var("j")
    assert structural_key(_kernel("tree", _neg_relu(60, x2, i2, tree_levels=6), x2, y2, i2)) == key
    # another computation has another key: one relu less, another constant, another buffer size
    assert structural_key(_kernel("shorter", _neg_relu(58, x, i), x, y, i)) != key
    other = K.Store(y, i, K.binop("add", _neg_relu(60, x, i), K.const(0.0, F32)))
    assert structural_key(K.Kernel("plus0", [x, y], K.loop(i, N, other, K.LoopKind.VECTOR, lanes=8))) != key
    x3 = K.Buffer("x", F32, N + 1)
    assert structural_key(_kernel("wider", _neg_relu(60, x3, i), x3, y, i)) != key


def test_a_dag_kernel_vectorizes_and_runs(rng):
    x, y, i = K.Buffer("x", F32, N), K.Buffer("y", F32, N), K.Var("i")
    k = _kernel("dag", _neg_relu(60, x, i), x, y, i)
    xv = rng.standard_normal(N).astype(np.float32)
    t0 = time.perf_counter()
    got = _run_kernel(k, xv)
    assert time.perf_counter() - t0 < 10
    want = xv
    for _ in range(30):
        want = np.maximum(-want, 0)
    np.testing.assert_array_equal(got, want)


def test_expressions_thousands_of_nodes_deep_need_no_recursion(rng):
    x, y, i = K.Buffer("x", F32, N), K.Buffer("y", F32, N), K.Var("i")
    e = x[i]
    for j in range(3000):  # three times the interpreter's recursion limit
        e = [K.unop("neg", e), _relu(e), K.binop("add", K.binop("mul", e, K.const(0.5, F32)), x[i])][j % 3]
    k = _kernel("deep", e, x, y, i)
    assert len(format_kernel(k).splitlines()) < 3100 and structural_key(k)
    shifted = K.substitute(e, {i: K.binop("add", i, 0)})
    assert shifted is e and K.buffers_of(k.body) == [y, x]
    xv = rng.standard_normal(N).astype(np.float32)
    want = xv.copy()
    for j in range(3000):
        want = [-want, np.maximum(want, 0), want * np.float32(0.5) + xv][j % 3]
    np.testing.assert_allclose(_run_kernel(k, xv), want, rtol=1e-6, atol=1e-6)


# -- whole models --------------------------------------------------------------------------------------
def _chain_model(ops: list[str], shape=(4, 64)) -> helper.ModelProto:
    nodes, prev = [], "x"
    for j, op in enumerate(ops):
        if op == "SiLU":
            nodes.append(helper.make_node("Sigmoid", [prev], [f"s{j}"]))
            nodes.append(helper.make_node("Mul", [prev, f"s{j}"], [f"t{j}"]))
        else:
            nodes.append(helper.make_node(op, [prev], [f"t{j}"]))
        prev = f"t{j}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, list(shape))])  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _reference(ops: list[str], x: np.ndarray) -> np.ndarray:
    y = x.astype(np.float64)
    for op in ops:
        s = 1 / (1 + np.exp(-y))
        y = {"Neg": -y, "Relu": np.maximum(y, 0), "Sigmoid": s, "SiLU": y * s}[op]
    return y


@pytest.mark.parametrize("ops", [["Neg", "Relu"] * 25, ["SiLU"] * 18], ids=["neg_relu_50", "silu_18"])
def test_long_fused_chain_compiles_in_linear_time(ops, monkeypatch, rng):
    monkeypatch.setenv("TENSORFORGE_CACHE", "0")  # the cap below is not part of the cache key
    monkeypatch.setitem(fuse.MAX_NODES, "loop", 1000)  # the whole chain in one loop: the DAG of the issue
    t0 = time.perf_counter()
    m = tfg.compile(_chain_model(ops))
    assert time.perf_counter() - t0 < 5
    assert len(m.program.kernels) == 1
    x = rng.standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(m(x), _reference(ops, x), rtol=1e-5, atol=1e-6)


def test_fusion_caps_loops_and_identical_segments_share_code(rng):
    cap = fuse.MAX_NODES["loop"]
    ops = ["Neg", "Relu"] * (5 * cap // 2)
    m = tfg.compile(_chain_model(ops))
    assert len(m.program.kernels) == 5
    # the segments in the middle update one buffer in place, the first and the last read one and write
    # another: two functions (structural_key tells them apart from their structure alone)
    assert len(m.program.kernels) - len(m.artifact.aliases) == 2
    x = rng.standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(m(x), _reference(ops, x), rtol=1e-6)


def test_ten_thousand_node_chain_compiles_and_computes(rng):
    ops = ["Neg", "Relu", "Sigmoid"] * 3333 + ["Neg"]
    x = rng.standard_normal((3, 64)).astype(np.float32)
    want = _reference(ops, x)
    t0 = time.perf_counter()
    m = tfg.compile(_chain_model(ops, shape=(3, 64)))
    assert time.perf_counter() - t0 < 30
    np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-6)
    dynamic = tfg.compile(_chain_model(ops, shape=("batch", 64)))  # compiled per shape at the first call
    np.testing.assert_allclose(dynamic(x), want, rtol=1e-5, atol=1e-6)
