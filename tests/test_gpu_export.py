"""``tensorforge export --target cuda``: a C library with the PTX embedded and the CPU export's C API. Without a
driver a C program gets ``<P>_ERROR_DEVICE`` and a message naming what is missing; with a fake ``libcuda`` (a
small C shim, compiled here, forwarding every driver call to Python, which keeps device memory in host memory
and runs each launched kernel on the grid interpreter) the library's own session layer loads the PTX, uploads
the weights, launches every kernel in order with its grid and arguments, and its outputs match the CPU build."""

from __future__ import annotations

import ctypes
import json
import subprocess

import numpy as np
import pytest

import tensorforge as tfg
from aot_helpers import CC, needs_cc
from tensorforge.codegen.targets import get_target
from tensorforge.compiler.pipeline import Build, Options
from tensorforge.examples import mlp, small_cnn
from tensorforge.lower.gpu_kir import launch_dims
from tensorforge.runtime.aot_cuda import export_cuda_library
from tensorforge.runtime.gridinterp import GridInterpreter, _mnp

pytestmark = needs_cc

_SHIM = r"""
#include <stdint.h>
#include <stddef.h>
typedef int (*hook_t)(const char *, uint64_t *, int);
static hook_t hook;
void fake_set_hook(hook_t h) { hook = h; }
#define U(x) ((uint64_t)(uintptr_t)(x))
#define CALL(name, ...) \
    do { uint64_t a_[] = {__VA_ARGS__}; return hook(name, a_, (int)(sizeof a_ / sizeof a_[0])); } while (0)
int cuInit(unsigned f) { CALL("cuInit", f); }
int cuDeviceGetCount(int *n) { CALL("cuDeviceGetCount", U(n)); }
int cuDeviceGet(int *d, int o) { CALL("cuDeviceGet", U(d), (uint64_t)o); }
int cuDevicePrimaryCtxRetain(void **c, int d) { CALL("cuDevicePrimaryCtxRetain", U(c), (uint64_t)d); }
int cuDevicePrimaryCtxRelease_v2(int d) { CALL("cuDevicePrimaryCtxRelease_v2", (uint64_t)d); }
int cuCtxSetCurrent(void *c) { CALL("cuCtxSetCurrent", U(c)); }
int cuModuleLoadData(void **m, const void *ptx) { CALL("cuModuleLoadData", U(m), U(ptx)); }
int cuModuleUnload(void *m) { CALL("cuModuleUnload", U(m)); }
int cuModuleGetFunction(void **f, void *m, const char *n) { CALL("cuModuleGetFunction", U(f), U(m), U(n)); }
int cuStreamCreate(void **s, unsigned f) { CALL("cuStreamCreate", U(s), f); }
int cuStreamDestroy_v2(void *s) { CALL("cuStreamDestroy_v2", U(s)); }
int cuStreamSynchronize(void *s) { CALL("cuStreamSynchronize", U(s)); }
int cuMemAlloc_v2(uint64_t *p, size_t n) { CALL("cuMemAlloc_v2", U(p), n); }
int cuMemFree_v2(uint64_t p) { CALL("cuMemFree_v2", p); }
int cuMemcpyHtoD_v2(uint64_t d, const void *s, size_t n) { CALL("cuMemcpyHtoD", d, U(s), n); }
int cuMemcpyHtoDAsync_v2(uint64_t d, const void *s, size_t n, void *st) { CALL("cuMemcpyHtoD", d, U(s), n, U(st)); }
int cuMemcpyDtoHAsync_v2(void *d, uint64_t s, size_t n, void *st) { CALL("cuMemcpyDtoH", U(d), s, n, U(st)); }
int cuMemsetD8Async(uint64_t d, unsigned char v, size_t n, void *st) { CALL("cuMemsetD8Async", d, v, n, U(st)); }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned sm, void *st, void **params, void **extra) {
    CALL("cuLaunchKernel", U(f), gx, gy, gz, bx, by, bz, sm, U(st), U(params), U(extra));
}
"""

_MAIN = r"""
#include <stdio.h>
#include "gm.h"
int main(void) {
    gm_session *s = NULL;
    int rc = gm_session_create(&s, NULL);
    printf("%d|%s|%s\n", rc, gm_status_string(rc), gm_session_error(NULL));
    return rc == GM_ERROR_DEVICE && s == NULL ? 0 : 1;
}
"""

HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64), ctypes.c_int)


