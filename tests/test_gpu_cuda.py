"""The CUDA runtime. Tests marked ``gpu`` need an NVIDIA GPU and driver and skip cleanly without one; the others
check the errors a machine without them gets."""

from __future__ import annotations

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.examples import bert_encoder, mlp, resnet50, small_cnn
from tensorforge.runtime import cuda


def _has_gpu() -> bool:
    return cuda.available()


gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU / CUDA driver (libcuda.so.1) in this machine")


@pytest.fixture
def no_driver(monkeypatch):
    monkeypatch.setenv("TENSORFORGE_LIBCUDA", "/nonexistent/libcuda.so.1")
    monkeypatch.setattr(cuda, "_DRIVER", None)


def test_missing_driver_is_named(no_driver):
    with pytest.raises(cuda.CudaUnavailable, match=r"libcuda\.so\.1 was not found"):
        tfg.compile(mlp(1), target="cuda")
    assert not cuda.available()


def test_bad_cuda_target_names():
    from tensorforge.compiler.gpu import _ordinal

    with pytest.raises(tfg.TensorforgeError, match="cuda:N"):
        _ordinal("cuda:x")
    assert _ordinal("cuda:1") == 1 and _ordinal("cuda") == 0


@gpu
@needs_gpu
@pytest.mark.parametrize("name,model,rtol", [("mlp", lambda: mlp(16), 1e-4), ("cnn", lambda: small_cnn(4), 1e-4),
                                             ("bert", lambda: bert_encoder(1, 32, 64, 4, 2), 1e-3),
                                             ("resnet50", lambda: resnet50(1), 1e-3)])  # fmt: skip
def test_models_on_gpu_match_cpu(name, model, rtol, rng):
    m = model()
    g = tfg.compile(m, target="cuda")
    xs = [rng.standard_normal(s.shape).astype(s.dtype.np) for s in g.inputs]
    got = g.call(*xs)
    ref = tfg.compile(m)(*xs)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert ".entry" in g.assembly()


