"""Bad models never crash and are never silently accepted: attributes of the wrong kind or value, opsets
outside the implemented range, negative or duplicate declarations, truncated files and tensors too large
to exist each raise a tensorforge error naming the model, the node, the op and what was expected."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.defs
import pytest
from onnx import TensorProto, helper, numpy_helper

import tensorforge as tfg
from tensorforge.codegen.targets import get_target
from tensorforge.compiler import Build, Options, to_graph
from tensorforge.errors import InvalidAttributeError, MemoryLimitError
from tensorforge.examples import mlp
from tensorforge.ir.graph import Graph, Node, TensorType, Value
from tensorforge.ir.limits import DEFAULT_MAX_FOLD_BYTES, max_fold_bytes
from tensorforge.ir.parser import parse_graph
from tensorforge.ops.registry import all_ops, infer_node
from tensorforge.passes.cse import cse
from tensorforge.passes.fold import fold

F = TensorProto.FLOAT


def model(nodes, inputs=(), inits=(), outputs=("y",), opset=18, name="m", opsets=None) -> onnx.ModelProto:
    """A model from nodes, ``inputs`` as (name, shape) float inputs, initializers as (name, array); no
    onnx shape inference (it rejects, or aborts on, the very models these tests feed tensorforge)."""
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
                          [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
                          [numpy_helper.from_array(np.asarray(a), n) for n, a in inits])  # fmt: skip
    return helper.make_model(g, opset_imports=opsets or [helper.make_opsetid("", opset)])


def one(op, attrs, inputs=(("x", [1, 3, 8, 8]),), inits=(), **kw) -> onnx.ModelProto:
    ins = [n for n, _ in inputs] + [n for n, _ in inits]
    return model([helper.make_node(op, ins, ["y"], name="n1", **attrs)], inputs, inits, **kw)


W = ("w", np.ones((4, 3, 3, 3), np.float32))


# -- attributes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, attrs, inits, expected", [
    ("Conv", {"pads": 1}, [W], r"attribute 'pads' must be a list of ints, got the int 1"),
    ("Conv", {"strides": "ab"}, [W], r"attribute 'strides' must be a list of ints, got the string 'ab'"),
    ("Conv", {"group": 0}, [W], r"attribute 'group' must be >= 1, got the int 0"),
    ("Conv", {"strides": [0, 1]}, [W], r"attribute 'strides' must be >= 1, got the list \[0, 1\]"),
    ("Conv", {"dilations": [1, -2]}, [W], r"attribute 'dilations' must be >= 1"),
    ("Conv", {"pads": [0, 0, -1, 0]}, [W], r"attribute 'pads' must be >= 0"),
    ("Conv", {"kernel_shape": [0, 3]}, [W], r"attribute 'kernel_shape' must be >= 1"),
    ("Conv", {"auto_pad": "SAME"}, [W], r"attribute 'auto_pad' must be one of 'NOTSET', .*got the string 'SAME'"),
    ("Conv", {"stride": [2, 2]}, [W], r"Conv \(opset 18\) has no attribute 'stride'; its attributes are: auto"),
    ("MaxPool", {"kernel_shape": [1.5, 2.0]}, [], r"attribute 'kernel_shape' must be a list of ints, got the list"),
    ("MaxPool", {"kernel_shape": [2, 2], "ceil_mode": 2}, [], r"attribute 'ceil_mode' must be one of 0, 1"),
    ("Softmax", {"axis": "1.5"}, [], r"attribute 'axis' must be an int, got the string '1.5'"),
    ("Softmax", {"axis": 1.5}, [], r"attribute 'axis' must be an int, got the float 1.5"),
    ("Flatten", {"axis": [1, 2]}, [], r"attribute 'axis' must be an int, got the list \[1, 2\]"),
    ("LeakyRelu", {"alpha": "x"}, [], r"attribute 'alpha' must be a float, got the string 'x'"),
    ("Concat", {}, [], r"required attribute\(s\) 'axis' missing"),
    ("DepthToSpace", {"blocksize": 0}, [], r"attribute 'blocksize' must be >= 1"),
    ("LpPool", {"kernel_shape": [2, 2], "p": 0}, [], r"attribute 'p' must be >= 1, got the int 0"),
    ("EyeLike", {"dtype": 0}, [], r"attribute 'dtype' must be an ONNX element type"),
])  # fmt: skip
def test_bad_attribute_names_model_node_op_and_values(op, attrs, inits, expected):
    inputs = [("x", [3, 3])] if op == "EyeLike" else [("x", [1, 3, 8, 8])]
    with pytest.raises(InvalidAttributeError, match=rf"model 'm', node 'n1' \({op}\): {expected}"):
        to_graph(one(op, attrs, inputs, inits))


def test_attribute_errors_are_shape_errors_never_deferred():
    # a symbolic batch dim defers shape errors until the shape is known; an attribute error cannot wait
    m = one("Conv", {"group": 0}, [("x", ["N", 3, 8, 8])], [W])
    with pytest.raises(tfg.ShapeError, match="'group' must be >= 1"):
        to_graph(m)


def test_an_int_where_a_float_belongs_is_exact_and_accepted():
    g = to_graph(one("LeakyRelu", {"alpha": 1}, [("x", [2])]))
    assert g.nodes[0].attrs["alpha"] == 1


def test_graphs_built_in_python_are_checked_too():
    x = Value("x", TensorType(tfg.DType.F32, (2, 3)))
    with pytest.raises(InvalidAttributeError, match=r"node 's' \(Softmax\): attribute 'axis' must be an int"):
        infer_node(Node("Softmax", (x,), (Value("y"),), {"axis": "1"}, "s"), "g")
    (t,) = infer_node(Node("Softmax", (x,), (Value("y"),), {"axis": np.int64(1)}, "s"), "g")  # numpy ints are ints
    assert t.shape == (2, 3)


def test_declared_kinds_agree_with_the_onnx_schemas():
    kinds = {onnx.defs.OpSchema.AttrType.INT: "int", onnx.defs.OpSchema.AttrType.FLOAT: "float",
             onnx.defs.OpSchema.AttrType.STRING: "str", onnx.defs.OpSchema.AttrType.INTS: "ints",
             onnx.defs.OpSchema.AttrType.FLOATS: "floats", onnx.defs.OpSchema.AttrType.STRINGS: "strs",
             onnx.defs.OpSchema.AttrType.TENSOR: "tensor"}  # fmt: skip
    for name, op in all_ops().items():
        try:
            schema = onnx.defs.get_schema(name, 28, "")
        except onnx.defs.SchemaError:
            continue
        for attr, spec in op.specs.items():
            if attr in schema.attributes and spec.kind not in (None, "dtype"):
                assert spec.kind == kinds[schema.attributes[attr].type], (name, attr)


# -- opsets, declarations, files -------------------------------------------------------------------
@pytest.mark.parametrize("opsets, expected", [
    ([helper.make_opsetid("", 99)], r"model 'm' imports opset 99 of the default ONNX domain; tensorforge implements "
                                    r"opsets 1 to 28"),
    ([helper.make_opsetid("", 0)], r"imports opset 0 of the default ONNX domain"),
    ([helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 9)], r"opset 9 of domain 'ai.onnx.ml'.* 1 to 5"),
])  # fmt: skip
def test_opsets_outside_the_implemented_range(opsets, expected):
    with pytest.raises(tfg.UnsupportedError, match=expected):
        to_graph(one("Relu", {}, [("x", [2])], opsets=opsets))


def test_a_model_without_opsets_is_refused():
    m = one("Relu", {}, [("x", [2])])
    del m.opset_import[:]
    with pytest.raises(tfg.ModelLoadError, match="declares no opset"):
        to_graph(m)


def test_negative_declared_dim():
    with pytest.raises(tfg.ModelLoadError, match=r"model 'm': input 'x' declares dim 1 as -4; dims must be >= 0"):
        to_graph(one("Relu", {}, [("x", [2, -4])]))


def test_duplicate_graph_input_and_output_names():
    m = model([helper.make_node("Add", ["x", "x"], ["y"])], [("x", [2]), ("x", [2])])
    with pytest.raises(tfg.ModelLoadError, match=r"model 'm': graph inputs 0 and 1 are both named 'x'"):
        to_graph(m)
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2])], outputs=("y", "y"))
    with pytest.raises(tfg.ModelLoadError, match=r"graph outputs 0 and 1 are both named 'y'"):
        to_graph(m)


def test_every_truncation_is_a_model_load_error():
    data = one("Conv", {"pads": [1, 1, 1, 1]}, inits=[W]).SerializeToString()
    big = mlp().SerializeToString()
    cuts = [(data, n) for n in range(len(data))]
    cuts += [(big, n) for n in np.random.default_rng(0).integers(0, len(big), 40)]
    for blob, n in cuts:
        with pytest.raises(tfg.ModelLoadError):
            to_graph(blob[:n])


def test_a_directory_is_not_a_model(tmp_path):
    with pytest.raises(tfg.ModelLoadError, match="cannot be read: Is a directory"):
        to_graph(str(tmp_path))


# -- inputs ----------------------------------------------------------------------------------------
def test_run_takes_a_dict():
    for m in (tfg.compile(mlp()), tfg.compile(mlp(batch="N"))):
        with pytest.raises(tfg.InputError, match=r"model 'mlp': run\(\) takes a dict \{input name: array\}, got list"):
            m.run([np.zeros((1, 784), np.float32)])


@pytest.mark.parametrize("shapes, expected", [
    ({"y": [1, 784]}, r"input shapes given for unknown input\(s\) \['y'\]; inputs are \['x'\]"),
    ({"x": [-1, 784]}, r"input 'x' is given shape \[-1, 784\]; dims must be >= 0"),
    ({"x": [2, 784]}, r"input 'x' has shape \[2, 784\], expected \[1, 784\]"),  # a fixed input: checked too
])  # fmt: skip
def test_input_shapes_are_checked_never_ignored(shapes, expected):
    with pytest.raises(tfg.InputError, match=expected):
        Build(mlp(), get_target(None), Options(input_shapes=shapes)).run("specialize")


# -- memory ----------------------------------------------------------------------------------------
def _init(name, arr):
    return name, np.asarray(arr)


def test_a_tensor_larger_than_memory_is_refused_from_its_type():
    big = [_init("s", np.array([1 << 20, 1 << 20], np.int64))]
    m = model([helper.make_node("ConstantOfShape", ["s"], ["y"], name="cos")], inits=big)
    with pytest.raises(MemoryLimitError, match=r"model 'm', node 'cos' \(ConstantOfShape\): output 'y' f32\[1048576,"
                                               r"1048576\] needs 4.0 TiB, more than this machine's memory"):
        to_graph(m)
    with pytest.raises(MemoryLimitError, match=r"model 'm': input 'x' f32\[1099511627776\] needs 4.0 TiB"):
        to_graph(one("Relu", {}, [("x", [1 << 40])]))


BOMBS = {  # a few bytes of ONNX for a 4 MiB constant (a gigabyte with bigger numbers)
    "Expand": ([helper.make_node("Expand", ["one", "s"], ["y"])], [_init("one", np.ones(1, np.float32))]),
    "Tile": ([helper.make_node("Tile", ["one", "s"], ["y"])], [_init("one", np.ones((1, 1), np.float32))]),
    "Range": ([helper.make_node("Range", ["a", "b", "d"], ["y"])],
              [_init("a", np.int64(0)), _init("b", np.int64(1 << 19)), _init("d", np.int64(1))]),
}  # fmt: skip


@pytest.mark.parametrize("op", sorted(BOMBS))
def test_folding_stops_at_the_fold_budget(op, monkeypatch):
    nodes, inits = BOMBS[op]
    m = model(nodes, inits=[*inits, _init("s", np.array([1024, 1024], np.int64))])
    monkeypatch.setenv("TENSORFORGE_MAX_FOLD_BYTES", str(1 << 20))
    g = fold(to_graph(m), {})
    assert not g.outputs[0].is_const and g.nodes, f"{op} was folded into a constant over the budget"
    monkeypatch.delenv("TENSORFORGE_MAX_FOLD_BYTES")
    assert max_fold_bytes() == DEFAULT_MAX_FOLD_BYTES
    assert fold(to_graph(m), {}).outputs[0].is_const  # under the default budget it folds


def test_folding_never_materializes_a_broadcast(monkeypatch):
    # ConstantOfShape folds at any size to one stored element (light_vgg19 makes its 411 MB fc1 weight
    # so); an Add over it would store all of them
    monkeypatch.setenv("TENSORFORGE_MAX_FOLD_BYTES", str(1 << 20))
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c"]), helper.make_node("Add", ["c", "one"], ["y"])]
    inits = [_init("s", np.array([1 << 14, 1 << 14], np.int64)), _init("one", np.ones(1, np.float32))]
    g = fold(to_graph(model(nodes, inits=inits)), {})
    assert [n.op for n in g.nodes] == ["Add"] and g.nodes[0].inputs[0].const.strides == (0, 0)
    program = Build(g, get_target(None), Options()).run("lower").program  # nor does lowering
    assert sum(c.nbytes for c in program.consts) < 64


def test_a_large_weight_still_folds(monkeypatch):
    w = np.arange(1 << 19, dtype=np.float32).reshape(512, 1024)  # 2 MiB: preprocessing a weight adds nothing new
    monkeypatch.setenv("TENSORFORGE_MAX_FOLD_BYTES", str(1 << 20))
    g = fold(to_graph(model([helper.make_node("Transpose", ["w"], ["y"])], inits=[_init("w", w)])), {})
    np.testing.assert_array_equal(g.outputs[0].const, w.T)


def test_fold_budget_must_be_a_number(monkeypatch):
    monkeypatch.setenv("TENSORFORGE_MAX_FOLD_BYTES", "lots")
    with pytest.raises(tfg.TensorforgeError, match="TENSORFORGE_MAX_FOLD_BYTES must be a number of bytes"):
        max_fold_bytes()


def test_cse_hashes_broadcast_constants_without_materializing_them():
    huge = (1 << 18, 1 << 16)  # 64 GiB if materialized
    a, b = (Value(n, const=np.broadcast_to(np.float32(2), huge)) for n in ("a", "b"))
    x = Value("x", TensorType(tfg.DType.F32, (1, 1)))
    outs = [Value(n, TensorType(tfg.DType.F32, huge)) for n in ("p", "q")]
    g = Graph([Node("Mul", (x, a), (outs[0],), {}, "p"), Node("Mul", (x, b), (outs[1],), {}, "q")], [x], outs)
    assert len(cse(g, {}).nodes) == 1


def test_a_constant_of_shape_left_unfolded_prints_and_parses_back():
    text = ("graph g() -> (%y: f32[2,3]) {\n"
            "  %y: f32[2,3] = ConstantOfShape(%s=const i64[2] [2, 3]) {value=const f32[1] [1.5]}\n}")  # fmt: skip
    g = parse_graph(text)
    assert str(g) == text and g.nodes[0].attrs["value"].tolist() == [1.5]


def test_all_tensors_at_once_must_fit(monkeypatch):
    monkeypatch.setattr("tensorforge.ir.limits.memory_bytes", lambda: 3 << 19)  # 1.5 MiB: each 1 MiB tensor fits
    m = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])], [("x", [256, 1024])])
    with pytest.raises(MemoryLimitError, match=r"model 'm': running it \(weights, intermediates, inputs and outputs\)"):
        Build(m, get_target(None), Options()).run("lower")


def test_declared_output_dtype_must_match():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [("x", [2, 3])])
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(tfg.ShapeError, match=r"model 'm': graph output 'y' is declared f64 but computes f32"):
        tfg.compile(m)


def test_input_count_follows_the_opset():
    axes = ("axes", np.array([1], np.int64))
    with pytest.raises(tfg.ModelLoadError, match=r"ReduceMean \(opset 13\) takes 1 inputs, the node has 2"):
        tfg.compile(one("ReduceMean", {}, inputs=(("x", [2, 3]),), inits=(axes,), opset=13))
    assert tfg.compile(one("ReduceMean", {}, inputs=(("x", [2, 3]),), inits=(axes,), opset=18))


def test_empty_window_lists_are_not_the_default():
    m = one("MaxPool", {"kernel_shape": [2, 2]})
    m.graph.node[0].attribute.append(helper.make_attribute("strides", [], attr_type=onnx.AttributeProto.INTS))
    with pytest.raises(tfg.ShapeError, match=r"strides/dilations/pads do not match 2 spatial dims"):
        tfg.compile(m)


def test_old_opsets_do_not_broadcast():
    """Before opset 7 (Add ... Pow without broadcast=1) and 8 (Max, Min, Sum, Mean) inputs must have equal
    shapes; numpy-style broadcasting there would run a model ONNX Runtime refuses."""
    two = (("a", [2, 3]), ("b", [3]))
    with pytest.raises(tfg.ShapeError, match=r"without broadcast=1 the shapes must be equal"):
        tfg.compile(one("Add", {}, inputs=two, opset=6))
    assert tfg.compile(one("Add", {"broadcast": 1}, inputs=two, opset=6))
    with pytest.raises(tfg.ShapeError, match=r"Max broadcasts its inputs only from opset 8 on"):
        tfg.compile(one("Max", {}, inputs=two, opset=6))
    assert tfg.compile(one("Max", {}, inputs=two, opset=8))


def test_an_op_newer_than_the_models_opset_is_refused():
    """Found by fuzzing: Sin exists from opset 7 on; an opset-1 model that uses it is invalid (ONNX Runtime
    and the reference evaluator refuse it)."""
    with pytest.raises(tfg.ModelLoadError, match=r"Sin does not exist at opset 6 .*added in opset 7"):
        tfg.compile(one("Sin", {}, inputs=(("x", [2, 3]),), opset=6))
    assert tfg.compile(one("Sin", {}, inputs=(("x", [2, 3]),), opset=7))


def test_names_must_be_utf8_text():
    """Found by fuzzing: protobuf hands out the raw bytes of a text field that is not UTF-8."""
    m = one("Relu", {}, inputs=(("x", [2, 3]),))
    m.graph.node[0].name = "relu"
    data = m.SerializeToString().replace(b"relu", b"re\xadu")
    with pytest.raises(tfg.ModelLoadError, match=r"graph.node\[0\].name \('re.u'\) is not UTF-8 text"):
        tfg.compile(data)
