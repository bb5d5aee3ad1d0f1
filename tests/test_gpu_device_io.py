"""Outputs that stay on the device when the inputs were there (``CudaModel``): ``DeviceArray`` (CUDA array
interface) on a fake driver whose device memory is host memory, torch CUDA tensors on a GPU."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.examples import mlp
from tensorforge.runtime import cuda
from test_gpu_cuda import _fake_model, gpu, needs_gpu


class _DeviceInput:
    def __init__(self, ptr: int, shape, typestr="<f4"):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False), "strides": None,
                                         "version": 3}  # fmt: skip


def test_device_inputs_give_device_outputs(monkeypatch, rng):
    m = mlp(2)
    g, fake = _fake_model(m, monkeypatch)
    x = rng.standard_normal((2, 784)).astype(np.float32)
    ptr = ctypes.c_uint64()
    fake.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(x.nbytes))
    fake._at(ptr.value, x.nbytes)[:] = x.view(np.uint8).ravel()
    y = g(_DeviceInput(ptr.value, (2, 784)))
    assert isinstance(y, cuda.DeviceArray)
    cai = y.__cuda_array_interface__
    assert cai["shape"] == (2, 10) and cai["typestr"] == "<f4" and cai["data"][0] != g.out_bufs[0]
    on_device = fake._at(cai["data"][0], 2 * 10 * 4).view(np.float32).reshape(2, 10)  # its own allocation
    ref = tfg.compile(m)(x)
    np.testing.assert_allclose(on_device, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-4, atol=1e-5)  # numpy() copies it back
    assert isinstance(g(x), np.ndarray)  # host inputs: host outputs


@gpu
@needs_gpu
def test_torch_cuda_in_torch_cuda_out(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    g = tfg.compile(mlp(4), target="cuda")
    x = rng.standard_normal((4, 784)).astype(np.float32)
    y = g(torch.from_numpy(x).cuda())
    assert isinstance(y, torch.Tensor) and y.is_cuda
    np.testing.assert_allclose(y.cpu().numpy(), tfg.compile(mlp(4))(x), rtol=1e-4, atol=1e-5)
    assert torch.from_dlpack(torch.utils.dlpack.to_dlpack(y)).data_ptr() == y.data_ptr()  # DLPack, zero-copy


def test_device_output_as_dlpack(monkeypatch, rng):
    """``DeviceArray.__dlpack__``: a ``dltensor`` capsule describing the device buffer (kDLCUDA, shape, float32),
    the array kept alive until the consumer's deleter call, or until an unconsumed capsule is dropped."""
    g, fake = _fake_model(mlp(2), monkeypatch)
    x = rng.standard_normal((2, 784)).astype(np.float32)
    ptr = ctypes.c_uint64()
    fake.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(x.nbytes))
    fake._at(ptr.value, x.nbytes)[:] = x.view(np.uint8).ravel()
    y = g(_DeviceInput(ptr.value, (2, 784)))
    assert y.__dlpack_device__() == (cuda.KDL_CUDA, 0)
    api = ctypes.pythonapi
    api.PyCapsule_GetPointer.restype, api.PyCapsule_GetPointer.argtypes = ctypes.c_void_p, [ctypes.py_object,
                                                                                          ctypes.c_char_p]  # fmt: skip
    api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
    cap = y.__dlpack__()
    m = cuda.DLManagedTensor.from_address(api.PyCapsule_GetPointer(cap, b"dltensor"))
    t = m.dl_tensor
    assert (t.data, t.device.device_type, t.ndim, t.dtype.code, t.dtype.bits, t.dtype.lanes) == (y.ptr, 2, 2, 2, 32, 1)
    assert [t.shape[i] for i in range(2)] == [2, 10] and not t.strides
    on_device = fake._at(t.data, 80).view(np.float32).reshape(2, 10)  # the fake's device addresses are its own
    np.testing.assert_allclose(on_device, tfg.compile(mlp(2))(x), rtol=1e-4, atol=1e-5)
    assert len(cuda._DL_LIVE) == 1
    used = b"used_dltensor"
    api.PyCapsule_SetName(cap, used)  # what a consumer does: take it, later call the deleter
    m.deleter(ctypes.pointer(m))
    assert not cuda._DL_LIVE
    del cap
    cap2 = y.__dlpack__()
    assert len(cuda._DL_LIVE) == 1
    del cap2  # never consumed: the capsule's destructor releases it
    assert not cuda._DL_LIVE
    with pytest.raises(BufferError, match="copy"):
        y.__dlpack__(copy=True)
