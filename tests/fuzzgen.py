"""Model generators and oracles for fuzzing tensorforge (tests/test_fuzz.py; `make fuzz` runs them for
minutes through tools/fuzz.py, every batch in its own process so that a crash or a hang is a finding too).

Every case is a function of one integer seed, so any finding reproduces with ``python tools/fuzz.py
--seed N --kind K``:

* ``valid``: a random, valid ONNX model (a chain of ops over a 2-D or 4-D float tensor, with side inputs,
  constants and broadcasting) compiled at -O0 and -O2 and compared with ONNX's reference evaluator on
  fresh random inputs.
* ``mutant``: a valid model with one random mutation (attribute types and values, dims, dtypes, graph
  structure, opset, truncated or flipped bytes). tensorforge must raise a ``TensorforgeError`` or compute
  what a reference computes (ONNX's evaluator or ONNX Runtime, whichever accepts the model): any other
  exception, a wrong answer, or accepting a model both references reject, is a finding.
* ``artifact``: a compiled model saved to a file with one byte changed: loading must raise
  ``ArtifactError`` or run with the original's results.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
KINDS = ("valid", "mutant", "artifact")


class Finding(AssertionError):
    """What a fuzz case found (the message says what and how to reproduce it)."""


# -- valid models ------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.feeds: dict[str, np.ndarray] = {}
        self.n = 0

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def const(self, arr: np.ndarray) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def input(self, shape: tuple[int, ...], low: float = -2.0, high: float = 2.0) -> str:
        n = self.name("in")
        self.inputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)))
        self.feeds[n] = self.rng.uniform(low, high, shape).astype(np.float32)
        return n

    def node(self, op: str, ins: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{out}_node", **attrs))
        return out

    def rand(self, shape, low=-1.0, high=1.0) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(np.float32)


UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Floor", "Ceil", "Sin", "Cos", "Erf", "Softsign", "Selu",
         "Elu", "HardSigmoid", "Softplus", "Identity"]  # fmt: skip
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


def _step(b: _Builder, x: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """One random op applied to ``x`` (of ``shape``); returns the result and its shape."""
    rng = b.rng
    rank = len(shape)
    choice = rng.integers(0, 14) if rank else 0  # a scalar (everything reduced) takes elementwise ops only
    if choice <= 2:
        op = UNARY[rng.integers(0, len(UNARY))]
        attrs = {"alpha": float(rng.uniform(0.05, 0.5))} if op in ("Elu",) else {}
        return b.node(op, [x], **attrs), shape
    if choice <= 4:  # binary with a broadcast operand: a side input or a constant
        bshape = tuple(d if rng.random() < 0.5 else 1 for d in shape)[rng.integers(0, rank + 1) :]
        other = b.input(bshape) if rng.random() < 0.5 else b.const(b.rand(bshape))
        args = [x, other] if rng.random() < 0.5 else [other, x]
        return b.node(BINARY[rng.integers(0, len(BINARY))], args), shape
    if choice == 5:  # a safe division: x / (1 + y^2)
        y = b.const(b.rand(shape))
        den = b.node("Add", [b.node("Mul", [y, y]), b.const(np.ones((), np.float32))])
        return b.node("Div", [x, den]), shape
    if choice == 6:
        axes = sorted(set(rng.integers(0, rank, size=rng.integers(1, rank + 1)).tolist()))
        keep = int(rng.integers(0, 2))
        op = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"][rng.integers(0, 4)]
        out = b.node(op, [x, b.const(np.array(axes, np.int64))], keepdims=keep)
        new = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keep else tuple(
            d for i, d in enumerate(shape) if i not in axes)  # fmt: skip
        return out, new
    if choice == 7:
        axis = int(rng.integers(-rank, rank))
        return b.node(["Softmax", "LogSoftmax"][rng.integers(0, 2)], [x], axis=axis), shape
    if choice == 8:
        perm = [int(p) for p in rng.permutation(rank)]
        return b.node("Transpose", [x], perm=perm), tuple(shape[p] for p in perm)
    if choice == 9:  # flatten to 2-D
        axis = int(rng.integers(0, rank + 1))
        lead = int(np.prod(shape[:axis], dtype=np.int64)) if axis else 1
        return b.node("Flatten", [x], axis=axis), (lead, int(np.prod(shape, dtype=np.int64)) // lead)
    if choice == 10:  # a slice with random bounds and steps
        starts, ends, axes, steps, new = [], [], [], [], list(shape)
        for ax in range(rank):
            if rng.random() < 0.5 or shape[ax] < 2:
                continue
            step = int(rng.choice([1, 1, 2, -1]))
            lo, hi = sorted(rng.integers(0, shape[ax], size=2).tolist())
            hi += 1  # [lo, hi) holds at least one element
            if step > 0:
                starts.append(lo), ends.append(hi)
                new[ax] = len(range(lo, hi, step))
            else:
                starts.append(hi - 1), ends.append(lo - 1 if lo > 0 else -shape[ax] - 1)
                new[ax] = len(range(hi - 1, lo - 1, -1))
            axes.append(ax), steps.append(step)
        if not axes:
            return x, shape
        ins = [x] + [b.const(np.array(v, np.int64)) for v in (starts, ends, axes, steps)]
        return b.node("Slice", ins), tuple(new)
    if choice == 11:  # concat with itself or a side input
        axis = int(rng.integers(0, rank))
        other = b.input(shape) if rng.random() < 0.5 else x
        new = list(shape)
        new[axis] *= 2
        return b.node("Concat", [x, other], axis=axis), tuple(new)
    if choice == 12 and rank >= 2:  # matmul by a constant over the last axis
        n = int(rng.integers(1, 9))
        w = b.const(b.rand((shape[-1], n), -0.5, 0.5))
        return b.node("MatMul", [x, w]), (*shape[:-1], n)
    if choice == 13 and rank == 4:
        return _spatial(b, x, shape)
    return b.node("Relu", [x]), shape


def _spatial(b: _Builder, x: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """A convolution, pooling or batch normalization on an NCHW tensor, with random valid attributes."""
    rng = b.rng
    n, c, h, w = shape
    kind = rng.integers(0, 4)
    k = [int(rng.integers(1, min(3, h) + 1)), int(rng.integers(1, min(3, w) + 1))]
    s = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    p = [int(rng.integers(0, k[0] // 2 + 1)), int(rng.integers(0, k[1] // 2 + 1))] * 2  # windows never all pad
    oh, ow = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    if kind == 0:
        groups = int(rng.choice([g for g in (1, c) if c % g == 0]))
        m = int(rng.integers(1, 5)) * groups
        wt = b.const(b.rand((m, c // groups, *k), -0.5, 0.5))
        bias = b.const(b.rand((m,)))
        return b.node("Conv", [x, wt, bias], kernel_shape=k, strides=s, pads=p, group=groups), (n, m, oh, ow)
    if kind == 1:
        return b.node("MaxPool", [x], kernel_shape=k, strides=s, pads=p), (n, c, oh, ow)
    if kind == 2:
        return b.node("AveragePool", [x], kernel_shape=k, strides=s, pads=p,
                      count_include_pad=int(rng.integers(0, 2))), (n, c, oh, ow)  # fmt: skip
    scale, bias, mean = (b.const(b.rand((c,))) for _ in range(3))
    var = b.const(b.rand((c,), 0.5, 1.5))
    return b.node("BatchNormalization", [x, scale, bias, mean, var], epsilon=1e-5), shape


def valid_model(seed: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A random valid model and inputs for it."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    rank = int(rng.choice([2, 4]))
    shape = tuple(int(d) for d in rng.integers(1, 7, size=rank))
    x = b.input(shape)
    for _ in range(int(rng.integers(1, 9))):
        x, shape = _step(b, x, shape)
        if int(np.prod(shape, dtype=np.int64)) > 20_000:
            break
    y = b.node("Identity", [x])
    graph = helper.make_graph(b.nodes, f"fuzz{seed}", b.inputs,
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(shape))], b.inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model, b.feeds


# -- mutations ---------------------------------------------------------------------------------------
def _mutate_attribute(m: onnx.ModelProto, rng) -> str:
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return _mutate_dims(m, rng)
    node = nodes[rng.integers(0, len(nodes))]
    a = node.attribute[rng.integers(0, len(node.attribute))]
    how = rng.integers(0, 6)
    if how == 0:
        new = helper.make_attribute(a.name, int(rng.choice([0, -1, -7, 2**31, 2**62])))
    elif how == 1:
        new = helper.make_attribute(a.name, float(rng.uniform(-3, 3)))
    elif how == 2:
        new = helper.make_attribute(a.name, str(rng.choice(["1.5", "", "NOTSET", "x"])))
    elif how == 3:
        new = helper.make_attribute(a.name, [int(v) for v in rng.integers(-3, 5, size=rng.integers(0, 6))],
                                    attr_type=onnx.AttributeProto.INTS)  # fmt: skip
    elif how == 4:
        node.attribute.remove(a)
        return f"removed attribute {a.name} of {node.op_type}"
    else:
        node.attribute.append(helper.make_attribute("not_an_attribute", 1))
        return f"added an unknown attribute to {node.op_type}"
    a.CopyFrom(new)
    return f"attribute {a.name} of {node.op_type} -> {new}".replace("\n", " ")


def _mutate_dims(m: onnx.ModelProto, rng) -> str:
    vi = m.graph.input[rng.integers(0, len(m.graph.input))]
    dims = vi.type.tensor_type.shape.dim
    if not dims:
        return "no dims to mutate"
    d = dims[rng.integers(0, len(dims))]
    new = rng.choice([0, -1, -5, 2**40, "sym"])
    if new == "sym":
        d.dim_param = "n"
    else:
        d.dim_value = int(new)
    return f"dim of input {vi.name} -> {new}"


def _mutate_dtype(m: onnx.ModelProto, rng) -> str:
    vi = m.graph.input[rng.integers(0, len(m.graph.input))]
    t = int(rng.choice([TensorProto.INT32, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.STRING,
                        TensorProto.FLOAT16, TensorProto.INT64, 99]))  # fmt: skip
    vi.type.tensor_type.elem_type = t
    return f"dtype of input {vi.name} -> {t}"


def _mutate_structure(m: onnx.ModelProto, rng) -> str:
    g = m.graph
    how = rng.integers(0, 6)
    node = g.node[rng.integers(0, len(g.node))]
    if how == 0 and node.input:
        node.input[rng.integers(0, len(node.input))] = "does_not_exist"
        return f"an input of {node.op_type} renamed to a missing value"
    if how == 1:
        node.input.append(node.output[0])
        return f"{node.op_type} consumes its own output"
    if how == 2 and len(g.node) > 1:
        g.node[0].output[0] = g.node[-1].output[0]
        return "two nodes write the same value"
    if how == 3:
        node.op_type = str(rng.choice(["NoSuchOp", "Conv", "MatMul", "Relu"]))
        return f"op changed to {node.op_type}"
    if how == 4 and g.input:
        g.input.append(g.input[0])
        return "a graph input declared twice"
    m.opset_import[0].version = int(rng.choice([0, 1, 6, 99, -3]))
    return f"opset -> {m.opset_import[0].version}"


def _mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    how = rng.integers(0, 3)
    if how == 0:
        cut = int(rng.integers(0, len(data)))
        return data[:cut], f"truncated to {cut} of {len(data)} bytes"
    buf = bytearray(data)
    if how == 1:
        for _ in range(int(rng.integers(1, 8))):
            buf[rng.integers(0, len(buf))] = int(rng.integers(0, 256))
        return bytes(buf), "random bytes changed"
    return bytes(buf) + os.urandom(int(rng.integers(1, 64))), "garbage appended"


def mutant_model(seed: int) -> tuple[bytes, dict[str, np.ndarray], str]:
    """A valid model with one mutation, as bytes, inputs shaped like the mutated declaration where that
    is possible, and what was mutated."""
    rng = np.random.default_rng(seed)
    model, feeds = valid_model(int(rng.integers(0, 2**31)))
    how = rng.integers(0, 5)
    if how == 4:
        data, what = _mutate_bytes(model.SerializeToString(), rng)
        return data, feeds, what
    what = [_mutate_attribute, _mutate_dims, _mutate_dtype, _mutate_structure][how](model, rng)
    return model.SerializeToString(), _feeds_for(model, feeds, rng), what


def _feeds_for(model: onnx.ModelProto, feeds: dict, rng) -> dict[str, np.ndarray]:
    """Inputs matching the model's (mutated) declared inputs where they are small and concrete."""
    out = {}
    for vi in model.graph.input:
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim]
        if any(d < 0 or d > 4096 for d in dims) or vi.name not in feeds:
            out[vi.name] = feeds.get(vi.name, np.zeros((1,), np.float32))
            continue
        try:
            dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        except Exception:  # noqa: BLE001 - an invalid element type: keep the original input
            out[vi.name] = feeds[vi.name]
            continue
        out[vi.name] = (rng.uniform(-2, 2, dims) if dt.kind == "f" else rng.integers(-2, 3, dims)).astype(dt)
    return out


