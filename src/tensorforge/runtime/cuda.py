"""The CUDA runtime: a program compiled for an NVPTX target run on an NVIDIA GPU through the driver API.

Bound with ``ctypes`` to ``libcuda.so.1`` (the driver every NVIDIA installation has) rather than through the
``cuda-python`` package: the dozen entry points used here have been stable since CUDA 4, PTX is compiled by the
driver's own JIT (``cuModuleLoadDataEx``), so nothing beyond the driver has to be installed or kept in step with
its version. Without a driver or a GPU every entry raises ``CudaUnavailable`` naming what is missing.

``CudaModel`` loads an artifact's PTX once into a context on one device, allocates one device arena of the
planned size (``Program.arena_bytes``: intermediates share it exactly as on the CPU), the constants and one
buffer per input and output, and creates a stream. A call copies the inputs in (host to device), launches every
kernel in order on the stream with the grid the GPU schedule chose (``Artifact.metadata["gpu_launch"]``) and
copies the outputs out: copies only at the border. Inputs already on the device (anything with
``__cuda_array_interface__``: torch CUDA tensors, CuPy arrays) are read where they are, without a copy.
Programs with run-time index checks (``lower/checks.py``) read the status word back after each checking
kernel and raise ``DataError`` before a later kernel can use a bad index.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time

import numpy as np

from ..errors import DataError, InputError, TensorforgeError
from ..ir.signature import InputSpec, bind_args, check_array, check_shape
from ..lower.checks import STATUS_WORDS
from .artifact import Artifact

LIBCUDA = ("libcuda.so.1", "libcuda.so")
_CU_JIT_ERROR_LOG_BUFFER, _CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 5, 6
_ATTR_CC_MAJOR, _ATTR_CC_MINOR, _ATTR_SM_COUNT, _ATTR_CLOCK_KHZ = 75, 76, 16, 13


class CudaError(TensorforgeError):
    """A CUDA driver call failed."""


class CudaUnavailable(CudaError):
    """No usable NVIDIA driver or GPU in this process."""


class Driver:
    """The driver API entry points used, loaded from ``libcuda.so.1`` (``TENSORFORGE_LIBCUDA`` overrides)."""

    def __init__(self):
        names = [os.environ["TENSORFORGE_LIBCUDA"]] if os.environ.get("TENSORFORGE_LIBCUDA") else list(LIBCUDA)
        self.lib = None
        errors = []
        for n in names:
            try:
                self.lib = ctypes.CDLL(n)
                break
            except OSError as e:
                errors.append(f"{n}: {e}")
        if self.lib is None:
            raise CudaUnavailable(
                "the CUDA driver library libcuda.so.1 was not found (no NVIDIA driver installed, or not on the "
                f"library path): {errors[0]}"
            )
        rc = self.lib.cuInit(0)
        if rc != 0:
            raise CudaUnavailable(f"cuInit failed: {self.error_text(rc)} (no NVIDIA GPU visible to this process?)")
        n = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
        if n.value == 0:
            raise CudaUnavailable("the CUDA driver sees no GPU (CUDA_VISIBLE_DEVICES?)")
        self.count = n.value

    def error_text(self, rc: int) -> str:
        name, text = ctypes.c_char_p(), ctypes.c_char_p()
        try:
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            self.lib.cuGetErrorString(rc, ctypes.byref(text))
        except AttributeError:
            pass
        n = name.value.decode() if name.value else f"error {rc}"
        return f"{n}: {text.value.decode()}" if text.value else n

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise CudaError(f"{what} failed: {self.error_text(rc)}")

    def __getattr__(self, name: str):
        fn = getattr(self.lib, name)

        def call(*args):
            self.check(fn(*args), name)

        return call


_DRIVER: Driver | None = None
_LOCK = threading.Lock()


def driver() -> Driver:
    """The process's driver (loaded and initialized once); ``CudaUnavailable`` without a driver or GPU."""
    global _DRIVER
    with _LOCK:
        if _DRIVER is None:
            _DRIVER = Driver()
        return _DRIVER


