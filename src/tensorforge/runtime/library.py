"""An exported library run from Python: ``tfg.load("build/")`` (no recompilation, no LLVM).

The directory's manifest (``<name>.json``, written by ``runtime/aot.py``; JSON, never code) names the library
and the target it was built for; a library for another architecture is refused before it is loaded. The
library describes its own inputs and outputs (``<name>_input_info``), which is what the border checks use:
the same checks as a compiled model (``ir/signature.py``), so native code is never entered with arrays it was
not compiled for. Each ``ExportedModel`` owns one session; calls on it are serialized. Loading a shared
library runs its code: load exports you built or trust (unlike an artifact file, which holds no code that
runs before its checks pass).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import threading
from collections.abc import Mapping

import numpy as np

from ..errors import DataError, TensorforgeError
from ..ir.dtype import DType
from ..ir.signature import InputSpec, check_feeds, check_inputs
from ..util.forksafe import renew_in_child

MANIFEST_FORMAT = "tensorforge-export"
_BY_ONNX = {d.onnx: d for d in DType}
INDEX_ERROR = 1  # capi.STATUS["ERROR_INDEX"]


class _TensorInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("numel", ctypes.c_size_t),
                ("bytes", ctypes.c_size_t)]  # fmt: skip


def read_manifest(path: str) -> tuple[dict, str]:
    """The manifest of export directory ``path`` (or the manifest file itself) and its directory."""
    d = path
    if os.path.isfile(path):
        d = os.path.dirname(os.path.abspath(path))
        files = [os.path.basename(path)]
    else:
        try:
            files = sorted(f for f in os.listdir(path) if f.endswith(".json"))
        except OSError as e:
            raise TensorforgeError(f"cannot read {path!r}: {e.strerror or e}") from None
    for f in files:
        try:
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                m = json.load(fh)
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT:
            return m, d
    raise TensorforgeError(f"{path!r} holds no exported tensorforge library (no <name>.json manifest written by "
                           "`tensorforge export`)")  # fmt: skip


def _host_arch() -> str:
    return platform.machine().replace("arm64", "aarch64").replace("AMD64", "x86_64")


class ExportedModel:
    """An exported library's model in this process. Call it with numpy arrays, like a compiled model."""

    def __init__(self, path: str, num_threads: int | None = None):
        m, d = read_manifest(path)
        self.manifest = m
        prefix = str(m.get("name", ""))
        if not prefix.isidentifier():
            raise TensorforgeError(f"{path!r}: the manifest's library name {prefix!r} is not a C identifier")
        triple = str(m.get("target", {}).get("triple", ""))
        if triple.split("-")[0] != _host_arch():
            raise TensorforgeError(f"{path!r} holds a library for {triple or 'an unknown target'}; this machine is "
                                   f"{_host_arch()} (run it there, or under qemu with its example)")  # fmt: skip
        lib_path = os.path.join(d, f"lib{prefix}.so")
        try:
            self._lib = lib = ctypes.CDLL(os.path.abspath(lib_path))
        except OSError as e:
            raise TensorforgeError(f"cannot load {lib_path!r}: {e}") from None
        fn = lambda n, res, *args: self._fn(prefix, n, res, args)  # noqa: E731
        if fn("api_version", ctypes.c_int)() != 1:
            raise TensorforgeError(f"{lib_path!r} has C API version {lib[prefix + '_api_version']()}, expected 1")
        info = ctypes.POINTER(_TensorInfo)
        self._input_info = fn("input_info", info, ctypes.c_int)
        self._output_info = fn("output_info", info, ctypes.c_int)
        self._error = fn("session_error", ctypes.c_char_p, ctypes.c_void_p)
        self._status = fn("status_string", ctypes.c_char_p, ctypes.c_int)
        self._destroy = fn("session_destroy", None, ctypes.c_void_p)
        self._set_threads = fn("session_set_num_threads", ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
        self._bind(fn)
        self.name = fn("model_name", ctypes.c_char_p)().decode("utf-8", "replace")
        self.inputs = [self._spec(self._input_info(i)) for i in range(fn("num_inputs", ctypes.c_int)())]
        self.outputs = [self._spec(self._output_info(i)) for i in range(fn("num_outputs", ctypes.c_int)())]
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]
        weights = m.get("weights")
        wpath = None
        if weights:
            wpath = os.path.join(d, os.path.basename(str(weights)))
        session = ctypes.c_void_p()
        create = fn("session_create", ctypes.c_int, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p)
        rc = create(ctypes.byref(session), None if wpath is None else os.fsencode(wpath))
        if rc != 0:
            raise TensorforgeError(f"{lib_path}: {self._message(None, rc)}")
        self._session = session
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")
        self._in = (ctypes.c_void_p * max(1, len(self.inputs)))()
        self._out = (ctypes.c_void_p * max(1, len(self.outputs)))()
        self.num_threads = num_threads or 1

    def _bind(self, fn) -> None:
        """The functions of the library's kind (an inference library: ``<p>_run``)."""
        if self.manifest.get("kind", "inference") != "inference":
            raise TensorforgeError(f"the library holds a {self.manifest.get('kind')!r} export; open it with tfg.load")
        self._run = fn("run", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)

    def _fn(self, prefix: str, name: str, res, args):
        try:
            f = self._lib[f"{prefix}_{name}"]
        except AttributeError:
            raise TensorforgeError(f"the library has no function {prefix}_{name}: not a tensorforge export") from None
        f.restype, f.argtypes = res, list(args)
        return f

    @staticmethod
    def _spec(p) -> InputSpec:
        t = p.contents
        dt = _BY_ONNX.get(t.dtype)
        if dt is None:
            raise TensorforgeError(f"the library reports an unknown element type {t.dtype}")
        return InputSpec(t.name.decode("utf-8", "replace"), dt, tuple(int(t.shape[k]) for k in range(t.rank)))

    def _message(self, session, rc: int) -> str:
        msg = (self._error(session) or b"").decode("utf-8", "replace")
        return msg or self._status(rc).decode()

    @property
    def num_threads(self) -> int:
        return self._threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("num_threads must be >= 1")
        self._set_threads(self._session, int(n))
        self._threads = int(n)

    def __call__(self, *args, **kwargs):
        outs = self._call(check_inputs(self.name, self.inputs, args, kwargs)[0])
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = check_inputs(self.name, self.inputs, (), check_feeds(self.name, feeds))[0]
        return dict(zip(self.output_names, self._call(xs)))

    def _call(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        outs = [np.empty(s.shape, s.dtype.np) for s in self.outputs]
        with self._lock:
            if self._session is None:
                raise TensorforgeError(f"model '{self.name}': the library's session was closed")
            for i, x in enumerate(xs):
                self._in[i] = x.ctypes.data
            for i, o in enumerate(outs):
                self._out[i] = o.ctypes.data
            rc = self._run(self._session, self._in, self._out)
            if rc != 0:
                msg = self._message(self._session, rc)
                raise DataError(msg) if rc == INDEX_ERROR else TensorforgeError(msg)
        return outs

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._destroy(self._session)
                self._session = None

    def __del__(self):
        s = getattr(self, "_session", None)
        if s is not None:
            self._destroy(s)
            self._session = None


def open_export(path: str, num_threads: int | None = None):
    """The export in directory ``path`` run through its C API: an ``ExportedModel`` (``tensorforge export``)
    or an ``ExportedTrainer`` (``tensorforge export-train``), by the manifest's kind."""
    m, _ = read_manifest(path)
    if m.get("kind") == "training":
        from .library_train import ExportedTrainer

        return ExportedTrainer(path, num_threads)
    return ExportedModel(path, num_threads)


__all__ = ["ExportedModel", "open_export", "read_manifest"]