# -- oracles -----------------------------------------------------------------------------------------
_LEGACY_SOFTMAX = {"Softmax", "LogSoftmax", "Hardmax"}
# "Reduction over an empty set of values yields undefined" (tensorforge: NaN, as numpy; ONNX Runtime: 0)
_EMPTY_UNDEFINED = {"ReduceMean", "GlobalAveragePool", "AveragePool"}


def _reference(model, feeds) -> list[np.ndarray] | None:
    """ONNX's reference evaluator's outputs, or None when it rejects the model or the inputs, or when the
    model uses what the evaluator gets wrong: the softmax family before opset 13 (it ignores their coercion
    of the input into 2-D at ``axis``; ONNX Runtime is the reference there)."""
    from onnx.reference import ReferenceEvaluator

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if opset < 13 and any(n.op_type in _LEGACY_SOFTMAX for n in model.graph.node):
        return None

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return [np.asarray(o) for o in ReferenceEvaluator(model).run(None, feeds)]
    except Exception:  # noqa: BLE001 - any rejection counts as "no reference"
        return None


def _valid(model) -> bool:
    """Whether ONNX's checker (with strict shape inference) accepts the model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return True
    except Exception:  # noqa: BLE001 - any complaint counts as invalid
        return False


def _ort(data: bytes, feeds) -> list[np.ndarray] | None:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in sess.run(None, feeds)]
    except Exception:  # noqa: BLE001 - any rejection counts as "no reference"
        return None


def _close(got, want, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        raise Finding(f"{what}: shape {got.shape}, reference {want.shape}")
    if got.dtype.kind == "f":
        scale = float(np.nanmax(np.abs(want))) if want.size and np.isfinite(want).any() else 1.0
        ok = np.allclose(got, want, rtol=2e-3, atol=2e-4 * max(scale, 1.0), equal_nan=True)
    else:
        ok = np.array_equal(got, want)
    if not ok:
        diff = np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64))) if got.size else 0
        raise Finding(f"{what}: differs from the reference (max abs diff {diff:.3g})")


def _agrees(got: list, refs: list[list], what: str) -> None:
    """``got`` matches one of the references (ONNX's evaluator and ONNX Runtime disagree now and then, e.g.
    on asymmetric pooling pads: each has bugs of its own; matching neither is the finding)."""
    errors = []
    for ref in refs:
        try:
            for i, (g, w) in enumerate(zip(got, ref)):
                _close(g, w, f"{what} output {i}")
            return
        except Finding as e:
            errors.append(str(e))
    raise Finding("; ".join(errors))


def run_case(kind: str, seed: int) -> str:
    """Run one case; returns a one-line description, raises ``Finding`` on a finding."""
    import tensorforge as tfg

    repro = f"(reproduce: python tools/fuzz.py --kind {kind} --seed {seed})"
    if kind == "valid":
        model, feeds = valid_model(seed)
        refs = [r for r in (_reference(model, feeds), _ort(model.SerializeToString(), feeds)) if r is not None]
        if not refs:
            raise Finding(f"the generator made a model both references reject {repro}")
        for level in (0, 2):
            try:
                got = tfg.compile(model, opt_level=level).run(feeds)
            except tfg.TensorforgeError as e:
                raise Finding(f"-O{level} rejected a valid model: {e} {repro}") from e
            _agrees(list(got.values()), refs, f"-O{level} {repro}")
        return f"valid model of {len(model.graph.node)} nodes agrees at -O0 and -O2"
    if kind == "mutant":
        data, feeds, what = mutant_model(seed)
        try:
            m = tfg.compile(data)
            got = m.run(feeds)
        except tfg.TensorforgeError:
            return f"{what}: a clear error"
        except Exception as e:  # noqa: BLE001 - the finding itself
            raise Finding(f"{what}: raw {type(e).__name__}: {e} {repro}") from e
        try:
            model = onnx.load_from_string(data)
        except Exception:  # noqa: BLE001
            model = None
        if model is not None and any(np.asarray(v).size == 0 for v in feeds.values()) and any(
                n.op_type in _EMPTY_UNDEFINED for n in model.graph.node):  # fmt: skip
            return f"{what}: accepted; ONNX leaves the mean of an empty set undefined"
        refs = [r for r in (_reference(model, feeds) if model is not None else None, _ort(data, feeds)) if r]
        if not refs:
            if all(np.asarray(g).size == 0 for g in got.values()):
                return f"{what}: accepted, empty results (the references refuse empty tensors)"
            if model is not None and _valid(model):  # e.g. Ceil-1: valid ONNX that ONNX Runtime does not implement
                return f"{what}: accepted a valid model neither reference runs"
            raise Finding(f"{what}: accepted and run, but both references reject it {repro}")
        _agrees(list(got.values()), refs, f"{what}: {repro}")
        return f"{what}: accepted, results agree"
    if kind == "artifact":
        model, feeds = valid_model(seed)
        m = tfg.compile(model)
        want = m.run(feeds)
        rng = np.random.default_rng(seed)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.tfa")
            m.save(path)
            data = bytearray(open(path, "rb").read())
            at = int(rng.integers(0, len(data)))
            data[at] ^= 1 << int(rng.integers(0, 8))
            with open(path, "wb") as f:
                f.write(bytes(data))
            try:
                got = tfg.load(path).run(feeds)
            except tfg.ArtifactError:
                return f"byte {at} of {len(data)} changed: ArtifactError"
            except Exception as e:  # noqa: BLE001 - the finding itself
                raise Finding(f"byte {at} changed: raw {type(e).__name__}: {e} {repro}") from e
        for name, g in got.items():
            _close(g, want[name], f"byte {at} of {len(data)} changed, loaded anyway: output {name} {repro}")
        return f"byte {at} changed in padding: loaded, results unchanged"
    raise ValueError(f"unknown fuzz kind {kind!r}; kinds: {', '.join(KINDS)}")
