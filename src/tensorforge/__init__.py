"""tensorforge: a deep-learning compiler from ONNX / PyTorch models to native code through LLVM."""

__version__ = "0.1.0"

from . import lower as _lower  # noqa: E402,F401  (registers lowerings)
from . import ops as _ops  # noqa: E402,F401  (registers ops)
from . import optim  # noqa: E402
from .autodiff import grad  # noqa: E402
from .compiler import DynamicModel, assembly, compile  # noqa: E402
from .errors import (  # noqa: E402
    CompileError,
    InputError,
    ModelLoadError,
    ShapeError,
    TargetError,
    TensorforgeError,
    TrainingError,
    UnsupportedError,
)
from .frontends.torch import from_torch, torch_backend  # noqa: E402
from .ir import DType, Graph  # noqa: E402
from .runtime.model import CompiledModel  # noqa: E402
from .runtime.training import TrainingStep, training_step  # noqa: E402

__all__ = [
    "CompileError",
    "CompiledModel",
    "DType",
    "DynamicModel",
    "Graph",
    "InputError",
    "ModelLoadError",
    "ShapeError",
    "TargetError",
    "TensorforgeError",
    "TrainingError",
    "TrainingStep",
    "UnsupportedError",
    "assembly",
    "compile",
    "from_torch",
    "grad",
    "optim",
    "torch_backend",
    "training_step",
]