class PyDriver:
    """The driver API behind the shim: device memory in numpy arrays (a device pointer is the array's address),
    each launch run on the grid interpreter."""

    def __init__(self, program):
        self.kernels = {k.name: k for k in program.kernels}
        self.mem: dict[int, np.ndarray] = {}
        self.functions: list[str] = []
        self.launched: list[tuple[str, int, int]] = []
        self.ptx = b""

    def _at(self, addr: int, nbytes: int) -> np.ndarray:
        for base, buf in self.mem.items():
            if base <= addr and addr + nbytes <= base + buf.size:
                return buf[addr - base : addr - base + nbytes]
        raise AssertionError(f"device access {addr:#x}+{nbytes} outside every allocation")

    def __call__(self, name: bytes, argv, n: int) -> int:
        try:
            return self.handle(name.decode(), [argv[i] for i in range(n)])
        except Exception as e:  # a failing check must not unwind through C
            self.error = e
            return 999

    def handle(self, name: str, a: list[int]) -> int:
        put = lambda ptr, v, t=ctypes.c_uint64: setattr(t.from_address(ptr), "value", v)  # noqa: E731
        if name == "cuDeviceGetCount":
            put(a[0], 1, ctypes.c_int)
        elif name in ("cuDeviceGet",):
            put(a[0], 0, ctypes.c_int)
        elif name in ("cuDevicePrimaryCtxRetain", "cuStreamCreate"):
            put(a[0], 7)
        elif name == "cuModuleLoadData":
            self.ptx = ctypes.string_at(a[1])
            put(a[0], 9)
        elif name == "cuModuleGetFunction":
            self.functions.append(ctypes.string_at(a[2]).decode())
            put(a[0], len(self.functions))
        elif name == "cuMemAlloc_v2":
            buf = np.zeros(a[1] + 64, np.uint8)
            base = buf.ctypes.data
            self.mem[base] = buf
            put(a[0], base)
        elif name == "cuMemcpyHtoD":
            ctypes.memmove(self._at(a[0], a[2]).ctypes.data, a[1], a[2])
        elif name == "cuMemcpyDtoH":
            ctypes.memmove(a[0], self._at(a[1], a[2]).ctypes.data, a[2])
        elif name == "cuMemsetD8Async":
            self._at(a[0], a[2])[:] = a[1]
        elif name == "cuLaunchKernel":
            k = self.kernels[self.functions[a[0] - 1]]
            assert (a[1], a[4]) == launch_dims(k.body) and (a[2], a[3], a[5], a[6]) == (1, 1, 1, 1)
            self.launched.append((k.name, a[1], a[4]))
            params = (ctypes.c_void_p * len(k.params)).from_address(a[9])
            ptrs = [ctypes.c_uint64.from_address(params[i]).value for i in range(len(k.params))]
            interp = GridInterpreter.__new__(GridInterpreter)
            interp.races = {}
            interp._bound = {id(b): self._at(p, b.numel * _mnp(b.dtype).itemsize).view(_mnp(b.dtype))
                             for b, p in zip(k.params, ptrs)}  # fmt: skip
            interp.run_kernel(k)
        return 0


def _export(model, tmp_path, precision=None):
    opts = Options(lowering={"precision": precision} if precision else {})
    art = Build(model, get_target("nvptx-sm80"), opts).run("llvm").artifact()
    files = export_cuda_library(art, str(tmp_path), "gm")
    return art, files


def test_no_driver_is_a_clear_status_in_c(tmp_path):
    art, files = _export(mlp(2), tmp_path)
    for f in ("libgm.so", "libgm.a", "gm.h", "gm.ptx", "gm.json", "example.c", "Makefile"):
        assert (tmp_path / f).exists(), f
    assert json.loads((tmp_path / "gm.json").read_text())["device"]["arch"] == "sm_80"
    assert (tmp_path / "gm.ptx").read_text() == art.assembly()
    undefined = subprocess.run(["nm", "-D", "--undefined-only", files["library"]], capture_output=True, text=True)
    assert "cuInit" not in undefined.stdout and "dlopen" in undefined.stdout  # no link-time CUDA dependency
    (tmp_path / "main.c").write_text(_MAIN)
    subprocess.run([CC, "main.c", "-o", "main", "-I.", "-L.", "-lgm", "-Wl,-rpath,$ORIGIN"], cwd=tmp_path, check=True)
    env = {"PATH": "/usr/bin:/bin", "TENSORFORGE_LIBCUDA": str(tmp_path / "no" / "libcuda.so.1")}
    r = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rc, text, err = r.stdout.strip().split("|", 2)
    assert int(rc) == 8 and "CUDA" in text and "no CUDA driver" in err and "libcuda.so.1" in err


