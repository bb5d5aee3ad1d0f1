"""``onnx.backend.base.Backend`` implementation, so ONNX's own test suite runs against tensorforge.

import onnx.backend.test
import tensorforge.compiler.onnx_backend as backend
onnx.backend.test.BackendTest(backend, __name__)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from ..errors import TensorforgeError
from .api import compile as _compile


class TensorforgeRep(BackendRep):
    def __init__(self, model):
        self.model = model

    def run(self, inputs, **kwargs) -> tuple[np.ndarray, ...]:
        names = self.model.input_names
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(names):
                raise TensorforgeError(f"expected {len(names)} inputs {names}, got {len(inputs)}")
            feeds = dict(zip(names, inputs))
        out = self.model.run({k: np.asarray(v) for k, v in feeds.items()})
        return tuple(out[n] for n in self.model.output_names)


class TensorforgeBackend(Backend):
    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs) -> TensorforgeRep:
        super().prepare(model, device, **kwargs)
        if not cls.supports_device(device):
            raise TensorforgeError(f"device {device!r} is not supported (CPU only)")
        return TensorforgeRep(_compile(model))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs, device: str = "CPU", **kwargs) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **kwargs):  # fmt: skip
        raise NotImplementedError("run_node is not supported: tensorforge compiles whole models")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = TensorforgeBackend.prepare
run_model = TensorforgeBackend.run_model
run_node = TensorforgeBackend.run_node
supports_device = TensorforgeBackend.supports_device
is_compatible = TensorforgeBackend.is_compatible
