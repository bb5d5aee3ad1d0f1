"""The scalar-op table (ir/scalar_ops.py) and everything that reads it: the kernel-IR nodes and printer, the
vectorizer's reductions, the LLVM emitters and the op-body handlers (one protocol, ScalarHandler).

Compiled kernels are checked against the table's numpy semantics on fresh random inputs (with NaN, infinities
and signed zeros where the op is exact), in vector loops whose remainder runs scalar or masked."""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import pytest

from tensorforge.codegen.emit import build_kernel_module
from tensorforge.codegen.llvm import scalar_ops as llvm_ops
from tensorforge.codegen.targets import host
from tensorforge.errors import UnsupportedError
from tensorforge.ir.dtype import DType
from tensorforge.ir.scalar_ops import SCALAR_OPS, VOCABULARY, Kind
from tensorforge.lower import kir as K
from tensorforge.lower.elementwise import KIR
from tensorforge.lower.printer import format_expr
from tensorforge.lower.vectorize import identity
from tensorforge.ops.dual import Dual, DualHandler
from tensorforge.ops.handler import NUMPY, NumpyHandler, ScalarHandler
from tensorforge.runtime.jit import NativeCode, jit

F32, F64, I32, I64, U8, BOOL = DType.F32, DType.F64, DType.I32, DType.I64, DType.U8, DType.BOOL
N = 37  # a vector loop of 8 lanes: 4 vector iterations and a remainder of 5

# -- the table --------------------------------------------------------------------------------------


def test_every_op_has_every_facet():
    for name, op in SCALAR_OPS.items():
        assert op.name == name
        operands = ["a", "b"][: op.kind.arity]
        text = op.format(*operands)
        assert text == (f"(a {op.symbol} b)" if op.symbol else f"{name}({', '.join(operands)})")
        assert callable(op.numpy), name
        assert name in llvm_ops.EMITTERS, f"no LLVM emitter for {name}"
        assert op.result_dtype(F32) is (BOOL if op.predicate else F32)
        if op.kind is Kind.COMPARE:
            assert op.predicate and op.symbol
        if op.reducible:
            assert op.kind is Kind.BINARY and name in llvm_ops.REDUCTIONS
    llvm_ops.check_complete()


def test_missing_llvm_emitter_fails_loudly(monkeypatch):
    monkeypatch.delitem(llvm_ops.EMITTERS, "erf")
    with pytest.raises(RuntimeError, match="no LLVM emitter for scalar op 'erf'"):
        llvm_ops.check_complete()
    monkeypatch.delitem(llvm_ops.REDUCTIONS, "max")
    with pytest.raises(RuntimeError, match="no horizontal reduction with 'max'"):
        llvm_ops.check_complete()


def test_nodes_printer_and_builders_read_the_table():
    x, y = K.Var("x", F32), K.Var("y", F32)
    assert K.binop("add", x, y).dtype is F32
    assert K.cmp("lt", x, y).dtype is BOOL
    assert K.unop("isnan", x).dtype is BOOL and K.unop("exp", x).dtype is F32
    assert format_expr(K.binop("add", x, y)) == "(x + y)"
    assert format_expr(K.binop("max", x, y)) == "max(x, y)"
    assert format_expr(K.cmp("ne", x, y)) == "(x != y)"
    assert format_expr(K.unop("rsqrt", x)) == "rsqrt(x)"
    for build, bad, kind in ((K.binop, "lt", "binary op"), (K.cmp, "add", "comparison")):
        with pytest.raises(ValueError, match=f"unknown {kind} {bad}"):
            build(bad, x, y)
    with pytest.raises(ValueError, match="unknown unary op add"):
        K.unop("add", x)


@pytest.mark.parametrize("dt", [F32, F64, I32, U8, BOOL], ids=str)
def test_reduction_identities_are_neutral(dt, rng):
    x = _random(rng, dt, 64)
    for name, op in SCALAR_OPS.items():
        if not op.reducible or (dt.is_float and name in ("and", "or")):
            continue
        e = identity(name, dt)
        assert e.dtype is dt
        np.testing.assert_array_equal(op.numpy(np.full(64, e.value, dt.np), x), x, err_msg=name)
    with pytest.raises(ValueError):
        identity("sub", dt)


