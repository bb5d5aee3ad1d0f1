"""PyTorch entry points that compile: ``tfg.from_torch`` and a ``torch.compile`` backend.

    m = tfg.from_torch(net, (x,))                          # a CompiledModel taking numpy arrays
    fast = torch.compile(net, backend=tfg.torch_backend)   # tensors in, tensors out

The module is captured with ``torch.export`` and imported from core ATen by ``frontends/torch_export.py``
(``via="onnx"`` takes the older route through PyTorch's TorchScript ONNX exporter, ``frontends/torch.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import TensorforgeError
from ..frontends.torch import import_torch, to_onnx
from .api import compile


def from_torch(module, example_inputs: Sequence | None = None, dynamic_shapes=None,
               input_names: Sequence[str] | None = None, *, via: str = "export", dynamic_batch: bool = False,
               name: str | None = None, **compile_kw):  # fmt: skip
    """Compile a PyTorch model for this machine; the result takes and returns numpy arrays.

    ``module`` is an ``nn.Module`` called on ``example_inputs`` (put in eval mode while it is exported), a
    ``torch.export.ExportedProgram``, or the path of a ``.pt2`` file written by ``torch.export.save``.
    ``dynamic_shapes`` is ``torch.export``'s (``{"x": {0: Dim("batch")}}``): those dims stay symbolic and the
    model compiles once per shape on first use; ``dynamic_batch=True`` makes dim 0 of every input one
    ``Dim("batch")``. Inputs are named after ``forward``'s parameters unless ``input_names`` is given.
    ``via="onnx"`` exports through PyTorch's TorchScript ONNX exporter instead (deprecated by PyTorch)."""
    if via == "onnx":
        if dynamic_shapes is not None:
            raise TensorforgeError("from_torch(via='onnx') takes dynamic_batch=True, not dynamic_shapes")
        proto = to_onnx(module, example_inputs, input_names=input_names, dynamic_batch=dynamic_batch)
        return compile(proto, name=name or type(module).__name__, **compile_kw)
    if via != "export":
        raise TensorforgeError(f"from_torch: via must be 'export' or 'onnx', got {via!r}")
    import_torch()
    from ..frontends import torch_export as te

    args = te._as_tuple(example_inputs)
    if dynamic_batch:
        if dynamic_shapes is not None:
            raise TensorforgeError("from_torch: give dynamic_shapes or dynamic_batch=True, not both")
        args, dynamic_shapes = te.batch_dynamic_shapes(module, args)
    ep = te.export_program(module, args, dynamic_shapes)
    if name is None:
        is_path = isinstance(module, str | os.PathLike)
        name = os.path.splitext(os.path.basename(os.fspath(module)))[0] if is_path else type(module).__name__
    dims = te.dim_names(module, args, dynamic_shapes) if hasattr(module, "forward") else []
    return compile(te.import_exported(ep, name, input_names, dims), name=name, **compile_kw)


def torch_backend(gm, example_inputs):
    """The ``torch.compile`` backend (``backend="tensorforge"`` by entry point, or ``backend=tfg.torch_backend``):
    inference and training through AOTAutograd, every forward, backward and inference graph compiled by
    tensorforge, what it cannot convert run eagerly (``tfg.torch_report()`` says what ran where); see
    ``compiler/torch_aot.py``."""
    from .torch_aot import aot_backend, attention_as_math

    with attention_as_math():
        return aot_backend()(gm, example_inputs)
