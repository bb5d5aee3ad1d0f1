"""Every supported op against onnx.reference.ReferenceEvaluator on fresh random inputs, including
broadcasting and sizes that are not multiples of the vector width."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand

SHAPES = [(1,), (7,), (3, 17), (2, 3, 65), (4, 1, 33), (1000,)]

UNARY = {
    "Relu": (-2, 2), "Sigmoid": (-10, 10), "Tanh": (-5, 5), "Exp": (-20, 20), "Log": (1e-3, 100),
    "Sqrt": (0, 100), "Neg": (-2, 2), "Abs": (-2, 2), "Reciprocal": (0.5, 3), "Floor": (-5, 5),
    "Ceil": (-5, 5), "Erf": (-4.5, 4.5), "Softplus": (-20, 20), "Softsign": (-5, 5), "HardSwish": (-5, 5),
    "HardSigmoid": (-5, 5), "Sign": (-2, 2), "Elu": (-3, 3), "Selu": (-3, 3), "LeakyRelu": (-3, 3),
    "Mish": (-5, 5), "Sin": (-3, 3), "Cos": (-3, 3), "Round": (-5, 5),
}  # fmt: skip


@pytest.mark.parametrize("op", sorted(UNARY))
@pytest.mark.parametrize("shape", [(7,), (2, 3, 65)])
def test_unary(op, shape, rng):
    lo, hi = UNARY[op]
    x = rand(rng, shape, low=lo, high=hi)
    check_model(one_node_model(op, {"x": x}), {"x": x}, rtol=2e-5 if op != "Erf" else 1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_unary_shapes(shape, rng):
    x = rand(rng, shape, low=-30, high=30)
    check_model(one_node_model("Sigmoid", {"x": x}), {"x": x}, rtol=1e-5, atol=1e-7)
    check_model(one_node_model("Exp", {"x": x}), {"x": x}, rtol=2e-6, atol=0)


def test_exp_log_special_values():
    x = np.array([0, -0.0, 1, -1, 88.7, 88.8, -87.3, -100, -104, np.inf, -np.inf, np.nan, 1e-30, 1e-42] * 2,
                 np.float32)  # fmt: skip
    check_model(one_node_model("Exp", {"x": x}), {"x": x}, rtol=3e-6, atol=1e-45)
    y = np.abs(x)
    check_model(one_node_model("Log", {"x": y}), {"x": y}, rtol=3e-6, atol=1e-6)
    z = np.array([-1, -1e-30, 0, np.inf] * 5, np.float32)
    check_model(one_node_model("Log", {"x": z}), {"x": z})
    t = np.array([0, 1e-8, 0.3, 0.6249, 0.6251, 5, 9.1, 20, -20, np.nan, np.inf, -np.inf] * 2, np.float32)
    check_model(one_node_model("Tanh", {"x": t}), {"x": t}, rtol=2e-6, atol=1e-7)


BROADCASTS = [((3, 4, 5), (5,)), ((3, 1, 5), (1, 4, 1)), ((), (2, 3)), ((1,), (17,)), ((2, 3, 17), (2, 3, 17)),
              ((65, 1), (1, 9)), ((4, 1, 1, 7), (3, 1, 7))]  # fmt: skip
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_binary_broadcast(op, shapes, rng):
    a = rand(rng, shapes[0], low=0.5 if op == "Pow" else -3, high=3)
    b = rand(rng, shapes[1], low=0.5 if op in ("Div",) else -2, high=2)
    if op == "Div":
        b = np.where(rng.random(b.shape) > 0.5, b, -b).astype(np.float32)
    check_model(one_node_model(op, {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
def test_compare(op, rng):
    a = rng.integers(-3, 4, (4, 17)).astype(np.float32)
    b = rng.integers(-3, 4, (17,)).astype(np.float32)
    check_model(one_node_model(op, {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint8, np.float64])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_binary_dtypes(op, dtype, rng):
    a = rand(rng, (3, 19), dtype, low=-50 if np.dtype(dtype).kind != "u" else 0, high=50)
    b = rand(rng, (19,), dtype, low=1, high=9)
    check_model(one_node_model(op, {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic(op, n, rng):
    shapes = [(3, 9), (9,), (1, 9), (3, 1)][:n]
    feeds = {f"x{i}": rand(rng, s) for i, s in enumerate(shapes)}
    check_model(one_node_model(op, feeds), feeds)


@pytest.mark.parametrize("bounds", ["both", "min", "max", "none"])
def test_clip(bounds, rng):
    x = rand(rng, (5, 33), low=-3, high=3)
    consts = {}
    order = ["x"]
    if bounds in ("both", "min"):
        consts["lo"] = np.array(-0.5, np.float32)
    if bounds in ("both", "max"):
        consts["hi"] = np.array(0.7, np.float32)
    order += ["lo" if "lo" in consts else "", "hi"] if "hi" in consts else (["lo"] if "lo" in consts else [])
    check_model(one_node_model("Clip", {"x": x}, consts=consts, input_order=order), {"x": x})


def test_clip_dynamic_bounds(rng):
    x = rand(rng, (4, 10))
    lo, hi = np.array(-0.3, np.float32), np.array(0.4, np.float32)
    check_model(one_node_model("Clip", {"x": x, "lo": lo, "hi": hi}), {"x": x, "lo": lo, "hi": hi})


def test_where_and_cast(rng):
    c = rng.random((3, 17)) > 0.5
    a, b = rand(rng, (3, 17)), rand(rng, (17,))
    check_model(one_node_model("Where", {"c": c, "a": a, "b": b}), {"c": c, "a": a, "b": b})
    x = rand(rng, (5, 13), low=-100, high=100)
    from onnx import TensorProto

    for to in (TensorProto.INT32, TensorProto.INT64, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL,
               TensorProto.UINT8):  # fmt: skip
        xx = np.abs(x) if to == TensorProto.UINT8 else x
        check_model(one_node_model("Cast", {"x": xx}, {"to": to}), {"x": xx})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((1, 10), -1), ((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), 2),
                                        ((2, 1000), 1), ((2, 17, 9), -2), ((7,), 0)])  # fmt: skip
def test_softmax(op, shape, axis, rng):
    x = rand(rng, shape, low=-10, high=10)
    check_model(one_node_model(op, {"x": x}, {"axis": axis}), {"x": x}, rtol=1e-5, atol=1e-6)


def test_softmax_legacy_opset(rng):
    """Opset < 13 Softmax normalizes over all dims from `axis` on (the reference evaluator gets this
    wrong: it applies the opset-13 rule), so compare with numpy."""
    import tensorforge as tfg

    x = rand(rng, (2, 3, 4))
    for axis in (0, 1, 2):
        m = tfg.compile(one_node_model("Softmax", {"x": x}, {"axis": axis}, opset=11))
        f = x.reshape(int(np.prod(x.shape[:axis])), -1).astype(np.float64)
        e = np.exp(f - f.max(1, keepdims=True))
        want = (e / e.sum(1, keepdims=True)).reshape(x.shape)
        np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])  # fmt: skip
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([-1], 0), ([0, 2], 1), (None, 0), ([0], 0)])
def test_reduce(op, axes, keepdims, rng):
    x = rand(rng, (3, 5, 19), low=0.5 if op == "ReduceProd" else -2, high=1.5 if op == "ReduceProd" else 2)
    consts = {"axes": np.array(axes, np.int64)} if axes is not None else {}
    check_model(one_node_model(op, {"x": x}, {"keepdims": keepdims}, consts=consts), {"x": x}, rtol=1e-5,
                atol=1e-5)  # fmt: skip


def test_reduce_legacy_axes_attr(rng):
    x = rand(rng, (4, 6, 8))
    check_model(one_node_model("ReduceMean", {"x": x}, {"axes": [1, 2], "keepdims": 1}, opset=13), {"x": x})
    check_model(one_node_model("ReduceSum", {"x": x}, {"axes": [0], "keepdims": 0}, opset=11), {"x": x})


@pytest.mark.parametrize("shape,target", [((2, 3, 4), [6, 4]), ((2, 3, 4), [0, -1]), ((24,), [2, -1, 3]),
                                          ((1, 784), [28, 28])])  # fmt: skip
def test_reshape(shape, target, rng):
    x = rand(rng, shape)
    check_model(one_node_model("Reshape", {"x": x}, consts={"s": np.array(target, np.int64)}), {"x": x})


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis, rng):
    x = rand(rng, (2, 3, 5))
    check_model(one_node_model("Flatten", {"x": x}, {"axis": axis}), {"x": x})


@pytest.mark.parametrize("perm", [None, [1, 0, 2], [2, 0, 1], [0, 2, 1]])
def test_transpose(perm, rng):
    x = rand(rng, (3, 17, 9))
    check_model(one_node_model("Transpose", {"x": x}, {} if perm is None else {"perm": perm}), {"x": x})


def test_transpose_then_relu(rng):
    """A transpose feeding a computation is a strided view, not a copy."""
    import onnx
    from onnx import TensorProto, helper

    x = rand(rng, (5, 19))
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), helper.make_node("Relu", ["t"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 19])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [19, 5])])  # fmt: skip
    check_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), {"x": x})
    _ = onnx


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis, rng):
    a, b, c = rand(rng, (2, 3, 4)), rand(rng, (2, 3, 4)), rand(rng, (2, 3, 4))
    if axis == 1:
        b = rand(rng, (2, 7, 4))
    check_model(one_node_model("Concat", {"a": a, "b": b, "c": c}, {"axis": axis}), {"a": a, "b": b, "c": c})


def test_identity_and_squeeze(rng):
    x = rand(rng, (3, 1, 5))
    check_model(one_node_model("Identity", {"x": x}), {"x": x})
    check_model(one_node_model("Squeeze", {"x": x}, consts={"axes": np.array([1], np.int64)}), {"x": x})
    check_model(one_node_model("Unsqueeze", {"x": x}, consts={"axes": np.array([0, 4], np.int64)}), {"x": x})


@pytest.mark.parametrize("m,k,n", [(1, 784, 256), (7, 17, 63), (65, 1, 1000), (1, 1, 1), (6, 16, 16), (13, 65, 7),
                                   (64, 784, 256)])  # fmt: skip
@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(m, k, n, trans, rng):
    ta, tb = trans
    a = rand(rng, (k, m) if ta else (m, k))
    b = rand(rng, (n, k) if tb else (k, n))
    c = rand(rng, (n,))
    attrs = {"transA": ta, "transB": tb, "alpha": 0.5, "beta": 2.0}
    # weights as initializers (packed at compile time) and as runtime inputs (packed at run time)
    check_model(one_node_model("Gemm", {"a": a}, attrs, consts={"b": b, "c": c}), {"a": a}, rtol=1e-4, atol=1e-4)
    check_model(one_node_model("Gemm", {"a": a, "b": b, "c": c}, attrs), {"a": a, "b": b, "c": c}, rtol=1e-4,
                atol=1e-4)  # fmt: skip


@pytest.mark.parametrize("cshape", [(1, 1), (5, 1), (1, 9), (5, 9), ()])
def test_gemm_c_broadcast(cshape, rng):
    a, b, c = rand(rng, (5, 11)), rand(rng, (11, 9)), rand(rng, cshape)
    check_model(one_node_model("Gemm", {"a": a, "b": b, "c": c}), {"a": a, "b": b, "c": c})


@pytest.mark.parametrize("sa,sb", [((3, 17), (17, 5)), ((2, 3, 4, 5), (5, 6)), ((5,), (5, 7)), ((3, 5), (5,)),
                                   ((5,), (5,)), ((2, 1, 3, 8), (4, 8, 9)), ((1, 65, 33), (3, 33, 17))])  # fmt: skip
def test_matmul(sa, sb, rng):
    a, b = rand(rng, sa), rand(rng, sb)
    check_model(one_node_model("MatMul", {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-4, atol=1e-4)
    check_model(one_node_model("MatMul", {"a": a}, consts={"b": b}), {"a": a}, rtol=1e-4, atol=1e-4)


CONVS = [
    dict(x=(1, 3, 8, 8), w=(4, 3, 3, 3), attrs={}),
    dict(x=(2, 3, 9, 7), w=(5, 3, 3, 3), attrs={"pads": [1, 1, 1, 1]}),
    dict(x=(1, 4, 11, 11), w=(6, 4, 3, 3), attrs={"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    dict(x=(1, 8, 10, 10), w=(8, 1, 3, 3), attrs={"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    dict(x=(1, 8, 9, 9), w=(4, 4, 3, 3), attrs={"group": 2}),  # grouped
    dict(x=(1, 16, 7, 7), w=(32, 16, 1, 1), attrs={}),  # pointwise
    dict(x=(1, 3, 12, 12), w=(2, 3, 3, 3), attrs={"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    dict(x=(1, 3, 10, 10), w=(4, 3, 3, 3), attrs={"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    dict(x=(1, 3, 10, 10), w=(4, 3, 2, 2), attrs={"auto_pad": "SAME_LOWER"}),
    dict(x=(1, 3, 16, 16), w=(8, 3, 7, 7), attrs={"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    dict(x=(1, 2, 7, 9), w=(3, 2, 3, 2), attrs={"pads": [0, 1, 2, 0]}),  # asymmetric pads
    dict(x=(2, 3, 17), w=(4, 3, 5), attrs={"pads": [2, 2]}),  # 1-D
    dict(x=(1, 2, 5, 6, 7), w=(3, 2, 3, 3, 3), attrs={"pads": [1, 1, 1, 1, 1, 1]}),  # 3-D
]


@pytest.mark.parametrize("case", CONVS, ids=lambda c: f"x{c['x']}w{c['w']}{c['attrs']}")
@pytest.mark.parametrize("bias", [True, False])
def test_conv(case, bias, rng):
    x = rand(rng, case["x"])
    w = rand(rng, case["w"])
    consts = {"w": w}
    if bias:
        consts["b"] = rand(rng, (case["w"][0],))
    check_model(one_node_model("Conv", {"x": x}, case["attrs"], consts=consts), {"x": x}, rtol=1e-4, atol=1e-4)


POOLS = [
    dict(x=(1, 3, 8, 8), attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
    dict(x=(2, 2, 9, 11), attrs={"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    dict(x=(1, 3, 17, 17), attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    dict(x=(1, 2, 10, 10), attrs={"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    dict(x=(1, 2, 7, 33), attrs={"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0]}),
    dict(x=(1, 2, 10, 10), attrs={"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    dict(x=(1, 2, 12, 12), attrs={"kernel_shape": [3, 3], "dilations": [2, 2]}),
    dict(x=(2, 3, 20), attrs={"kernel_shape": [4], "strides": [2], "pads": [1, 2]}),
    dict(x=(1, 2, 6, 7, 8), attrs={"kernel_shape": [2, 3, 2], "strides": [2, 1, 2]}),
]


@pytest.mark.parametrize("case", POOLS, ids=lambda c: f"x{c['x']}{c['attrs']}")
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool(op, case, rng):
    x = rand(rng, case["x"])
    attrs = dict(case["attrs"])
    if op == "AveragePool" and "dilations" in attrs:
        attrs.pop("dilations")
    check_model(one_node_model(op, {"x": x}, attrs), {"x": x}, rtol=1e-5, atol=1e-6)
    if op == "AveragePool" and attrs.get("pads"):
        attrs["count_include_pad"] = 1
        check_model(one_node_model(op, {"x": x}, attrs), {"x": x}, rtol=1e-5, atol=1e-6)


BAD_POOLS = [
    ({"kernel_shape": [0, 2]}, r"attribute 'kernel_shape' must be >= 1, got the list \[0, 2\]"),
    ({"kernel_shape": [2, -1]}, r"attribute 'kernel_shape' must be >= 1, got the list \[2, -1\]"),
    ({"kernel_shape": [2, 2], "pads": [2, 0, 0, 0]}, r"pads \[2, 0, 0, 0\] must be smaller than kernel_shape "
     r"\[2, 2\]: pad 2 at the start of spatial dim 0 >= kernel 2"),
    ({"kernel_shape": [3, 2], "pads": [0, 0, 0, 5]}, r"pads \[0, 0, 0, 5\] must be smaller than kernel_shape "
     r"\[3, 2\]: pad 5 at the end of spatial dim 1 >= kernel 2"),
    ({"kernel_shape": [2, 2], "pads": [0, -1, 0, 0]}, r"attribute 'pads' must be >= 0, got the list \[0, -1, 0, 0\]"),
]


@pytest.mark.parametrize("attrs,message", BAD_POOLS, ids=lambda c: str(c))
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_attributes_rejected(op, attrs, message, rng):
    """A window lying wholly in the padding (or no window) has no input: rejected at import with the node, op,
    attribute, expected and actual value, never a tensor of -inf (ONNX Runtime rejects pads >= kernel too)."""
    import tensorforge as tfg

    x = rand(rng, (1, 2, 6, 6))
    with pytest.raises(tfg.ShapeError, match=rf"model '{op.lower()}_test', node '{op.lower()}_node' \({op}\): "
                       + message):  # fmt: skip
        tfg.compile(one_node_model(op, {"x": x}, attrs))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 17, 5, 9), (1, 4, 33)])
def test_global_pool(op, shape, rng):
    """Compared with numpy: the reference evaluator's GlobalMaxPool reduces the wrong axes for 1-D inputs."""
    import tensorforge as tfg

    x = rand(rng, shape)
    axes = tuple(range(2, len(shape)))
    want = x.max(axis=axes, keepdims=True) if op == "GlobalMaxPool" else x.mean(axis=axes, keepdims=True)
    np.testing.assert_allclose(tfg.compile(one_node_model(op, {"x": x}))(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 17, 4), (3, 5)])
def test_batchnorm(shape, rng):
    c = shape[1]
    x = rand(rng, shape)
    consts = {"s": rand(rng, (c,)), "b": rand(rng, (c,)), "m": rand(rng, (c,)), "v": rand(rng, (c,), low=0.5, high=2)}
    check_model(one_node_model("BatchNormalization", {"x": x}, {"epsilon": 1e-3}, consts=consts), {"x": x},
                rtol=1e-5, atol=1e-5)  # fmt: skip
    feeds = {"x": x, **consts}
    check_model(one_node_model("BatchNormalization", feeds, {"epsilon": 1e-3}), feeds, rtol=1e-5, atol=1e-5)
