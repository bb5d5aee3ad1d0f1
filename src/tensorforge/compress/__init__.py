"""Model compression: calibration, quantization (QDQ in and out) and pruning (Graph/ONNX -> Graph/ONNX)."""

from .api import quantize  # noqa: F401
from .compare import Comparison, compare  # noqa: F401
from .prune import PruneError, PruneReport, prune_model  # noqa: F401
from .quantize import QuantizationReport  # noqa: F401
