"""tensorforge: a deep-learning compiler from ONNX / PyTorch models to native code through LLVM.

The pipeline, stage by stage (docs/ARCHITECTURE.md): frontends/ (model -> Graph) -> passes/ ->
lower/ (kernel IR) -> codegen/ (LLVM) -> compiler/ (the stages as a list, one Artifact, the compile
cache) -> runtime/ (an Executable per artifact). train/ compiles training steps; cli/ is the command line.
"""

__version__ = "0.1.0"

from . import lower as _lower  # noqa: E402,F401  (registers lowerings)
from . import ops as _ops  # noqa: E402,F401  (registers ops)
from .autodiff import grad  # noqa: E402
from .compiler import Options, TuningError, assembly, compile, load, tune  # noqa: E402
from .compiler.api import compare, quantize  # noqa: E402
from .compiler.tensorflow_api import from_tensorflow  # noqa: E402
from .compiler.torch_aot import torch_report  # noqa: E402
from .compiler.torch_backend import from_torch, torch_backend  # noqa: E402
from .errors import (  # noqa: E402
    CompileError,
    DataError,
    InputError,
    InvalidAttributeError,
    MemoryLimitError,
    ModelLoadError,
    ShapeError,
    TargetError,
    TensorforgeError,
    TrainingError,
    UnsupportedError,
)
from .explore import explore  # noqa: E402  (also adds CompiledModel.explore)
from .ir import DType, Graph  # noqa: E402
from .runtime.artifact import Artifact, ArtifactError  # noqa: E402
from .runtime.dynamic import DynamicModel  # noqa: E402
from .runtime.executable import Executable  # noqa: E402
from .runtime.model import CompiledModel  # noqa: E402
from .train import optim  # noqa: E402
from .train.prune_finetune import prune  # noqa: E402
from .train.step import TrainingStep, training_step  # noqa: E402

__all__ = [
    "Artifact",
    "ArtifactError",
    "CompileError",
    "CompiledModel",
    "DType",
    "DataError",
    "DynamicModel",
    "Executable",
    "Graph",
    "InputError",
    "InvalidAttributeError",
    "MemoryLimitError",
    "ModelLoadError",
    "Options",
    "ShapeError",
    "TargetError",
    "TensorforgeError",
    "TrainingError",
    "TrainingStep",
    "TuningError",
    "UnsupportedError",
    "assembly",
    "compare",
    "compile",
    "explore",
    "from_tensorflow",
    "from_torch",
    "grad",
    "load",
    "optim",
    "prune",
    "quantize",
    "torch_backend",
    "torch_report",
    "training_step",
    "tune",
]
