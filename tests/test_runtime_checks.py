"""Run-time index checks (lower/checks.py): an index out of range raises DataError naming the model, node, op,
value, position and valid range — in compiled, loaded, dynamic and training code — where it was clamped
before; valid indices (negative ones included) still give exactly the reference's result."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from helpers import check_model, one_node_model, reference
from tensorforge.examples import mlp


def _case(name, rng):
    """(model, feeds, index input, [(position, bad value, message after the node context)])."""
    i64 = np.int64
    if name == "Gather":
        x, i = rng.standard_normal((5, 6, 7)).astype(np.float32), rng.integers(-6, 6, (2, 3)).astype(i64)
        feeds = {"x": x, "i": i}
        return one_node_model("Gather", feeds, {"axis": 1}), feeds, "i", [
            ((1, 2), 6, "index 6 at indices[1, 2] is out of range [-6, 5] (axis 1 of the data has 6 entries)"),
            ((0, 0), -7, "index -7 at indices[0, 0] is out of range [-6, 5] (axis 1 of the data has 6 entries)")]
    if name == "GatherElements":
        x, i = rng.standard_normal((4, 5)).astype(np.float32), rng.integers(-5, 5, (4, 3)).astype(np.int32)
        feeds = {"x": x, "i": i}
        return one_node_model("GatherElements", feeds, {"axis": 1}), feeds, "i", [
            ((2, 0), 5, "index 5 at indices[2, 0] is out of range [-5, 4] (axis 1 of the data has 5 entries)")]
    if name == "GatherND":
        x = rng.standard_normal((4, 5, 3)).astype(np.float32)
        i = np.stack([rng.integers(-4, 4, 6), rng.integers(-5, 5, 6)], -1).astype(i64)
        feeds = {"x": x, "i": i}
        return one_node_model("GatherND", feeds), feeds, "i", [
            ((3, 1), 5, "index 5 at indices[3, 1] is out of range [-5, 4] (axis 1 of the data has 5 entries)"),
            ((4, 0), -5, "index -5 at indices[4, 0] is out of range [-4, 3] (axis 0 of the data has 4 entries)")]
    if name == "ScatterElements":
        d, u = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((3, 5)).astype(np.float32)
        i = rng.integers(-4, 4, (3, 5)).astype(i64)
        feeds = {"d": d, "i": i, "u": u}
        return one_node_model("ScatterElements", feeds, {"axis": 0, "reduction": "add"}), feeds, "i", [
            ((1, 1), 4, "index 4 at indices[1, 1] is out of range [-4, 3] (axis 0 of the data has 4 entries)")]
    if name == "ScatterND":
        d, u = rng.standard_normal((4, 5, 3)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32)
        i = np.array([[rng.integers(-4, 0), rng.integers(0, 5)], [rng.integers(0, 4), rng.integers(-5, 0)]], i64)
        feeds = {"d": d, "i": i, "u": u}
        return one_node_model("ScatterND", feeds), feeds, "i", [
            ((0, 0), -5, "index -5 at indices[0, 0] is out of range [-4, 3] (axis 0 of the data has 4 entries)")]
    if name == "MaxUnpool":
        x = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
        i = (np.arange(8).reshape(1, 2, 2, 2) * 4 + rng.integers(0, 4, (1, 2, 2, 2))).astype(i64)
        feeds = {"x": x, "i": i}
        return one_node_model("MaxUnpool", feeds, {"kernel_shape": [2, 2], "strides": [2, 2]}), feeds, "i", [
            ((0, 1, 1, 0), 32, "index 32 at I[0, 1, 1, 0] is out of range [0, 31] (the unpooled tensor "
                               "[1, 2, 4, 4] has 32 elements)"),
            ((0, 0, 0, 0), -1, "index -1 at I[0, 0, 0, 0] is out of range [0, 31] (the unpooled tensor "
                               "[1, 2, 4, 4] has 32 elements)")]  # fmt: skip
    if name == "ReverseSequence":
        x, lens = rng.standard_normal((5, 3, 2)).astype(np.float32), rng.integers(0, 6, 3).astype(i64)
        feeds = {"x": x, "l": lens}
        return one_node_model("ReverseSequence", feeds, {"time_axis": 0, "batch_axis": 1}), feeds, "l", [
            ((2,), 6, "sequence length 6 at sequence_lens[2] is out of range [0, 5] (time axis 0 has 5 steps)"),
            ((0,), -1, "sequence length -1 at sequence_lens[0] is out of range [0, 5] (time axis 0 has 5 steps)")]
    assert name == "TensorScatter"
    c, u = rng.standard_normal((2, 2, 8, 4)).astype(np.float32), rng.standard_normal((2, 2, 3, 4)).astype(np.float32)
    feeds = {"c": c, "u": u, "w": rng.integers(0, 6, 2).astype(i64)}
    return one_node_model("TensorScatter", feeds, opset=24), feeds, "w", [
        ((1,), 6, "write index 6 at write_indices[1] is out of range [0, 5] (the update's 3 steps must fit in the "
                  "cache's 8 along axis 2)")]  # fmt: skip


CASES = ["Gather", "GatherElements", "GatherND", "ScatterElements", "ScatterND", "MaxUnpool", "ReverseSequence",
         "TensorScatter"]  # fmt: skip


def _raises(m, feeds, message):
    with pytest.raises(tfg.DataError) as e:
        m.run(feeds)
    assert str(e.value) == message
    return e.value


@pytest.mark.parametrize("op", CASES)
def test_index_out_of_range_raises(op, rng):
    model, feeds, name, bad = _case(op, rng)
    m = check_model(model, feeds)  # valid (negative included) indices: exactly the reference
    context = f"model '{op.lower()}_test', node '{op.lower()}_node' ({op}): "
    for pos, value, message in bad:
        wrong = dict(feeds)
        wrong[name] = feeds[name].copy()
        wrong[name][pos] = value
        e = _raises(m, wrong, context + message)
        assert isinstance(e, tfg.InputError)
    again = m.run(feeds)  # a failed call leaves nothing behind
    for got, want in zip(again.values(), reference(model, feeds)):
        np.testing.assert_array_equal(got, want)
    assert len(m.program.checks) == 1 and len(m.program.check_kernels) == 1


def test_the_first_bad_index_in_order_is_reported(rng):
    model, feeds, _, _ = _case("Gather", rng)
    m = tfg.compile(model)
    feeds["i"][0, 1], feeds["i"][1, 0] = 100, -100
    _raises(m, feeds, "model 'gather_test', node 'gather_node' (Gather): index 100 at indices[0, 1] is out of range "
                      "[-6, 5] (axis 1 of the data has 6 entries)")  # fmt: skip


def _computed_index_model():
    """Gather with indices computed from the input (i + 1 -> Cast): the check reads the computed values, and the
    Add/Cast fuse into the gather's loop."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 4])
    i = helper.make_tensor_value_info("i", TensorProto.INT32, [3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 8, 4])
    one = numpy_helper.from_array(np.array(1, np.int32), "one")
    nodes = [helper.make_node("Add", ["i", "one"], ["j"], name="plus1"),
             helper.make_node("Cast", ["j"], ["k"], name="widen", to=TensorProto.INT64),
             helper.make_node("Gather", ["x", "k"], ["y"], name="lookup")]  # fmt: skip
    g = helper.make_graph(nodes, "computed", [x, i], [y], [one])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_computed_indices_are_checked(rng):
    m = tfg.compile(_computed_index_model())
    x = rng.standard_normal((10, 4)).astype(np.float32)
    i = rng.integers(-11, 9, (3, 8)).astype(np.int32)
    np.testing.assert_array_equal(m(x, i), x[i + 1])
    i[2, 5] = 9
    with pytest.raises(tfg.DataError, match=re.escape("node 'lookup' (Gather): index 10 at indices[2, 5] is out of "
                                                      "range [-10, 9]")):  # fmt: skip
        m(x, i)


