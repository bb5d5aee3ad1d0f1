"""``tfg.quantize``: a float ONNX model to int8 QDQ ONNX (static, calibrated) or to dynamically
quantized ONNX; and the ``quantize=`` option of ``tfg.compile`` built on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import onnx

from ..errors import TensorforgeError
from . import onnx_graph as og
from .calibrate import METHODS
from .dynamic import quantize_dynamic
from .quantize import QuantizationReport, quantize_static, save

COMPILE_MODES = ("int8", "int8-dynamic")


def quantize(model, calibration=None, *, method: str = "minmax", dynamic: bool = False, activations: str = "uint8",
             per_channel: bool = True, keep_first: bool = False, keep_last: bool = False,
             exclude: Iterable[str] | str = (), percentile: float = 99.99, batch_size: int = 32,
             fold_batchnorm: bool = True, num_threads: int | None = None, output: str | os.PathLike | None = None,
             report: bool = False, compile_fn: Callable | None = None
             ) -> onnx.ModelProto | tuple[onnx.ModelProto, QuantizationReport]:  # fmt: skip
    """Quantize an ONNX model (path, bytes, ``onnx.ModelProto``, or a Graph) to int8.

    Static (the default) needs ``calibration``: an .npz file with one array per input (first axis: samples),
    a directory of them, a dict of arrays, or an iterable of ``{input: array}`` feeds (see
    ``compress/calibrate.py``). ``method``: ``minmax``, ``percentile`` (with ``percentile``) or ``entropy``.
    ``activations``: ``uint8`` (asymmetric) or ``int8`` (symmetric). ``dynamic=True`` quantizes MatMul/Gemm
    weights and quantizes activations at run time (no calibration). ``keep_first`` / ``keep_last`` /
    ``exclude`` (node names or op types) keep layers in float. Returns the quantized ModelProto (written to
    ``output`` too when given); with ``report=True``, ``(model, QuantizationReport)``. ``compile_fn`` runs the
    calibration (``tfg.quantize`` passes ``tfg.compile``)."""
    proto, name = og.load_proto(model)
    if isinstance(exclude, str):
        exclude = [e.strip() for e in exclude.split(",")]
    if method not in METHODS:
        raise TensorforgeError(f"unknown calibration method {method!r}; methods: {', '.join(METHODS)}")
    if batch_size < 1:
        raise TensorforgeError(f"batch_size must be >= 1, got {batch_size}")
    _not_quantized(proto, name)
    if dynamic:
        if calibration is not None:
            raise TensorforgeError("dynamic quantization takes no calibration data (activations are quantized at "
                                   "run time); drop calibration= or dynamic=True")  # fmt: skip
        q, rep = quantize_dynamic(proto, name, per_channel=per_channel, keep_first=keep_first, keep_last=keep_last,
                                  exclude=exclude)  # fmt: skip
    else:
        if calibration is None:
            raise TensorforgeError(f"model '{name}': static quantization needs calibration data (calibration=: an "
                                   ".npz file, a directory of .npz files, a dict of arrays or an iterable of "
                                   "feeds); or quantize dynamically (dynamic=True)")  # fmt: skip
        q, rep = quantize_static(proto, name, calibration, method=method, activations=activations,
                                 per_channel=per_channel, keep_first=keep_first, keep_last=keep_last, exclude=exclude,
                                 percentile=percentile, batch_size=batch_size, fold_batchnorm=fold_batchnorm,
                                 num_threads=num_threads, compile_fn=compile_fn)  # fmt: skip
    if output is not None:
        save(q, output)
    return (q, rep) if report else q


def _not_quantized(proto: onnx.ModelProto, name: str) -> None:
    qops = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
            "MatMulInteger", "ConvInteger"}  # fmt: skip
    found = sorted({n.op_type for n in proto.graph.node} & qops)
    if found:
        raise TensorforgeError(f"model '{name}' is already quantized (it has {', '.join(found)} nodes); quantize "
                               "the float model")  # fmt: skip


def for_compile(model, mode: str | None, calibration, options: dict | None = None, *, compile_fn: Callable):
    """The model ``tfg.compile`` builds when asked to quantize: ``mode`` "int8" (static QDQ, calibrated on
    ``calibration``) or "int8-dynamic"; ``options`` are ``quantize``'s keyword arguments."""
    if mode is None:
        if calibration is not None:
            raise TensorforgeError("calibration= is given without quantize=; pass quantize='int8' to use it")
        return model
    if mode not in COMPILE_MODES:
        raise TensorforgeError(f"quantize must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return quantize(model, calibration, dynamic=mode == "int8-dynamic", compile_fn=compile_fn, **dict(options or {}))


__all__ = ["COMPILE_MODES", "for_compile", "quantize"]
