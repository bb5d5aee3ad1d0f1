"""Vectorizable float32 transcendental functions written as LLVM IR.

LLVM lowers ``llvm.exp.v8f32`` to eight calls of libm's ``expf``; these polynomial versions stay in
vector registers, work on every target (PTX has no libm) and are accurate to a few ulp:

* exp: Cody-Waite range reduction, Cephes degree-6 polynomial, 2^n applied in two halves so that
  results down to the denormal range are exact; overflow gives inf, NaN propagates.
* log: Cephes logf (mantissa in [sqrt(1/2), sqrt(2)), degree-9 polynomial), with denormal inputs
  rescaled; log(0) = -inf, log(<0) = NaN, log(inf) = inf.
* tanh: odd polynomial for |x| < 0.625, else 1 - 2/(exp(2|x|)+1).
* erf: erf(x) = x*P(x^2) for |x| < 1; 1 - exp(-x^2)*Q(1/x) for 1 <= |x| < 4; +-1 beyond. The
  coefficients are least-squares fits computed by ``tools/fit_erf.py`` (max relative error 3e-7).

Each function is emitted once per module and type as an internal ``alwaysinline`` function.
"""

from __future__ import annotations

import llvmlite.ir as ir

F32 = ir.FloatType()
I32 = ir.IntType(32)
I1 = ir.IntType(1)

EXP_P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]
LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
         -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]  # fmt: skip
TANH_P = [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1]
ERF_SMALL = [1.1283791451537408, -0.3761241344747643, 0.11280846103715815, -0.026729795669536427,
             0.00493875453573512, -0.0005716958618999734]  # fmt: skip
ERF_LARGE = [0.0003669155619950312, 0.5575018083251186, 0.05237895048534001, -0.5101270060514485,
             0.5832078965335936, -0.3617311145050299, 0.12474535926983614, -0.01875925529707495]  # fmt: skip


class _B:
    """Tiny helper around an IRBuilder for scalar-or-vector float code."""

    def __init__(self, b: ir.IRBuilder, ty: ir.Type, module: ir.Module):
        self.b = b
        self.ty = ty
        self.m = module
        self.lanes = ty.count if isinstance(ty, ir.VectorType) else 1
        self.ity = ir.VectorType(I32, self.lanes) if self.lanes > 1 else I32
        self.bty = ir.VectorType(I1, self.lanes) if self.lanes > 1 else I1

    def c(self, v: float) -> ir.Constant:
        if self.lanes > 1:
            return ir.Constant(self.ty, [v] * self.lanes)
        return ir.Constant(self.ty, v)

    def ci(self, v: int) -> ir.Constant:
        if self.lanes > 1:
            return ir.Constant(self.ity, [v] * self.lanes)
        return ir.Constant(self.ity, v)

    def intrinsic(self, name: str, *args):
        suffix = f"v{self.lanes}f32" if self.lanes > 1 else "f32"
        full = f"llvm.{name}.{suffix}"
        fn = self.m.globals.get(full)
        if fn is None:
            fn = ir.Function(self.m, ir.FunctionType(self.ty, [self.ty] * len(args)), full)
        return self.b.call(fn, list(args))

    def add(self, a, b):
        return self.b.fadd(a, b, flags=("contract",))

    def sub(self, a, b):
        return self.b.fsub(a, b, flags=("contract",))

    def mul(self, a, b):
        return self.b.fmul(a, b, flags=("contract",))

    def fma(self, a, b, c):
        return self.intrinsic("fma", a, b, c)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def poly(self, x, coeffs):
        acc = self.c(coeffs[0])
        for k in coeffs[1:]:
            acc = self.fma(acc, x, self.c(k))
        return acc

    def select(self, cond, a, b):
        return self.b.select(cond, a, b)

    def fcmp(self, op, a, b):
        return self.b.fcmp_ordered(op, a, b)

    def bitcast_int(self, x):
        return self.b.bitcast(x, self.ity)

    def bitcast_float(self, x):
        return self.b.bitcast(x, self.ty)


def _define(module: ir.Module, name: str, ty: ir.Type, nargs: int = 1):
    suffix = f"v{ty.count}f32" if isinstance(ty, ir.VectorType) else "f32"
    fname = f"tf.{name}.{suffix}"
    fn = module.globals.get(fname)
    if fn is not None:
        return fn, None
    fn = ir.Function(module, ir.FunctionType(ty, [ty] * nargs), fname)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    return fn, _B(b, ty, module)