def available() -> bool:
    try:
        driver()
        return True
    except CudaError:
        return False


def device_info(ordinal: int = 0) -> dict:
    """Name, compute capability (``sm``: 90), ``arch`` (``sm_90``), multiprocessors and clock of a GPU."""
    d = driver()
    if not 0 <= ordinal < d.count:
        raise CudaError(f"no GPU {ordinal}: the driver sees {d.count}")
    dev = ctypes.c_int()
    d.cuDeviceGet(ctypes.byref(dev), ordinal)
    name = ctypes.create_string_buffer(256)
    d.cuDeviceGetName(name, 256, dev)

    def attr(a: int) -> int:
        v = ctypes.c_int()
        d.cuDeviceGetAttribute(ctypes.byref(v), a, dev)
        return v.value

    sm = attr(_ATTR_CC_MAJOR) * 10 + attr(_ATTR_CC_MINOR)
    return {"name": name.value.decode(), "sm": sm, "arch": f"sm_{sm}", "sms": attr(_ATTR_SM_COUNT),
            "clock_khz": attr(_ATTR_CLOCK_KHZ), "device": dev.value}  # fmt: skip


class _DevicePtr(ctypes.c_uint64):
    pass


class CudaModel:
    """A compiled model on an NVIDIA GPU: numpy (or CUDA arrays) in, numpy out."""

    def __init__(self, artifact: Artifact, ordinal: int = 0):
        self.artifact = artifact
        p = self.program = artifact.program
        self.name = p.name
        launch = artifact.metadata.get("gpu_launch")
        if not artifact.target.is_gpu or launch is None:
            raise CudaError(f"model '{self.name}' was compiled for {artifact.target.name}, not for a GPU")
        d = self.d = driver()
        info = self.info = device_info(ordinal)
        self.ctx = ctypes.c_void_p()
        d.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), info["device"])
        d.cuCtxSetCurrent(self.ctx)
        self.ptx = artifact.assembly()
        self.module = self._load(self.ptx)
        self.functions = []
        for k in p.kernels:
            f = ctypes.c_void_p()
            d.cuModuleGetFunction(ctypes.byref(f), self.module, k.name.encode())
            self.functions.append((f, *launch[k.name]))
        self.stream = ctypes.c_void_p()
        d.cuStreamCreate(ctypes.byref(self.stream), 0)
        self._allocs: list[int] = []
        self.arena = self._alloc(p.arena_bytes + 64)
        self.consts = [self._upload(np.ascontiguousarray(c)) for c in p.consts]
        self.in_bufs = [self._alloc(dt.itemsize * int(np.prod(s))) for _, dt, s in p.inputs]
        self.out_bufs = [self._alloc(dt.itemsize * int(np.prod(s))) for _, dt, s in p.outputs]
        self.inputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in p.inputs]
        self._lock = threading.Lock()

    # -- memory ---------------------------------------------------------------------------------------------
    def _alloc(self, nbytes: int) -> int:
        ptr = _DevicePtr()
        self.d.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(int(nbytes), 8)))
        self._allocs.append(ptr.value)
        return ptr.value

    def _upload(self, a: np.ndarray) -> int:
        ptr = self._alloc(a.nbytes)
        if a.nbytes:
            self.d.cuMemcpyHtoD_v2(_DevicePtr(ptr), a.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(a.nbytes))
        return ptr

    def _load(self, ptx: str):
        mod = ctypes.c_void_p()
        log = ctypes.create_string_buffer(8192)
        opts = (ctypes.c_int * 2)(_CU_JIT_ERROR_LOG_BUFFER, _CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES)
        vals = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(8192))
        rc = self.d.lib.cuModuleLoadDataEx(ctypes.byref(mod), ctypes.c_char_p(ptx.encode()), 2, opts, vals)
        if rc != 0:
            raise CudaError(f"the driver's JIT rejected the PTX of model '{self.name}': {self.d.error_text(rc)}: "
                            f"{log.value.decode(errors='replace')}")  # fmt: skip
        return mod

    # -- running --------------------------------------------------------------------------------------------
    def _pointer(self, kind: str, idx: int, ins: list[int]) -> int:
        if kind == "in":
            return ins[idx]
        if kind == "out":
            return self.out_bufs[idx]
        if kind == "const":
            return self.consts[idx]
        return self.arena + idx

    def _device_inputs(self, args: list) -> tuple[list[int], list]:
        """Device pointers of the inputs: CUDA arrays as they are, numpy arrays checked and copied in."""
        ptrs, keep, dims = [], [], {}  # type: ignore[var-annotated]
        for i, (spec, x) in enumerate(zip(self.inputs, args)):
            cai = getattr(x, "__cuda_array_interface__", None)
            if cai is not None:
                check_shape(self.name, spec, cai["shape"], dims)
                if np.dtype(cai["typestr"]) != spec.dtype.np:
                    raise InputError(f"model '{self.name}': input '{spec.name}' has dtype {np.dtype(cai['typestr'])}, "
                                     f"expected {spec.dtype.np}")  # fmt: skip
                if cai.get("strides") not in (None, np.zeros(spec.shape, spec.dtype.np).strides):
                    raise InputError(f"model '{self.name}': input '{spec.name}' (a CUDA array) must be C-contiguous")
                ptrs.append(int(cai["data"][0]))
                keep.append(x)
                continue
            a = check_array(self.name, spec, x, dims)
            if a.nbytes:
                self.d.cuMemcpyHtoDAsync_v2(_DevicePtr(self.in_bufs[i]), a.ctypes.data_as(ctypes.c_void_p),
                                            ctypes.c_size_t(a.nbytes), self.stream)  # fmt: skip
            keep.append(a)
            ptrs.append(self.in_bufs[i])
        if any(getattr(x, "__cuda_array_interface__", None) is not None for x in args):
            self.d.cuCtxSynchronize()  # the producer's work on its own stream (torch's) is finished
        return ptrs, keep

    def _launch_all(self, ins: list[int]) -> None:
        p = self.program
        checks = set(p.check_kernels)
        if checks:
            self.d.cuMemsetD8Async(_DevicePtr(self.arena + p.status_offset), 0, ctypes.c_size_t(8), self.stream)
        for i, ((f, blocks, threads), args) in enumerate(zip(self.functions, p.kernel_args)):
            vals = [_DevicePtr(self._pointer(kind, idx, ins)) for kind, idx in args]
            params = (ctypes.c_void_p * max(len(vals), 1))(*[ctypes.cast(ctypes.byref(v), ctypes.c_void_p)
                                                             for v in vals])  # fmt: skip
            self.d.cuLaunchKernel(f, blocks, 1, 1, threads, 1, 1, 0, self.stream, params, None)
            if i in checks:
                words = np.zeros(STATUS_WORDS, np.int64)
                self.d.cuMemcpyDtoHAsync_v2(words.ctypes.data_as(ctypes.c_void_p),
                                            _DevicePtr(self.arena + p.status_offset),
                                            ctypes.c_size_t(words.nbytes), self.stream)  # fmt: skip
                self.d.cuStreamSynchronize(self.stream)
                if words[0]:
                    _, check, value, pos = (int(w) for w in words)
                    raise DataError(p.checks[check].message(self.name, value, pos))

    def __call__(self, *args, **kwargs):
        outs = self.call(*args, **kwargs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def call(self, *args, **kwargs) -> list:
        """Run; returns fresh outputs (inputs by position or name: numpy arrays or CUDA arrays). When an input is
        on the device the outputs stay there: torch CUDA tensors when it was one (on its device), else
        ``DeviceArray`` (``__cuda_array_interface__``, for CuPy, Numba, ``torch.as_tensor``); otherwise numpy."""
        args = bind_args(self.name, [s.name for s in self.inputs], args, kwargs)
        p = self.program
        with self._lock:
            self.d.cuCtxSetCurrent(self.ctx)
            ins, keep = self._device_inputs(args)
            self._launch_all(ins)
            on_device = [x for x in args if getattr(x, "__cuda_array_interface__", None) is not None]
            if on_device:
                outs = [self._device_output(i, on_device[0]) for i in range(len(p.outputs))]
                self.d.cuStreamSynchronize(self.stream)
                return outs
            outs = []
            for i, (_, dt, shape) in enumerate(p.outputs):
                if i in p.const_outputs:
                    outs.append(np.array(p.const_outputs[i]))
                    continue
                o = np.empty(shape, dt.np)
                if o.nbytes:
                    self.d.cuMemcpyDtoHAsync_v2(o.ctypes.data_as(ctypes.c_void_p), _DevicePtr(self.out_bufs[i]),
                                                ctypes.c_size_t(o.nbytes), self.stream)  # fmt: skip
                outs.append(o)
            self.d.cuStreamSynchronize(self.stream)
            del keep
        return outs

    def _device_output(self, i: int, like):
        """Output ``i`` copied on the device into a new array of the kind of the device input ``like``."""
        p = self.program
        _, dt, shape = p.outputs[i]
        host = np.asarray(p.const_outputs[i], dt.np) if i in p.const_outputs else None
        if _is_torch(like):
            import torch

            t = torch.empty(tuple(shape), dtype=getattr(torch, np.dtype(dt.np).name), device=like.device)
            dst = t.data_ptr()
            out = t
        else:
            out = DeviceArray(self, tuple(shape), np.dtype(dt.np))
            dst = out.ptr
        nbytes = dt.itemsize * int(np.prod(shape))
        if nbytes and host is not None:
            self.d.cuMemcpyHtoDAsync_v2(_DevicePtr(dst), np.ascontiguousarray(host).ctypes.data_as(ctypes.c_void_p),
                                        ctypes.c_size_t(nbytes), self.stream)  # fmt: skip
            self.d.cuStreamSynchronize(self.stream)  # the host array dies here
        elif nbytes:
            self.d.cuMemcpyDtoDAsync_v2(_DevicePtr(dst), _DevicePtr(self.out_bufs[i]), ctypes.c_size_t(nbytes),
                                        self.stream)  # fmt: skip
        return out

    def benchmark(self, *args, repeat: int = 50, warmup: int = 5) -> float:
        """Median seconds of the kernels of one run on the device (inputs copied in once, outside the timing)."""
        with self._lock:
            self.d.cuCtxSetCurrent(self.ctx)
            ins, keep = self._device_inputs(bind_args(self.name, [s.name for s in self.inputs], args, {}))
            for _ in range(warmup):
                self._launch_all(ins)
            self.d.cuStreamSynchronize(self.stream)
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                self._launch_all(ins)
                self.d.cuStreamSynchronize(self.stream)
                times.append(time.perf_counter() - t0)
            del keep
        return float(np.median(times))

    def assembly(self) -> str:
        """The PTX of every kernel (the driver's JIT compiles it for this GPU at load)."""
        return self.ptx

    def close(self) -> None:
        if getattr(self, "_allocs", None):
            self.d.cuCtxSetCurrent(self.ctx)
            for ptr in self._allocs:
                self.d.lib.cuMemFree_v2(_DevicePtr(ptr))
            self._allocs = []
            self.d.lib.cuModuleUnload(self.module)
            self.d.lib.cuStreamDestroy_v2(self.stream)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "data_ptr")