@pytest.mark.parametrize("name,model", [("mlp", lambda: mlp(3)), ("cnn", lambda: small_cnn(2))])
def test_library_launches_on_a_fake_driver(name, model, tmp_path, monkeypatch, rng):
    m = model()
    art, files = _export(m, tmp_path)
    (tmp_path / "shim.c").write_text(_SHIM)
    subprocess.run(
        [CC, "-shared", "-fPIC", "-Wall", "-Werror", "-o", "libfakecuda.so", "shim.c"], cwd=tmp_path, check=True
    )
    shim = ctypes.CDLL(str(tmp_path / "libfakecuda.so"))
    drv = PyDriver(art.program)
    hook = HOOK(drv)
    shim.fake_set_hook(hook)
    monkeypatch.setenv("TENSORFORGE_LIBCUDA", str(tmp_path / "libfakecuda.so"))
    lib = ctypes.CDLL(files["library"])
    s = ctypes.c_void_p()
    rc = lib.gm_session_create(ctypes.byref(s), None)
    lib.gm_session_error.restype = ctypes.c_char_p
    assert rc == 0, (lib.gm_session_error(None), getattr(drv, "error", None))
    assert drv.ptx.decode() == art.assembly() and drv.functions == [k.name for k in art.program.kernels]
    p = art.program
    xs = [rng.standard_normal(shape).astype(dt.np) for _, dt, shape in p.inputs]
    outs = [np.zeros(shape, dt.np) for _, dt, shape in p.outputs]
    ins = (ctypes.c_void_p * len(xs))(*[x.ctypes.data for x in xs])
    ous = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
    for _ in range(2):  # a second run reuses the session's buffers
        drv.launched.clear()
        assert lib.gm_run(s, ins, ous) == 0, (lib.gm_session_error(s), getattr(drv, "error", None))
        assert [k for k, _, _ in drv.launched] == [k.name for k in p.kernels]  # every kernel, in order
        ref = tfg.compile(m)(*xs)
        for o, r in zip(outs, [ref] if not isinstance(ref, tuple) else ref):
            np.testing.assert_allclose(o, r, rtol=1e-4, atol=1e-5)
    lib.gm_session_destroy(s)


def test_cli_export_target_cuda(tmp_path, capsys, monkeypatch):
    import onnx

    from tensorforge.cli import main
    from tensorforge.runtime import cuda

    monkeypatch.setenv("TENSORFORGE_LIBCUDA", str(tmp_path / "none" / "libcuda.so.1"))
    monkeypatch.setattr(cuda, "_DRIVER", None)
    onnx.save(mlp(2), str(tmp_path / "mlp.onnx"))
    out = tmp_path / "build"
    rc = main(["export", str(tmp_path / "mlp.onnx"), "--target", "cuda", "--precision", "bf16", "-o", str(out),
               "--name", "net"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr()
    assert "nvptx-sm80" in text.out and "exporting PTX for sm_80" in text.err and "precision bf16" in text.err
    assert "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" in (out / "net.ptx").read_text()
    assert "int net_run(net_session *session" in (out / "net.h").read_text()


def test_library_run_time_check_on_a_fake_driver(tmp_path, monkeypatch):
    """A failing run-time index check: the library reads the status words back after the checking kernel and
    returns ERROR_INDEX with the check's message, launching nothing after it."""
    from onnx import TensorProto, helper

    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    nodes = [helper.make_node("Gather", ["t", "i"], ["g"], axis=0), helper.make_node("Relu", ["g"], ["y"])]
    g_ = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info("i", TensorProto.INT64, [5])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])],
                           [helper.make_tensor("t", TensorProto.FLOAT, [4, 3], table.ravel())])  # fmt: skip
    art, files = _export(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 17)]), tmp_path)
    assert art.program.check_kernels
    (tmp_path / "shim.c").write_text(_SHIM)
    subprocess.run(
        [CC, "-shared", "-fPIC", "-Wall", "-Werror", "-o", "libfakecuda.so", "shim.c"], cwd=tmp_path, check=True
    )
    shim = ctypes.CDLL(str(tmp_path / "libfakecuda.so"))
    drv = PyDriver(art.program)
    hook = HOOK(drv)
    shim.fake_set_hook(hook)
    monkeypatch.setenv("TENSORFORGE_LIBCUDA", str(tmp_path / "libfakecuda.so"))
    lib = ctypes.CDLL(files["library"])
    lib.gm_session_error.restype = ctypes.c_char_p
    s = ctypes.c_void_p()
    assert lib.gm_session_create(ctypes.byref(s), None) == 0
    out = np.zeros((5, 3), np.float32)
    ous = (ctypes.c_void_p * 1)(out.ctypes.data)
    good = np.array([0, 3, 1, 2, 0], np.int64)
    assert lib.gm_run(s, (ctypes.c_void_p * 1)(good.ctypes.data), ous) == 0
    np.testing.assert_array_equal(out, table[good])
    bad = np.array([0, 7, 1, 2, 0], np.int64)
    drv.launched.clear()
    assert lib.gm_run(s, (ctypes.c_void_p * 1)(bad.ctypes.data), ous) == 1  # ERROR_INDEX
    assert b"7" in lib.gm_session_error(s)
    assert len(drv.launched) < len(art.program.kernels)
    lib.gm_session_destroy(s)