@gpu
@needs_gpu
def test_torch_cuda_inputs_without_copy(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    g = tfg.compile(mlp(4), target="cuda")
    x = rng.standard_normal((4, 784)).astype(np.float32)
    got = g(torch.from_numpy(x).cuda())
    np.testing.assert_allclose(got, tfg.compile(mlp(4))(x), rtol=1e-4, atol=1e-5)


@gpu
@needs_gpu
def test_gpu_input_errors(rng):
    g = tfg.compile(mlp(2), target="cuda")
    with pytest.raises(tfg.InputError, match="expected"):
        g(np.zeros((3, 784), np.float32))


# -- the runtime's logic without a GPU: a driver whose device memory is host memory and whose launches run the
# kernels on the grid interpreter (allocation, arena offsets, kernel arguments, launch order and grid, copies at
# the border, status checks: everything but the hardware) ----------------------------------------------------
class FakeDriver:
    count = 1

    def __init__(self, program):
        import ctypes

        self.ct = ctypes
        self.kernels = {k.name: k for k in program.kernels}
        self.mem: dict[int, np.ndarray] = {}  # base address -> bytes
        self.next = 1 << 20
        self.launched: list[tuple[str, int, int]] = []
        self.lib = self

    # helpers
    def _set(self, ref, value):
        ref._obj.value = value
        return 0

    def _at(self, addr: int, nbytes: int) -> np.ndarray:
        for base, buf in self.mem.items():
            if base <= addr and addr + nbytes <= base + buf.size:
                return buf[addr - base : addr - base + nbytes]
        raise AssertionError(f"device access {addr:#x}+{nbytes} outside every allocation")

    def check(self, rc, what):
        assert rc == 0, what

    def error_text(self, rc):
        return str(rc)

    # the driver API used by runtime/cuda.py
    def cuDeviceGet(self, ref, ordinal):
        return self._set(ref, 0)

    def cuDeviceGetName(self, buf, n, dev):
        buf.value = b"Fake GPU"

    def cuDeviceGetAttribute(self, ref, attr, dev):
        return self._set(ref, {75: 8, 76: 0, 16: 4, 13: 1_000_000}[attr])

    def cuDevicePrimaryCtxRetain(self, ref, dev):
        return self._set(ref, 1)

    def cuCtxSetCurrent(self, ctx):
        return 0

    def cuModuleLoadDataEx(self, ref, ptx, n, opts, vals):
        assert b".entry" in ptx.value
        return self._set(ref, 2)

    def cuModuleGetFunction(self, ref, module, name):
        self.names = getattr(self, "names", [])
        self.names.append(name.decode())
        return self._set(ref, len(self.names))

    def cuStreamCreate(self, ref, flags):
        return self._set(ref, 3)

    def cuMemAlloc_v2(self, ref, n):
        n = n.value  # a size_t, never a plain int (which ctypes would pass as a 32-bit int)
        self.mem[self.next] = np.zeros(n, np.uint8)
        self._set(ref, self.next)
        self.next += (n + 4095) // 4096 * 4096 + 4096
        return 0

    def _copy_in(self, dst, src, n, *stream):
        self.ct.memmove(self._at(dst.value, n.value).ctypes.data, src, n.value)
        return 0

    cuMemcpyHtoD_v2 = cuMemcpyHtoDAsync_v2 = _copy_in

    def cuMemcpyDtoHAsync_v2(self, dst, src, n, stream):
        self.ct.memmove(dst, self._at(src.value, n.value).ctypes.data, n.value)
        return 0

    def cuMemcpyDtoDAsync_v2(self, dst, src, n, stream):
        self._at(dst.value, n.value)[:] = self._at(src.value, n.value)
        return 0

    def cuMemcpyDtoH_v2(self, dst, src, n):
        return self.cuMemcpyDtoHAsync_v2(dst, src, n, None)

    def cuMemsetD8Async(self, dst, value, n, stream):
        self._at(dst.value, n.value)[:] = value
        return 0

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, smem, stream, params, extra):
        from tensorforge.lower.gpu_kir import launch_dims
        from tensorforge.runtime.gridinterp import GridInterpreter, _mnp

        k = self.kernels[self.names[f.value - 1]]
        assert (gx, bx) == launch_dims(k.body) and (gy, gz, by, bz) == (1, 1, 1, 1)
        self.launched.append((k.name, gx, bx))
        interp = GridInterpreter.__new__(GridInterpreter)
        interp.races = {}
        ptrs = [self.ct.cast(params[i], self.ct.POINTER(self.ct.c_uint64)).contents.value for i in range(len(k.params))]
        interp._bound = {id(b): self._at(p, b.numel * _mnp(b.dtype).itemsize).view(_mnp(b.dtype))
                         for b, p in zip(k.params, ptrs)}  # fmt: skip
        interp.run_kernel(k)
        return 0

    def cuStreamSynchronize(self, s):
        return 0

    def cuCtxSynchronize(self):
        return 0

    def cuMemFree_v2(self, p):
        return 0

    def cuModuleUnload(self, m):
        return 0

    def cuStreamDestroy_v2(self, s):
        return 0

    def __getattr__(self, name):
        raise AttributeError(f"the fake driver has no {name}")


def _fake_model(model, monkeypatch):
    from tensorforge.codegen.targets import get_target
    from tensorforge.compiler.pipeline import Build, Options

    art = Build(model, get_target("nvptx-sm80"), Options()).run("llvm").artifact()
    fake = FakeDriver(art.program)
    monkeypatch.setattr(cuda, "_DRIVER", fake)
    return cuda.CudaModel(art), fake


