"""PyTorch entry points that compile: ``tfg.from_torch`` and a ``torch.compile`` backend.

    m = tfg.from_torch(net, (x,))                          # a CompiledModel taking numpy arrays
    fast = torch.compile(net, backend=tfg.torch_backend)   # tensors in, tensors out

The module is exported to ONNX by ``frontends/torch.py`` and compiled like any ONNX model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import TensorforgeError
from ..frontends.torch import import_torch, to_onnx
from .api import compile


def from_torch(module, example_inputs: Sequence, dynamic_batch: bool = False, **compile_kw):
    """Compile a PyTorch module for this machine; the result takes and returns numpy arrays."""
    name = type(module).__name__
    return compile(to_onnx(module, example_inputs, dynamic_batch=dynamic_batch), name=name, **compile_kw)


def torch_backend(gm, example_inputs):
    """A ``torch.compile`` backend: compiles the captured FX graph with tensorforge.

    The returned callable converts tensors to numpy at the border and back; graphs that tensorforge cannot
    compile fall back to PyTorch (eager) with a warning, so torch.compile never fails because of us.
    """
    torch = import_torch()
    try:
        compiled = from_torch(gm, tuple(example_inputs))
    except TensorforgeError as e:
        warnings.warn(f"tensorforge backend: falling back to eager PyTorch: {e}", stacklevel=2)
        return gm.forward

    def run(*args):
        arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in args]
        out = compiled(*arrays)
        outs = out if isinstance(out, tuple) else (out,)
        # np.ascontiguousarray would make a 0-d output 1-d
        return tuple(torch.from_numpy(o if o.flags.c_contiguous else o.copy()) for o in map(np.asarray, outs))

    return run