def test_a_saved_artifact_reports_the_same_error(tmp_path, rng):
    model, feeds, name, bad = _case("GatherND", rng)
    m = tfg.compile(model)
    m.save(str(tmp_path / "g.tfa"))
    loaded = tfg.load(str(tmp_path / "g.tfa"))
    np.testing.assert_array_equal(loaded.run(feeds)["y0"], m.run(feeds)["y0"])
    for pos, value, message in bad:
        wrong = {**feeds, name: feeds[name].copy()}
        wrong[name][pos] = value
        want = _raises(m, wrong, "model 'gathernd_test', node 'gathernd_node' (GatherND): " + message)
        _raises(loaded, wrong, str(want))


def test_profiling_reports_the_error(rng):
    model, feeds, name, bad = _case("Gather", rng)
    m = tfg.compile(model)
    feeds[name][bad[0][0]] = bad[0][1]
    with pytest.raises(tfg.DataError, match="index 6 at indices"):
        m.profile(feeds, repeat=2, warmup=0)


def test_constant_indices_are_checked_when_compiling(rng):
    x = rng.standard_normal((5, 6)).astype(np.float32)
    for ind in (np.array([[0, 7]], np.int64), np.array(-6, np.int64)):  # a tensor, and a scalar (a view)
        with pytest.raises(tfg.ShapeError, match=re.escape("node 'gather_node' (Gather): index")):
            tfg.compile(one_node_model("Gather", {"x": x}, {"axis": 0}, consts={"i": ind}))
    m = tfg.compile(one_node_model("Gather", {"x": x}, {"axis": 1}, consts={"i": np.array([-6, 5], np.int64)}))
    assert not m.program.checks  # checked already: no run-time check
    np.testing.assert_array_equal(m(x), x[:, [0, 5]])