# -- the handler protocol ---------------------------------------------------------------------------

HANDLERS = {
    "numpy": NUMPY,
    "kir": KIR,
    "dual-numpy": DualHandler(NUMPY),
    "dual-kir": DualHandler(KIR),
}


def _operand_dtype(name: str) -> DType:
    if name.startswith("logical_"):
        return BOOL
    return I32 if name.startswith("bit_") or name in ("shl", "shr") else F32


def _operand(handler: str, dt: DType, rng, i: int):
    """A value of the handler's kind: an array, a kernel-IR variable, or a dual number with a tangent."""
    if handler == "kir":
        return K.Var(f"x{i}", dt)
    if handler == "numpy":
        return _random(rng, dt, 16)
    base = handler.removeprefix("dual-")
    return Dual(_operand(base, dt, rng, i), _operand(base, dt, rng, i + 10) if dt.is_float else None)


@pytest.mark.parametrize("handler", HANDLERS)
def test_every_handler_implements_the_protocol(handler, rng):
    h = HANDLERS[handler]
    assert isinstance(h, ScalarHandler) and not type(h).__abstractmethods__
    for name, op in VOCABULARY.items():
        xs = [_operand(handler, _operand_dtype(name), rng, i) for i in range(op.kind.arity)]
        r = getattr(h, name)(*xs)
        assert r is not None, name
    unary = [n for n, op in SCALAR_OPS.items() if op.kind is Kind.UNARY and n != "not"]
    for name in unary if not handler.startswith("dual") else ["tan", "asin", "log1p", "expm1"]:
        assert h.unary(name, _operand(handler, F32, rng, 0)) is not None
    x = _operand(handler, F32, rng, 0)
    assert h.dtype(h.select(h.lt(x, x), x, h.const(0.5, x))) is F32
    assert h.dtype(h.fma(x, x, h.const_of(2, F32))) is F32
    assert h.dtype(h.cast(x, I32)) is I32


def test_a_handler_lacking_part_of_the_protocol_cannot_be_made():
    class Partial(NumpyHandler):
        fma = ScalarHandler.fma  # abstract again

    with pytest.raises(TypeError, match="fma"):
        Partial()


def test_dual_handler_refuses_what_has_no_derivative(rng):
    x = Dual(_random(rng, F32, 8), np.ones(8, np.float32))
    with pytest.raises(UnsupportedError, match="bitcast"):
        DualHandler(NUMPY).bitcast(x, I32)
    with pytest.raises(UnsupportedError, match="'exp'"):
        DualHandler(NUMPY).unary("exp", x)
    assert DualHandler(NUMPY).floor(x).t is None  # piecewise constant: no tangent


@pytest.mark.parametrize("dt", [F32, F64, I32, I64, U8, BOOL], ids=str)
def test_numpy_handler_is_the_tables_numpy_semantics(dt, rng):
    for name, op in VOCABULARY.items():
        if not _valid(op.name, dt) or (name.startswith("logical_") and dt is not BOOL):
            continue
        xs = _inputs(rng, op.name, dt, 64)
        got, want = getattr(NUMPY, name)(*xs), op.numpy(*xs)
        assert np.asarray(got).dtype == np.asarray(want).dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
        if op.kind is Kind.UNARY:
            np.testing.assert_array_equal(NUMPY.unary(op.name, *xs), want, err_msg=name)


def test_kir_handler_builds_the_tables_ops():
    # (mod and pow are written by hand for integer mod and constant exponents; float variables take the table op)
    for name, op in VOCABULARY.items():
        dt = _operand_dtype(name)
        xs = [K.Var(f"x{i}", dt) for i in range(op.kind.arity)]
        e = getattr(KIR, name)(*xs)
        assert isinstance(e, {Kind.BINARY: K.Bin, Kind.COMPARE: K.Cmp, Kind.UNARY: K.Un}[op.kind]), name
        assert e.op == op.name and list(K.children(e)) == xs
    i, j = K.Var("i", I32), K.Var("j", I32)
    assert isinstance(KIR.mod(i, j), K.Select)  # the sign of the divisor, from fmod
    assert format_expr(KIR.pow(K.Var("x", F32), K.const(2, F32))) == "(x * x)"


