"""Compiling for NVIDIA GPUs: ``tfg.compile(model, target="cuda")`` on the visible GPU (``runtime/cuda.py``), and
``simulate``: the same PTX program run on the grid interpreter (``runtime/gridinterp.py``), no GPU needed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from ..codegen.targets import NVPTX_SM90, Target, get_target
from ..errors import TargetError, UnsupportedError
from .pipeline import Build, Options, needs_dynamic

# the PTX ISA version LLVM declares for each architecture (the lowest that knows it)
_PTX = {70: "+ptx60", 75: "+ptx63", 80: "+ptx70", 86: "+ptx71", 87: "+ptx74", 89: "+ptx78", 90: "+ptx80"}


def nvptx_target(arch: str) -> Target:
    """The NVPTX target of ``arch`` (``sm_86``): the schedules of the GPU family, the PTX version it needs."""
    try:
        sm = int(arch.removeprefix("sm_").rstrip("a"))
    except ValueError:
        raise TargetError(f"not an NVIDIA architecture: {arch!r} (expected sm_XY)") from None
    if sm < 70:
        raise TargetError(f"{arch}: tensorforge's GPU code needs sm_70 or newer (warp shuffles with a mask)")
    feats = _PTX.get(sm, "+ptx80" if sm < 90 else "+ptx87")  # PTX 8.0 knows every sm < 90, 8.7 sm_100 / sm_120
    return dataclasses.replace(NVPTX_SM90, name=f"nvptx-sm{sm}", cpu=f"sm_{sm}", features=feats)


def cuda_target(ordinal: int = 0) -> Target:
    """The target of the visible GPU ``ordinal`` (raises ``CudaUnavailable`` naming what is missing)."""
    from ..runtime.cuda import device_info

    return nvptx_target(device_info(ordinal)["arch"])


def _ordinal(target: str) -> int:
    if target == "cuda":
        return 0
    try:
        return int(target.split(":", 1)[1])
    except (IndexError, ValueError):
        raise TargetError(f"bad CUDA target {target!r}: use 'cuda' or 'cuda:N'") from None


def is_cuda(target) -> bool:
    return isinstance(target, str) and (target == "cuda" or target.startswith("cuda:"))


def _lowering(precision: str | None) -> dict:
    if precision not in (None, "fp32", "tf32"):
        raise TargetError(f"GPU precision must be 'fp32' or 'tf32', got {precision!r}")
    return {"gpu_mma": "tf32"} if precision == "tf32" else {}


def compile_cuda(model, target: str = "cuda", *, opt_level: int = 2, passes: str | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None, name: str | None = None,
                 precision: str | None = None):  # fmt: skip
    """``model`` compiled for the GPU ``target`` names (``cuda``, ``cuda:1``), loaded and ready to run.
    ``precision="tf32"``: GEMMs and convolutions on tf32 tensor cores with float32 accumulation (sm_80+)."""
    from ..runtime.cuda import CudaModel
    from .api import build_artifact

    ordinal = _ordinal(target)
    tgt = cuda_target(ordinal)
    options = Options(opt_level=opt_level, passes=passes, input_shapes=dict(input_shapes) if input_shapes else None,
                      lowering=_lowering(precision))  # fmt: skip
    art, _, b = build_artifact(model, tgt, options, name=name, until="llvm", dynamic_ok=True)
    if art is None:
        _static_only(b.graph)
    return CudaModel(art, ordinal)


def simulate(model, target: str | Target = "nvptx-sm80", *, opt_level: int = 2,
             input_shapes: Mapping[str, Sequence[int]] | None = None, name: str | None = None,
             precision: str | None = None):  # fmt: skip
    """``model`` compiled for an NVPTX target and run on the grid interpreter (every block and thread of every
    kernel on the CPU, with the GPU's semantics and checks): a ``SimulatedModel``."""
    from ..runtime.gridinterp import SimulatedModel

    tgt = get_target(target) if not isinstance(target, str) or not target.startswith("sm_") else nvptx_target(target)
    if not tgt.is_gpu:
        raise TargetError(f"simulate needs a GPU target, got {tgt.name}")
    options = Options(opt_level=opt_level, input_shapes=dict(input_shapes) if input_shapes else None,
                      lowering=_lowering(precision))  # fmt: skip
    b = Build(model, tgt, options, name).run("specialize")  # not cached: the interpreter needs the kernel bodies
    if needs_dynamic(b.graph):
        _static_only(b.graph)
    return SimulatedModel(b.run("llvm").artifact())


def _static_only(g) -> None:
    raise UnsupportedError(f"model '{g.name}': its shapes depend on input values or data (or are symbolic); GPU "
                           "targets compile static graphs only: give input_shapes, or run it on the CPU")  # fmt: skip


__all__ = ["compile_cuda", "cuda_target", "is_cuda", "nvptx_target", "simulate"]