# -- DLPack (unversioned "dltensor" capsules, DLPack 0.8 structs) ----------------------------------------------
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32), ("dtype", _DLDataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]  # fmt: skip


class DLManagedTensor(ctypes.Structure):
    pass


_DL_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DL_DELETER)]
KDL_CUDA = 2
_DL_CODES = {"f": 2, "i": 0, "u": 1, "b": 6}  # kDLFloat, kDLInt, kDLUInt, kDLBool
_DL_LIVE: dict[int, tuple] = {}  # managed tensor address -> what it keeps alive (the array, the structs)
_DL_NAME = b"dltensor"


def _dl_delete(managed) -> None:
    _DL_LIVE.pop(ctypes.addressof(managed.contents), None)


_DL_DELETE = _DL_DELETER(_dl_delete)
_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _capsule_gone(capsule: int) -> None:
    """A capsule no consumer took (still named ``dltensor``): its tensor is released here."""
    api = ctypes.pythonapi
    api.PyCapsule_IsValid.restype, api.PyCapsule_IsValid.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
    if api.PyCapsule_IsValid(capsule, _DL_NAME):
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _DL_LIVE.pop(api.PyCapsule_GetPointer(capsule, _DL_NAME), None)


_CAPSULE_GONE = _CAPSULE_DESTRUCTOR(_capsule_gone)