def _exp_body(m: _B, x):
    # exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n*ln2 (split in two parts)
    xc = m.intrinsic("minnum", m.intrinsic("maxnum", x, m.c(-104.0)), m.c(88.8))
    fx = m.intrinsic("roundeven", m.mul(xc, m.c(1.44269504088896341)))
    r = m.fma(fx, m.c(-0.693359375), xc)
    r = m.fma(fx, m.c(2.12194440e-4), r)
    z = m.mul(r, r)
    p = m.poly(r, EXP_P)
    y = m.add(m.fma(p, z, r), m.c(1.0))
    n = m.b.fptosi(fx, m.ity)
    n1 = m.b.ashr(n, m.ci(1))
    n2 = m.b.sub(n, n1)
    s1 = m.bitcast_float(m.b.shl(m.b.add(n1, m.ci(127)), m.ci(23)))
    s2 = m.bitcast_float(m.b.shl(m.b.add(n2, m.ci(127)), m.ci(23)))
    res = m.mul(m.mul(y, s1), s2)
    res = m.select(m.fcmp(">", x, m.c(88.72283935546875)), m.c(float("inf")), res)
    res = m.select(m.fcmp("<", x, m.c(-103.97)), m.c(0.0), res)
    isnan = m.b.fcmp_unordered("uno", x, x)
    return m.select(isnan, x, res)


def _log_body(m: _B, x):
    tiny = m.fcmp("<", x, m.c(1.17549435e-38))
    xs = m.select(tiny, m.mul(x, m.c(8388608.0)), x)  # 2^23
    eadj = m.select(tiny, m.c(-23.0), m.c(0.0))
    bits = m.bitcast_int(xs)
    e = m.b.sub(m.b.lshr(bits, m.ci(23)), m.ci(126))
    mant = m.bitcast_float(m.b.or_(m.b.and_(bits, m.ci(0x807FFFFF)), m.ci(0x3F000000)))
    ef = m.add(m.b.sitofp(e, m.ty), eadj)
    small = m.fcmp("<", mant, m.c(0.707106781186547524))
    ef = m.select(small, m.sub(ef, m.c(1.0)), ef)
    mm = m.select(small, m.add(mant, mant), mant)
    mm = m.sub(mm, m.c(1.0))
    z = m.mul(mm, mm)
    y = m.mul(m.mul(m.poly(mm, LOG_P), mm), z)
    y = m.fma(ef, m.c(-2.12194440e-4), y)
    y = m.fma(z, m.c(-0.5), y)
    res = m.add(mm, y)
    res = m.fma(ef, m.c(0.693359375), res)
    # special values
    res = m.select(m.fcmp("==", x, m.c(0.0)), m.c(float("-inf")), res)
    res = m.select(m.fcmp("==", x, m.c(float("inf"))), x, res)
    neg_or_nan = m.b.fcmp_unordered("<", x, m.c(0.0))
    return m.select(neg_or_nan, m.c(float("nan")), res)


def _tanh_body(m: _B, x, exp_fn):
    ax = m.intrinsic("fabs", x)
    z = m.mul(x, x)
    small = m.fma(m.mul(m.poly(z, TANH_P), z), x, x)
    e = m.b.call(exp_fn, [m.mul(ax, m.c(2.0))])
    big = m.sub(m.c(1.0), m.div(m.c(2.0), m.add(e, m.c(1.0))))
    big = m.intrinsic("copysign", big, x)
    return m.select(m.fcmp("<", ax, m.c(0.625)), small, big)


def _sigmoid_body(m: _B, x, exp_fn):
    e = m.b.call(exp_fn, [m.b.fneg(x)])
    return m.div(m.c(1.0), m.add(m.c(1.0), e))


def _erf_body(m: _B, x, exp_fn):
    ax = m.intrinsic("fabs", x)
    z = m.mul(x, x)
    small = m.mul(x, m.poly(z, ERF_SMALL[::-1]))
    t = m.div(m.c(1.0), ax)
    q = m.poly(t, ERF_LARGE[::-1])
    e = m.b.call(exp_fn, [m.b.fneg(z)])
    large = m.sub(m.c(1.0), m.mul(e, q))
    large = m.select(m.fcmp(">=", ax, m.c(4.0)), m.c(1.0), large)
    large = m.intrinsic("copysign", large, x)
    return m.select(m.fcmp("<", ax, m.c(1.0)), small, large)


def get_math_fn(module: ir.Module, name: str, ty: ir.Type) -> ir.Function:
    """The internal function computing ``name`` (exp, log, tanh, sigmoid, erf) on float32 ``ty``."""
    fn, m = _define(module, name, ty)
    if m is None:
        return fn
    x = fn.args[0]
    if name == "exp":
        r = _exp_body(m, x)
    elif name == "log":
        r = _log_body(m, x)
    elif name in ("tanh", "sigmoid", "erf"):
        exp_fn = get_math_fn(module, "exp", ty)
        r = {"tanh": _tanh_body, "sigmoid": _sigmoid_body, "erf": _erf_body}[name](m, x, exp_fn)
    else:
        raise KeyError(name)
    m.b.ret(r)
    return fn


MATH_FUNCS = ("exp", "log", "tanh", "sigmoid", "erf")
