"""PyTorch through ONNX: ``nn.Module`` -> ONNX (then imported like any ONNX model): ``from_torch(..., via="onnx")``.

The default route is ``torch_export.py`` (torch.export to core ATen, imported directly); this one is kept for
models that only PyTorch's TorchScript-based ONNX exporter handles (``dynamo=False``: the dynamo exporter
needs the onnxscript package), which PyTorch deprecates. ``tfg.from_torch`` and the ``torch.compile``
backend are in ``compiler/torch_backend.py``. torch is an optional dependency (``pip install tensorforge[torch]``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

from ..errors import TensorforgeError

OPSET = 18


def import_torch():
    try:
        import torch
    except ImportError:
        raise TensorforgeError("PyTorch is not installed: pip install 'tensorforge[torch]' (torch==2.13.0)") from None
    return torch


def to_onnx(module, example_inputs: Sequence, input_names: Sequence[str] | None = None,
            dynamic_batch: bool = False, opset: int = OPSET):  # fmt: skip
    """Export ``module`` called on ``example_inputs`` to an ``onnx.ModelProto``."""
    import onnx

    torch = import_torch()
    if not isinstance(example_inputs, tuple | list):
        example_inputs = (example_inputs,)
    names = list(input_names or [f"input{i}" for i in range(len(example_inputs))])
    dyn = {n: {0: "batch"} for n in names} if dynamic_batch else None
    buf = io.BytesIO()
    was_training = getattr(module, "training", False)
    if hasattr(module, "eval"):
        module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(example_inputs), buf, dynamo=False, input_names=names,
                              opset_version=opset, dynamic_axes=dyn, do_constant_folding=True)  # fmt: skip
    except Exception as e:
        raise TensorforgeError(f"PyTorch could not export {type(module).__name__} to ONNX: {e}") from e
    finally:
        if was_training:
            module.train()
    return onnx.load_from_string(buf.getvalue())
