"""Model compression: calibration, quantization (QDQ in and out) and pruning (Graph/ONNX -> Graph/ONNX)."""

from .prune import PruneError, PruneReport, prune_model  # noqa: F401