def test_models_without_indices_check_nothing():
    m = tfg.compile(mlp())
    assert m.program.status_offset == -1 and not m.program.check_kernels
    assert all("check" not in k.name for k in m.program.kernels)


def test_the_check_is_one_vector_pass(rng):
    x, i = rng.standard_normal((50, 3)).astype(np.float32), rng.integers(-50, 50, (4, 16))
    m = tfg.compile(one_node_model("Gather", {"x": x, "i": i}))
    check = m.program.kernels[m.program.check_kernels[0]]
    assert "vector(" in str(check) and "min(lo" in str(check) and "max(hi" in str(check)


def test_onehot_out_of_range_is_all_off(rng):
    """OneHot's spec: an index outside [-depth, depth - 1] gives a row of off values (not an error)."""
    ind = np.array([[0, 3, -4, 4], [-5, 7, 2, -1]], np.int64)
    vals = np.array([-1.5, 2.5], np.float32)
    feeds = {"i": ind}
    m = check_model(one_node_model("OneHot", feeds, consts={"d": np.array(4, np.int64), "v": vals}), feeds)
    out = m(ind)
    assert (out[0, 3] == -1.5).all() and (out[1, 0] == -1.5).all() and (out[1, 1] == -1.5).all()
    assert not m.program.checks


def _symbolic_gather():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 4])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4])
    g = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], name="emb")], "dyn", [x, i], [y])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_dynamic_model_reports_the_error(rng):
    m = tfg.compile(_symbolic_gather())
    assert isinstance(m, tfg.DynamicModel)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    i = rng.integers(-10, 10, (5, 3))
    np.testing.assert_array_equal(m(x, i), x[i])
    i[4, 2] = 12
    with pytest.raises(tfg.DataError, match=re.escape("model 'dyn', node 'emb' (Gather): index 12 at indices[4, 2] "
                                                      "is out of range [-10, 9]")):  # fmt: skip
        m(x, i)


def _embedding_classifier(vocab=20, dim=8, seq=5, classes=3):
    rng = np.random.default_rng(1)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", seq])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    inits = [numpy_helper.from_array(rng.standard_normal((vocab, dim)).astype(np.float32), "table"),
             numpy_helper.from_array(rng.standard_normal((dim, classes)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([1], np.int64), "ax")]  # fmt: skip
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("ReduceMean", ["e", "ax"], ["m"], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"])]  # fmt: skip
    g = helper.make_graph(nodes, "embclf", [ids], [out], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_a_training_step_reports_the_error_and_changes_nothing(rng):
    step = tfg.training_step(_embedding_classifier(), optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9), tiered=False)
    ids = rng.integers(-20, 20, (4, 5))
    y = rng.integers(0, 3, 4)
    step(ids, y)
    prog = next(iter(step._variants.values())).prog
    assert len(prog.program.checks) == 1  # the gradient's scatter reuses the gather's check
    before = step.state_dict()
    ids[3, 4] = 20
    with pytest.raises(tfg.DataError, match=re.escape("node 'embed' (Gather): index 20 at indices[3, 4] is out of "
                                                      "range [-20, 19]")):  # fmt: skip
        step(ids, y)
    after = step.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert step.steps == 1
