"""A training library run from Python: ``tfg.load("build/")`` of a ``tensorforge export-train`` directory.

An ``ExportedTrainer`` is an ``ExportedModel`` (calling it runs ``<p>_predict``) that also trains:
``train_step(x, y)`` runs ``<p>_train_step`` on one batch of exactly the exported batch size. Shapes and
dtypes are checked here (as for any export); what the C layer checks itself — class indices in range, a
non-finite step — comes back as its status and message (``TrainingError``, as Python's ``TrainingStep``
raises), so the library's own checks are what is exercised.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

import numpy as np

from ..errors import DataError, TensorforgeError, TrainingError
from ..ir.signature import check_inputs
from .library import INDEX_ERROR, ExportedModel, _TensorInfo


class ExportedTrainer(ExportedModel):
    """See the module docstring. ``inputs``: the data inputs of one batch; ``target``: the target's spec;
    ``state_specs``: the state buffers (parameters, optimizer state, statistics)."""

    def _bind(self, fn) -> None:
        if self.manifest.get("kind") != "training":
            raise TensorforgeError("not a training library (its manifest's kind is not 'training')")
        vp, info = ctypes.c_void_p, ctypes.POINTER(_TensorInfo)
        self._run = fn("predict", ctypes.c_int, vp, vp, vp)  # ExportedModel.__call__ / run: the forward pass
        self._train = fn("train_step", ctypes.c_int, vp, vp, vp, ctypes.POINTER(ctypes.c_float))
        self._set_lr = fn("set_learning_rate", ctypes.c_int, vp, ctypes.c_double)
        self._get_lr = fn("learning_rate", ctypes.c_double, vp)
        self._steps = fn("steps", ctypes.c_uint64, vp)
        self._save = fn("save_state", ctypes.c_int, vp, ctypes.c_char_p)
        self._load = fn("load_state", ctypes.c_int, vp, ctypes.c_char_p)
        self._get_state = fn("get_state", ctypes.c_int, vp, ctypes.c_int, vp)
        self._set_state = fn("set_state", ctypes.c_int, vp, ctypes.c_int, vp)
        self.target = self._spec(fn("target_info", info)())
        self.batch_size = int(fn("batch_size", ctypes.c_int)())
        self.num_classes = int(fn("num_classes", ctypes.c_int)())
        state_info = fn("state_info", info, ctypes.c_int)
        self.state_specs = [self._spec(state_info(i)) for i in range(fn("num_state", ctypes.c_int)())]
        kind = fn("state_kind", ctypes.c_char_p, ctypes.c_int)
        self.state_kinds = {s.name: kind(i).decode() for i, s in enumerate(self.state_specs)}

    def _raise(self, rc: int):
        msg = self._message(self._session, rc)
        if rc == INDEX_ERROR:
            raise DataError(msg)
        if rc in (2, 6):  # ERROR_ARGUMENT (class indices), ERROR_NOT_FINITE: what Python's step raises
            raise TrainingError(msg)
        raise TensorforgeError(msg)

    def _open_session(self):
        if self._session is None:
            raise TensorforgeError(f"model '{self.name}': the library's session was closed")
        return self._session

    def train_step(self, x, y) -> float:
        """One step on a batch of ``batch_size`` rows; returns its loss (before the update)."""
        xs = check_inputs(self.name, self.inputs, tuple(x) if isinstance(x, tuple | list) else (x,), {})[0]
        y = np.asarray(y)
        if y.dtype.kind in "iu" and self.target.dtype.np.kind in "iu":
            y = y.astype(self.target.dtype.np, copy=False)
        y = check_inputs(self.name, [self.target], (y,), {})[0][0]
        loss = ctypes.c_float()
        with self._lock:
            s = self._open_session()
            for i, a in enumerate(xs):
                self._in[i] = a.ctypes.data
            rc = self._train(s, self._in, y.ctypes.data, ctypes.byref(loss))
            if rc:
                self._raise(rc)
        return float(loss.value)

    def predict(self, x):
        """The forward pass with the current parameters (batch norm with its running statistics)."""
        return self(*(x if isinstance(x, tuple | list) else (x,)))

    @property
    def learning_rate(self) -> float:
        return float(self._get_lr(self._open_session()))

    @learning_rate.setter
    def learning_rate(self, lr: float) -> None:
        with self._lock:
            rc = self._set_lr(self._open_session(), float(lr))
            if rc:
                raise TensorforgeError(self._message(self._session, rc))

    @property
    def steps(self) -> int:
        return int(self._steps(self._open_session()))

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state buffers (copies), by name."""
        out = {}
        with self._lock:
            s = self._open_session()
            for i, spec in enumerate(self.state_specs):
                a = np.empty(spec.shape, spec.dtype.np)
                if self._get_state(s, i, a.ctypes.data):
                    raise TensorforgeError(self._message(s, 2))
                out[spec.name] = a
        return out

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        """Set the state buffers named in ``d`` (each checked for dtype and shape before any is written)."""
        specs = {s.name: (i, s) for i, s in enumerate(self.state_specs)}
        unknown = sorted(set(d) - set(specs))
        if unknown:
            raise TensorforgeError(f"model '{self.name}': no state buffer(s) {unknown}; it has {list(specs)}")
        arrays = {}
        for name, a in d.items():
            spec = specs[name][1]
            a = np.ascontiguousarray(a)
            if a.dtype != spec.dtype.np or a.shape != tuple(spec.shape):
                raise TensorforgeError(f"model '{self.name}': state '{name}' is {a.dtype}{list(a.shape)}, expected "
                                       f"{spec.dtype.np}{list(spec.shape)}")  # fmt: skip
            arrays[name] = a
        with self._lock:
            s = self._open_session()
            for name, a in arrays.items():
                if self._set_state(s, specs[name][0], a.ctypes.data):
                    raise TensorforgeError(self._message(s, 2))

    def save_state(self, path: str | os.PathLike) -> None:
        """The state, learning rate and step count in the library's checked state file (written atomically)."""
        self._file(self._save, path)

    def load_state(self, path: str | os.PathLike) -> None:
        """Restore a state file written by ``save_state`` or ``<p>_save_state`` (another model's is refused)."""
        self._file(self._load, path)

    def _file(self, fn, path) -> None:
        with self._lock:
            s = self._open_session()
            rc = fn(s, os.fsencode(os.fspath(path)))
            if rc:
                raise TensorforgeError(self._message(s, rc))


__all__ = ["ExportedTrainer"]