# -- compiled code against the table's numpy semantics ----------------------------------------------

FLOATS, INTS = (F32, F64), (I32, I64, U8)
_POSITIVE = {"log", "sqrt", "rsqrt", "log1p", "acosh"}
_UNIT = {"asin", "acos", "atanh"}
_EXACT_FLOAT = {"add", "sub", "mul", "div", "floordiv", "mod", "fmod", "min", "max", "neg", "abs", "sign", "floor",
                "ceil", "round", "trunc", "recip", "sqrt", "rsqrt", "isnan", "isinf", "isposinf", "isneginf",
                *(n for n, op in SCALAR_OPS.items() if op.kind is Kind.COMPARE)}  # fmt: skip


def _valid(name: str, dt: DType) -> bool:
    """Whether kernel IR defines ``name`` on ``dt``: arithmetic on numbers, bitwise ops on integers and bool
    (shifts on integers), the float functions on floats; rounding is the identity on integers."""
    op = SCALAR_OPS[name]
    if op.kind is Kind.COMPARE or name in ("min", "max"):
        return True
    if name in ("and", "or", "xor", "not"):
        return not dt.is_float
    if name in ("shl", "shr"):
        return dt.is_int
    if dt is BOOL:
        return False
    if name in ("add", "sub", "mul", "div", "floordiv", "mod", "fmod", "pow", "neg", "abs", "sign", "floor", "ceil",
                "round", "trunc"):  # fmt: skip
        return True
    return dt.is_float


def _random(rng, dt: DType, n: int, lo: float = -3.0, hi: float = 3.0, specials: bool = False) -> np.ndarray:
    if dt is BOOL:
        return rng.random(n) > 0.5
    if dt.is_int:
        info = np.iinfo(dt.np)
        return rng.integers(max(int(lo), info.min + 1), min(int(hi), info.max) + 1, n).astype(dt.np)
    x = rng.uniform(lo, hi, n)
    if specials:  # NaN, infinities, signed zeros, ties of rounding: at random places
        sp = [np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -1.5, 2.5]
        x[rng.choice(n, len(sp), replace=False)] = sp
    return x.astype(dt.np)


def _inputs(rng, name: str, dt: DType, n: int) -> list[np.ndarray]:
    """Operands of ``name`` in its domain (kernel-IR integer floordiv and mod: non-negative operands)."""
    arity = SCALAR_OPS[name].kind.arity
    if dt.is_int and name in ("shl", "shr"):
        return [_random(rng, dt, n, -100, 100), _random(rng, dt, n, 0, dt.bits - 1)]
    if dt.is_int and name == "pow":
        return [_random(rng, dt, n, -3 if dt.is_signed else 0, 3), _random(rng, dt, n, 0, 4)]  # no overflow
    if dt.is_int and name in ("floordiv", "mod"):
        return [_random(rng, dt, n, 0, 100), _random(rng, dt, n, 1, 12)]
    if dt.is_int and name in ("div", "fmod"):
        a, b = _random(rng, dt, n, -100, 100), _random(rng, dt, n, -12, 12)
        return [a, np.where(b == 0, 1, b).astype(dt.np)]
    if dt.is_int:
        return [_random(rng, dt, n, -100, 100) for _ in range(arity)]
    if name == "pow":
        return [_random(rng, dt, n, 0.1, 3.0), _random(rng, dt, n, -2.0, 2.0)]
    if name in _POSITIVE:
        return [_random(rng, dt, n, 1.0 if name == "acosh" else 0.01, 5.0)]
    if name in _UNIT:
        return [_random(rng, dt, n, -0.95, 0.95)]
    return [_random(rng, dt, n, -5.0, 5.0, specials=name in _EXACT_FLOAT) for _ in range(arity)]


