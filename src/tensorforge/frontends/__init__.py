from .onnx import import_onnx, load_model

__all__ = ["import_onnx", "load_model"]