@pytest.mark.parametrize("model", [lambda: mlp(3), lambda: small_cnn(2)], ids=["mlp", "cnn"])
def test_runtime_flow_on_a_fake_driver(model, monkeypatch, rng):
    m = model()
    g, fake = _fake_model(m, monkeypatch)
    assert g.info["arch"] == "sm_80" and g.info["name"] == "Fake GPU"
    x = rng.standard_normal(g.inputs[0].shape).astype(np.float32)
    np.testing.assert_allclose(g(x), tfg.compile(m)(x), rtol=1e-4, atol=1e-5)
    assert [n for n, _, _ in fake.launched] == [k.name for k in g.program.kernels]  # every kernel, in order
    x2 = rng.standard_normal(g.inputs[0].shape).astype(np.float32)  # a second call reuses the buffers
    np.testing.assert_allclose(g(x=x2) if g.inputs[0].name == "x" else g(x2), tfg.compile(m)(x2), rtol=1e-4, atol=1e-5)
    with pytest.raises(tfg.InputError):
        g(x.astype(np.float64))


def test_runtime_index_check_on_a_fake_driver(monkeypatch):
    """A failing run-time check stops the run before later kernels and raises DataError naming the index."""
    from onnx import TensorProto, helper

    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    nodes = [helper.make_node("Gather", ["t", "i"], ["g"], axis=0), helper.make_node("Relu", ["g"], ["y"])]
    g_ = helper.make_graph(nodes, "gather", [helper.make_tensor_value_info("i", TensorProto.INT64, [5])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 3])],
                           [helper.make_tensor("t", TensorProto.FLOAT, [4, 3], table.ravel())])  # fmt: skip
    model = helper.make_model(g_, opset_imports=[helper.make_opsetid("", 17)])
    g, fake = _fake_model(model, monkeypatch)
    np.testing.assert_array_equal(g(np.array([0, 3, 1, 2, 0])), table[[0, 3, 1, 2, 0]])
    fake.launched.clear()
    with pytest.raises(tfg.DataError, match="7"):
        g(np.array([0, 7, 1, 2, 0]))
    assert len(fake.launched) < len(g.program.kernels)


@gpu
@needs_gpu
def test_tf32_tensor_cores_on_gpu(rng):
    """The mma fragment layout as the hardware has it: a tf32 GEMM against the product of tf32-rounded inputs."""
    from onnx import TensorProto, helper

    from tensorforge.compiler.gpu import compile_cuda

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("a", [70, 45]), ("b", [45, 99]))]
    g_ = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", vi,
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [70, 99])])  # fmt: skip
    m = compile_cuda(helper.make_model(g_, opset_imports=[helper.make_opsetid("", 17)]), precision="tf32")
    a, b = rng.standard_normal((70, 45)).astype(np.float32), rng.standard_normal((45, 99)).astype(np.float32)

    def tf32(x):
        u = x.view(np.uint32)
        return ((u + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32).astype(np.float64)

    np.testing.assert_allclose(m(a, b), tf32(a) @ tf32(b), rtol=1e-4, atol=1e-4)
    assert "mma.sync" in m.assembly()


def test_device_array_inputs_on_a_fake_driver(monkeypatch, rng):
    """An input already on the device (``__cuda_array_interface__``) is read where it is, checked like any input."""
    import ctypes

    m = mlp(2)
    g, fake = _fake_model(m, monkeypatch)
    x = rng.standard_normal((2, 784)).astype(np.float32)
    ptr = ctypes.c_uint64()
    fake.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(x.nbytes))
    fake._at(ptr.value, x.nbytes)[:] = x.view(np.uint8).ravel()

    class DeviceArray:
        def __init__(self, shape, typestr):
            self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr.value, False),
                                             "strides": None, "version": 3}  # fmt: skip

    np.testing.assert_allclose(g(DeviceArray((2, 784), "<f4")), tfg.compile(m)(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(tfg.InputError, match="dtype"):
        g(DeviceArray((2, 784), "<f8"))
    with pytest.raises(tfg.InputError, match="shape"):
        g(DeviceArray((3, 784), "<f4"))
