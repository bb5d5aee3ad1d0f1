"""BitCast, BitShift edge cases, NonMaxSuppression and exact double -> half casts."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from helpers import check_model, one_node_model, rand


@pytest.mark.parametrize("src,dst", [(np.float32, TensorProto.INT32), (np.int64, TensorProto.DOUBLE),
                                     (np.float16, TensorProto.INT16), (np.bool_, TensorProto.UINT8),
                                     (np.int8, TensorProto.UINT8)])  # fmt: skip
def test_bitcast(src, dst, rng):
    x = rand(rng, (3, 17), src, low=-100, high=100)
    check_model(one_node_model("BitCast", {"x": x}, {"to": dst}, opset=26), {"x": x})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int64])
def test_bitshift_out_of_range_amounts(direction, dtype):
    """Shifts by >= the bit width (or negative, read as unsigned) move every bit out."""
    import tensorforge as tfg

    info = np.iinfo(dtype)
    bits = info.bits
    x = np.array([info.min, -5 if info.min < 0 else 5, 7, info.max, 1, 3], dtype)
    y = np.array([1, bits, bits + 3, 0, bits - 1, -1 if info.min < 0 else 200], dtype)
    m = tfg.compile(one_node_model("BitShift", {"x": x, "y": y}, {"direction": direction}))
    want = []
    for a, s in zip(x.tolist(), y.tolist()):
        s = s % (1 << bits)  # unsigned amount
        if s >= bits:
            want.append(0 if direction == "LEFT" or a >= 0 else -1)
        else:
            want.append((a << s) if direction == "LEFT" else (a >> s))
    want = np.array([w % (1 << bits) for w in want], np.uint64).astype(np.dtype(dtype).str.replace("i", "u"))
    np.testing.assert_array_equal(m(x, y).view(want.dtype), want)


@pytest.mark.parametrize("center", [0, 1])
def test_non_max_suppression(center, rng):
    boxes = rand(rng, (2, 12, 4), low=0, high=10)
    if center:
        boxes[..., 2:] = np.abs(boxes[..., 2:]) + 0.5
    scores = rand(rng, (2, 3, 12), low=0, high=1)
    consts = {"m": np.array([4], np.int64), "iou": np.array([0.3], np.float32), "st": np.array([0.2], np.float32)}
    feeds = {"b": boxes, "s": scores}
    check_model(one_node_model("NonMaxSuppression", feeds, {"center_point_box": center}, consts=consts), feeds)


def test_double_to_half_is_correctly_rounded():
    """Doubles just off half-precision ties: rounding through float to nearest would be off by one ulp."""
    import tensorforge as tfg

    ties = np.array([1 + 2**-11, 1 + 3 * 2**-11, 2048 + 1, 0.1], np.float64)
    x = np.concatenate([ties, ties + 2**-40, ties - 2**-40, -ties, [65520.0, 1e-8, np.inf, np.nan]])
    m = tfg.compile(one_node_model("Cast", {"x": x}, {"to": TensorProto.FLOAT16}))
    np.testing.assert_array_equal(m(x), x.astype(np.float16))


def test_inputs_keep_their_onnx_names(rng):
    """Inputs are fed by the names the model gives them, even names that are not identifiers."""
    from onnx import helper

    import tensorforge as tfg

    g = helper.make_graph([helper.make_node("Relu", ["gpu_0/data:0"], ["out/y"])], "g",
                          [helper.make_tensor_value_info("gpu_0/data:0", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info("out/y", TensorProto.FLOAT, [2, 3])])  # fmt: skip
    m = tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rand(rng, (2, 3))
    assert m.input_names == ["gpu_0/data:0"]
    np.testing.assert_array_equal(m.run({"gpu_0/data:0": x})["out/y"], np.maximum(x, 0))


POOLS = [{"kernel_shape": [2, 2], "strides": [2, 2]}, {"kernel_shape": [3, 2], "pads": [1, 0, 1, 1], "strides": [2, 1]}]


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("attrs", POOLS, ids=str)
def test_maxpool_indices_and_unpool(storage_order, attrs, rng):
    x = rand(rng, (2, 3, 6, 5))
    check_model(one_node_model("MaxPool", {"x": x}, {**attrs, "storage_order": storage_order}, n_outputs=2), {"x": x})
    if storage_order == 0 and "pads" not in attrs:  # unpool what a pooling of an even-sized input gave
        import tensorforge as tfg

        x4 = np.ascontiguousarray(x[..., :4])
        vals, idx = tfg.compile(one_node_model("MaxPool", {"x": x4}, attrs, n_outputs=2))(x4)
        feeds = {"v": vals, "i": idx}
        check_model(one_node_model("MaxUnpool", feeds, attrs), feeds)
        consts = {"s": np.array([2, 3, 7, 6], np.int64)}
        check_model(one_node_model("MaxUnpool", feeds, attrs, consts=consts), feeds)


@pytest.mark.parametrize("attrs", [{}, {"strides": [2, 1], "pads": [1, 0, 1, 0], "dilations": [1, 2]}], ids=str)
def test_col2im(attrs, rng):
    import tensorforge as tfg

    image, block = np.array([5, 6], np.int64), np.array([2, 3], np.int64)
    win_attrs = {"kernel_shape": [2, 3], **attrs}
    from tensorforge.ops.nn import resolve_window

    win = resolve_window(None, (5, 6), (2, 3), win_attrs)
    x = rand(rng, (2, 4 * 6, int(np.prod(win.out_size))))
    check_model(one_node_model("Col2Im", {"x": x}, attrs, consts={"img": image, "blk": block}), {"x": x})
    _ = tfg


@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(mode, rng):
    cache, upd = rand(rng, (3, 2, 8, 4)), rand(rng, (3, 2, 3, 4))
    write = np.array([0, 5, 6], np.int64) if mode == "circular" else np.array([0, 5, 2], np.int64)
    feeds = {"c": cache, "u": upd, "w": write}
    check_model(one_node_model("TensorScatter", feeds, {"mode": mode}, opset=24), feeds)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (5, 1, 1), (2, 6, 6)])
def test_det(shape, rng):
    x = rand(rng, shape)
    if shape[-1] == 6:
        x[0, 3] = x[0, 1] * 2  # singular
    check_model(one_node_model("Det", {"x": x}), {"x": x}, rtol=1e-4, atol=1e-4)


def test_mel_weight_matrix():
    consts = {"n": np.array(8, np.int64), "d": np.array(64, np.int64), "r": np.array(16000, np.int64),
              "lo": np.array(20.0, np.float32), "hi": np.array(6000.0, np.float32)}  # fmt: skip
    check_model(one_node_model("MelWeightMatrix", {}, consts=consts, opset=17), {})


def test_ml_binarizer_and_feature_extractor(rng):
    from onnx import helper

    nodes = [helper.make_node("Binarizer", ["x"], ["b"], domain="ai.onnx.ml", threshold=0.3),
             helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["f"], domain="ai.onnx.ml")]  # fmt: skip
    g = helper.make_graph(nodes, "ml", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6]),
                                        helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "bf"])  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    feeds = {"x": rand(rng, (4, 6)), "i": np.array([5, 0, 2], np.int64)}
    check_model(model, feeds)


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("grams,skip", [((1, 2), 0), ((2, 3), 2), ((1, 3), 1)])
def test_tfidf_vectorizer(mode, grams, skip, rng):
    x = rng.integers(0, 5, (3, 12)).astype(np.int64)
    pool = [2, 3, 4, 2, 3, 3, 4, 1, 2, 4, 4, 2, 1]  # 3 unigrams, 3 bigrams, 1 trigram (+ a stray token)
    attrs = {"mode": mode, "min_gram_length": grams[0], "max_gram_length": grams[1], "max_skip_count": skip,
             "ngram_counts": [0, 3, 9], "ngram_indexes": [0, 1, 2, 3, 4, 5, 6, 3], "pool_int64s": pool,
             "weights": [0.5, 1.0, 2.0, 0.25, 3.0, 1.5, 0.75]}  # fmt: skip
    check_model(one_node_model("TfIdfVectorizer", {"x": x}, attrs), {"x": x})
    if mode == "TF":  # 1-D input, no weights (the reference evaluator needs weights for IDF and TFIDF)
        unweighted = {k: v for k, v in attrs.items() if k != "weights"}
        check_model(one_node_model("TfIdfVectorizer", {"x": x[0]}, unweighted), {"x": x[0]})
