"""PyTorch frontend: ``nn.Module`` -> ONNX -> Graph, and a ``torch.compile`` backend.

    m = tfg.from_torch(net, (x,))                 # a CompiledModel taking numpy arrays
    fast = torch.compile(net, backend=tfg.torch_backend)   # tensors in, tensors out

The module is traced with PyTorch's TorchScript-based ONNX exporter (``dynamo=False``: the dynamo exporter
needs the onnxscript package), then imported like any ONNX model, so every op the ONNX importer supports
is supported here. torch is an optional dependency (``pip install tensorforge[torch]``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import TensorforgeError

OPSET = 18


def _torch():
    try:
        import torch
    except ImportError:
        raise TensorforgeError("PyTorch is not installed: pip install 'tensorforge[torch]' (torch==2.13.0)") from None
    return torch


def to_onnx(module, example_inputs: Sequence, input_names: Sequence[str] | None = None,
            dynamic_batch: bool = False, opset: int = OPSET):  # fmt: skip
    """Export ``module`` called on ``example_inputs`` to an ``onnx.ModelProto``."""
    import onnx

    torch = _torch()
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


def from_torch(module, example_inputs: Sequence, dynamic_batch: bool = False, **compile_kw):
    """Compile a PyTorch module for this machine; the result takes and returns numpy arrays."""
    from ..compiler import compile

    name = type(module).__name__
    return compile(to_onnx(module, example_inputs, dynamic_batch=dynamic_batch), name=name, **compile_kw)


def torch_backend(gm, example_inputs):
    """A ``torch.compile`` backend: compiles the captured FX graph with tensorforge.

    The returned callable converts tensors to numpy at the border and back; graphs that tensorforge cannot
    compile fall back to PyTorch (eager) with a warning, so torch.compile never fails because of us.
    """
    torch = _torch()
    try:
        compiled = from_torch(gm, tuple(example_inputs))
    except TensorforgeError as e:
        warnings.warn(f"tensorforge backend: falling back to eager PyTorch: {e}", stacklevel=2)
        return gm.forward

    def run(*args):
        arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
        out = compiled(*arrays)
        outs = out if isinstance(out, tuple) else (out,)
        return tuple(torch.from_numpy(np.ascontiguousarray(o)) for o in outs)

    return run