class DeviceArray:
    """An output in device memory (``cuMemAlloc``, freed when the array is): ``__cuda_array_interface__``
    (version 3) for CuPy, Numba or ``torch.as_tensor`` and ``__dlpack__`` (``torch.from_dlpack``,
    ``cupy.from_dlpack``) to read it without a copy; ``numpy()`` copies it to the host."""

    def __init__(self, model: CudaModel, shape: tuple[int, ...], dtype: np.dtype):
        self.shape, self.dtype, self._d, self._ctx = shape, dtype, model.d, model.ctx
        self.device_id = int(model.info.get("device", 0))
        ptr = _DevicePtr()
        self._d.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(dtype.itemsize * int(np.prod(shape)), 8)))
        self.ptr = ptr.value

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "strides": None,
                "version": 3, "stream": None}  # fmt: skip

    def __dlpack_device__(self) -> tuple[int, int]:
        return (KDL_CUDA, self.device_id)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """A ``dltensor`` capsule viewing this array (kept alive until the consumer calls the deleter); the
        data is ready (the model's stream was synchronized), so ``stream`` needs no wait."""
        if copy:
            raise BufferError("DeviceArray.__dlpack__: copy=True is not supported")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"DeviceArray is on CUDA device {self.device_id}, not {tuple(dl_device)}")
        shape = (ctypes.c_int64 * max(len(self.shape), 1))(*self.shape)
        code = _DL_CODES.get(self.dtype.kind)
        if code is None:
            raise BufferError(f"no DLPack type for {self.dtype}")
        m = DLManagedTensor()
        m.dl_tensor = _DLTensor(self.ptr, _DLDevice(KDL_CUDA, self.device_id), len(self.shape),
                                _DLDataType(code, self.dtype.itemsize * 8, 1), shape, None, 0)  # fmt: skip
        m.deleter = _DL_DELETE
        _DL_LIVE[ctypes.addressof(m)] = (self, m, shape)
        api = ctypes.pythonapi
        api.PyCapsule_New.restype = ctypes.py_object
        api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        return api.PyCapsule_New(ctypes.addressof(m), _DL_NAME, ctypes.cast(_CAPSULE_GONE, ctypes.c_void_p))

    def numpy(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        if out.nbytes:
            self._d.cuCtxSetCurrent(self._ctx)
            self._d.cuMemcpyDtoH_v2(
                out.ctypes.data_as(ctypes.c_void_p), _DevicePtr(self.ptr), ctypes.c_size_t(out.nbytes)
            )
        return out

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __del__(self):
        try:
            self._d.lib.cuMemFree_v2(_DevicePtr(self.ptr))
        except Exception:
            pass


__all__ = ["CudaError", "CudaModel", "DeviceArray", "CudaUnavailable", "available", "device_info", "driver"]
