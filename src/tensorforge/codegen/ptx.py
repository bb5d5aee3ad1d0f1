"""PTX code generation of GPU-mapped kernels (``lower/gpu_kir.py``): the NVVM side of the GPU vocabulary,
registered as hooks of the kernel emitter (``codegen/llvm/emitter.py``), and the GPU's description.

* a launch nest's ``for blockIdx.x`` / ``for threadIdx.x`` loops are no loops: their variables are the
  special registers ``%ctaid.x`` / ``%tid.x``, and the kernel is annotated ``maxntidx`` (the block size);
* ``SharedBuffer``: a module global in address space 3 (``.shared``), used through a generic pointer
  (LLVM's address-space inference turns the accesses into ``ld.shared`` / ``st.shared``);
* ``Barrier``: ``llvm.nvvm.barrier0`` (``bar.sync 0``);
* ``Shfl``: ``llvm.nvvm.shfl.sync.{bfly,down,idx}.{f32,i32}`` over the full warp (64-bit values as two
  32-bit halves);
* ``Mma``: ``llvm.nvvm.mma.m16n8k8.row.col.tf32`` on operands rounded by ``llvm.nvvm.f2tf32.rna``;
  ``llvm.nvvm.mma.m16n8k16.row.col.f32.f32`` (f16 operands in ``<2 x half>``, float32 C and D) and
  ``llvm.nvvm.mma.m16n8k16.row.col.bf16`` (bf16 pairs in an i32).

``ptxas`` (from the CUDA toolkit or the ``nvidia-cuda-nvcc`` wheel) checks what we emit: ``ptxas_check``.
Importing this module registers the hooks (the pipeline does for GPU targets).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import llvmlite.ir as ir
import numpy as np

from ..errors import CompileError
from ..ir.dtype import DType
from ..lower.gpu_kir import Barrier, BlockIdx, Mma, SharedBuffer, Shfl, ThreadIdx
from ..lower.kir import Bin, Const, For, Load, Stmt, Var
from .llvm import emitter as E
from .llvm.convert import _to_bf16_bits
from .llvm.lltypes import I32, I64, PTR, VOID, gep, memty


def _sreg(em, name: str) -> ir.Value:
    fn = em.mb.declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
    return em.b.zext(em.b.call(fn, []), I64)


def _annotate(em, threads: int) -> None:
    """``maxntidx``: the block size the kernel is launched with (lets ptxas budget registers for it)."""
    m = em.mb.module
    md = m.add_metadata([em.s.fn, ir.MetaDataString(m, "maxntidx"), ir.Constant(I32, threads)])
    m.add_named_metadata("nvvm.annotations").add(md)


def _launch_loop(em, s: Stmt) -> bool:
    if not isinstance(s, For) or not isinstance(s.var, BlockIdx | ThreadIdx):
        return False
    em.gpu_pending = False  # the kernel maps itself: no grid-stride loop
    if isinstance(s.var, ThreadIdx):
        _annotate(em, int(s.stop.value))
    reg = "ctaid.x" if isinstance(s.var, BlockIdx) else "tid.x"
    em.b.store(_sreg(em, reg), em.var_slot(s.var))
    em.stmt(s.body)
    return True


def _barrier(em, s: Stmt) -> bool:
    if not isinstance(s, Barrier):
        return False
    em.b.call(em.mb.declare("llvm.nvvm.barrier0", VOID, []), [])
    em._memo.clear()  # other threads may have written shared memory: nothing read before is current
    return True


def _mma(em, s: Stmt) -> bool:
    if not isinstance(s, Mma):
        return False
    b = em.b
    f32 = ir.FloatType()
    c = [em.expr(x) for x in s.c]
    ret = ir.LiteralStructType([f32] * 4)
    if s.kind == "tf32":
        tf32 = em.mb.declare("llvm.nvvm.f2tf32.rna", I32, [f32])
        ab = [b.call(tf32, [em.expr(x)]) for x in (*s.a, *s.b)]
        fn = em.mb.declare("llvm.nvvm.mma.m16n8k8.row.col.tf32", ret, [I32] * 6 + [f32] * 4)
    else:  # f16 / bf16: pairs of 16-bit values in one 32-bit register, the first in the low half
        vals = (*s.a, *s.b)
        ab = [_pair(em, s.kind, vals[i], vals[i + 1]) for i in range(0, len(vals), 2)]
        if s.kind == "f16":
            h2 = ir.VectorType(ir.HalfType(), 2)
            ab = [b.bitcast(x, h2) for x in ab]
            fn = em.mb.declare("llvm.nvvm.mma.m16n8k16.row.col.f32.f32", ret, [h2] * 6 + [f32] * 4)
        else:
            fn = em.mb.declare("llvm.nvvm.mma.m16n8k16.row.col.bf16", ret, [I32] * 6 + [f32] * 4)
    r = b.call(fn, [*ab, *c])
    for i, v in enumerate(s.d):
        b.store(b.extract_value(r, i), em.var_slot(v))
        em._invalidate(var_uid=v.uid)
    return True


def _affine(e) -> tuple[dict[int, int], int] | None:
    """``e`` as integer coefficients of its variables plus a constant; None when it is not such a sum."""
    if isinstance(e, Const) and isinstance(e.value, int | np.integer):
        return {}, int(e.value)
    if isinstance(e, Var):
        return {e.uid: 1}, 0
    if isinstance(e, Bin) and e.op in ("add", "sub", "mul"):
        a, b = _affine(e.a), _affine(e.b)
        if a is None or b is None:
            return None
        if e.op == "mul":
            if a[0] and b[0]:
                return None
            (c, k), (vs, m) = (a, b) if not a[0] else (b, a)
            return {u: x * k for u, x in vs.items()}, m * k
        sign = 1 if e.op == "add" else -1
        vs = dict(a[0])
        for u, x in b[0].items():
            vs[u] = vs.get(u, 0) + sign * x
        return {u: x for u, x in vs.items() if x}, a[1] + sign * b[1]
    return None


def _word_pair(x, y) -> bool:
    """Whether ``x``, ``y`` are the two 16-bit halves of one aligned 32-bit word of a shared tile: loads of the
    same (16-byte aligned) shared buffer at indices ``i`` and ``i + 1`` with ``i`` provably even."""
    if not (isinstance(x, Load) and isinstance(y, Load) and x.buf is y.buf and isinstance(x.buf, SharedBuffer)):
        return False
    if x.lanes != 1 or y.lanes != 1 or x.mask is not None or y.mask is not None or x.buf.dtype.itemsize != 2:
        return False
    fx, fy = _affine(x.index), _affine(y.index)
    return (fx is not None and fy is not None and fx[0] == fy[0] and fy[1] == fx[1] + 1
            and fx[1] % 2 == 0 and all(c % 2 == 0 for c in fx[0].values()))  # fmt: skip


def _pair(em, kind: str, x, y) -> ir.Value:
    """The i32 register of an f16/bf16 mma operand pair: one 32-bit shared-memory load when ``x`` and ``y``
    are the halves of one word (the tiles are stored k-inner for that), else both values converted."""
    b = em.b
    if _word_pair(x, y) and x.buf.dtype is (DType.F16 if kind == "f16" else DType.BF16):
        p = gep(b, em.buf_ptr(x.buf), [em.expr(x.index)], source_etype=memty(x.buf.dtype))
        return b.load(p, typ=I32, align=4)
    if kind == "f16":
        lo, hi = (b.zext(b.bitcast(b.fptrunc(em.expr(v), ir.HalfType()), ir.IntType(16)), I32) for v in (x, y))
    else:
        lo, hi = (b.zext(_to_bf16_bits(em, em.expr(v)), I32) for v in (x, y))
    return b.or_(lo, b.shl(hi, ir.Constant(I32, 16)))


def _shfl(em, e: Shfl) -> ir.Value:
    b = em.b
    x = em.expr(e.a)
    t = x.type

    def one(v: ir.Value, ty: str) -> ir.Value:
        vt = ir.FloatType() if ty == "f32" else I32
        fn = em.mb.declare(f"llvm.nvvm.shfl.sync.{e.mode}.{ty}", vt, [I32, vt, I32, I32])
        # c = ((32 - width) << 8) | 31: the whole warp, lanes past its end clamped (down: own value)
        return b.call(fn, [ir.Constant(I32, -1), v, ir.Constant(I32, e.lane), ir.Constant(I32, 31)])

    if isinstance(t, ir.FloatType):
        return one(x, "f32")
    if isinstance(t, ir.IntType) and t.width == 32:
        return one(x, "i32")
    if isinstance(t, ir.IntType) and t.width < 32:
        return b.trunc(one(b.zext(x, I32), "i32"), t)
    if isinstance(t, ir.DoubleType | ir.IntType):  # 64 bits: two halves
        v = b.bitcast(x, I64) if isinstance(t, ir.DoubleType) else x
        lo = one(b.trunc(v, I32), "i32")
        hi = one(b.trunc(b.lshr(v, ir.Constant(I64, 32)), I32), "i32")
        r = b.or_(b.zext(lo, I64), b.shl(b.zext(hi, I64), ir.Constant(I64, 32)))
        return b.bitcast(r, t) if isinstance(t, ir.DoubleType) else r
    raise CompileError(f"no warp shuffle of {t}")


def _shared(em, buf: SharedBuffer) -> ir.Value:
    m = em.mb.module
    ty = ir.ArrayType(memty(buf.dtype), max(buf.numel, 1))
    name = em.mb.new_name(f"{em.k.name}.smem.{buf.name}")
    gv = ir.GlobalVariable(m, ty, name, addrspace=3)
    gv.linkage = "internal"
    gv.initializer = ir.Constant(ty, ir.Undefined)
    gv.align = 16
    b = em.b
    with b.goto_block(em.s.entry):  # at the top of the kernel: the pointer dominates every use
        if em.s.entry.instructions:
            b.position_before(em.s.entry.instructions[0])
        return b.addrspacecast(gv, PTR)


def _register() -> None:
    if _launch_loop not in E.STMT_HOOKS:
        E.STMT_HOOKS.extend([_launch_loop, _barrier, _mma])
    E.EXPR_HOOKS[Shfl] = _shfl
    E.BUF_HOOKS[SharedBuffer] = _shared


_register()


# -- ptxas -----------------------------------------------------------------------------------------------
def find_ptxas() -> str | None:
    """``ptxas`` on PATH, in ``$CUDA_HOME/bin``, or from the ``nvidia-cuda-nvcc`` wheel; None when absent."""
    p = shutil.which("ptxas")
    if p:
        return p
    for base in filter(None, [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]):
        c = os.path.join(base, "bin", "ptxas")
        if os.access(c, os.X_OK):
            return c
    try:
        import nvidia.cuda_nvcc as nv  # type: ignore[import-not-found]

        c = os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")
        return c if os.access(c, os.X_OK) else None
    except ImportError:
        return None


def ptxas_check(ptx: str, arch: str) -> bytes:
    """Assemble ``ptx`` for ``arch`` (``sm_80``) with ptxas; returns the cubin, raises CompileError with
    ptxas's message when it fails."""
    exe = find_ptxas()
    if exe is None:
        raise CompileError("ptxas not found (install the CUDA toolkit or `pip install nvidia-cuda-nvcc-cu12`)")
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "k.ptx"), os.path.join(d, "k.cubin")
        ptx = retarget_ptx(ptx, arch)
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([exe, f"-arch={arch}", src, "-o", out], capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"ptxas -arch={arch} rejected the PTX: {r.stderr.strip()[:2000]}")
        with open(out, "rb") as f:
            return f.read()


def retarget_ptx(ptx: str, arch: str) -> str:
    """PTX emitted for one ``sm_XY`` declared for another (the same code: used to assemble PTX built for
    sm_80 on a newer GPU, as the driver's JIT does)."""
    import re

    return re.sub(r"^\.target\s+sm_\w+", f".target {arch}", ptx, count=1, flags=re.M)


__all__ = ["find_ptxas", "ptxas_check", "retarget_ptx"]