@functools.cache
def _jit_kernels(kernels: tuple[K.Kernel, ...]) -> NativeCode:
    return jit(build_kernel_module(list(kernels), host()), host())


def _run(kernels: list[K.Kernel], arrays: list[list[np.ndarray]]) -> None:
    jm = _jit_kernels(tuple(kernels))
    for k, arrs in zip(kernels, arrays):
        fn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * len(arrs))(jm.address(k.name))
        fn(*[a.ctypes.data for a in arrs])


def _elementwise_kernel(name: str, dt: DType) -> K.Kernel:
    op = SCALAR_OPS[name]
    ins = [K.Buffer(f"x{j}", dt, N) for j in range(op.kind.arity)]
    out = K.Buffer("y", op.result_dtype(dt), N)
    build = {Kind.BINARY: K.binop, Kind.COMPARE: K.cmp, Kind.UNARY: K.unop}[op.kind]
    i = K.Var("i")
    body = K.loop(i, N, K.Store(out, i, build(name, *[b[i] for b in ins])), K.LoopKind.VECTOR, lanes=8)
    return K.Kernel(f"k_{name}_{dt.short}", [*ins, out], body)


@pytest.mark.parametrize("name", sorted(SCALAR_OPS))
def test_compiled_op_matches_numpy_semantics(name, rng):
    op = SCALAR_OPS[name]
    dts = [dt for dt in (*FLOATS, *INTS, BOOL) if _valid(name, dt)]
    kernels = [_elementwise_kernel(name, dt) for dt in dts]
    arrays = []
    for dt in dts:
        xs = _inputs(rng, name, dt, N)
        arrays.append([*xs, np.zeros(N, op.result_dtype(dt).np)])
    _run(kernels, arrays)
    for dt, arrs in zip(dts, arrays):
        *xs, got = arrs
        want = op.numpy(*xs)
        what = f"{name} on {dt}"
        if dt.is_float and name not in _EXACT_FLOAT:
            np.testing.assert_allclose(got, want, rtol=1e-5 if dt is F32 else 1e-12, atol=1e-6, err_msg=what)
        else:
            np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("dt", [F32, F64, I32, U8, BOOL], ids=str)
def test_compiled_horizontal_reductions(dt, rng):
    names = [n for n, op in SCALAR_OPS.items() if op.reducible and not (dt.is_float and n in ("and", "or"))]
    kernels, arrays = [], []
    for name in names:
        x, out = K.Buffer("x", dt, N), K.Buffer("y", dt, 1)
        acc, i = K.Var("acc", dt), K.Var("i")
        loop = K.loop(i, N, K.Assign(acc, K.binop(name, acc, x[i])), K.LoopKind.VECTOR, lanes=8)
        body = K.seq(K.Decl(acc, identity(name, dt)), loop, K.Store(out, K.Const(0), acc))
        kernels.append(K.Kernel(f"r_{name}", [x, out], body))
        lo, hi = (0.5, 1.5) if name == "mul" else (-5.0, 5.0)
        arrays.append([_random(rng, dt, N, lo, hi, specials=name in ("min", "max") and rng.random() < 0.5),
                       np.zeros(1, dt.np)])  # fmt: skip
    _run(kernels, arrays)
    assert any(isinstance(e, K.HReduce) for e in _vectorized_exprs(kernels[0]))
    for name, (x, got) in zip(names, arrays):
        op = SCALAR_OPS[name]
        want = functools.reduce(op.numpy, x, np.asarray(identity(name, dt).value, dt.np))
        if dt.is_float:  # lanes are added in another order
            np.testing.assert_allclose(got[0], want, rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got[0], want, err_msg=name)


def _vectorized_exprs(k: K.Kernel):
    from tensorforge.lower.vectorize import vectorize_kernel

    for s in K.walk_stmt(vectorize_kernel(k).body):
        for e in K.stmt_exprs(s):
            yield from K.walk_expr(e)
