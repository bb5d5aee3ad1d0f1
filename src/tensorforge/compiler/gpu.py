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
    """The lowering options of a GPU ``precision`` (checked against the target by ``check_precision``)."""
    from ..lower.bf16_gemm import GPU_PRECISIONS

    if precision not in (None, *GPU_PRECISIONS):
        raise TargetError(f"GPU precision must be one of {', '.join(GPU_PRECISIONS)}, got {precision!r}")
    return {"precision": precision} if precision not in (None, "fp32") else {}


def compile_cuda(model, target: str = "cuda", *, opt_level: int = 2, passes: str | None = None,
                 input_shapes: Mapping[str, Sequence[int]] | None = None, name: str | None = None,
                 precision: str | None = None):  # fmt: skip
    """``model`` compiled for the GPU ``target`` names (``cuda``, ``cuda:1``), loaded and ready to run.
    ``precision="tf32"`` / ``"bf16"`` / ``"fp16"``: GEMMs and convolutions on tensor cores (``mma.sync``, sm_80+)
    with operands rounded to tf32 / converted to bfloat16 / float16 and float32 accumulation."""
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


class GpuBound:
    """A program compiled for an NVPTX target behind the bound-array interface of ``runtime.Executable``
    (``bind_input`` / ``bind_output`` / ``run_bound``), as a training step drives it: on the visible GPU
    (``ordinal``: inputs copied in, the kernels launched, the bound outputs and the state inputs the program
    updates in place (``Program.state``: parameters, optimizer state) copied back), or on the grid interpreter
    (``ordinal=None``, for checking without a GPU)."""

    def __init__(self, artifact, ordinal: int | None = None):
        from ..ir.signature import InputSpec
        from ..runtime.gridinterp import GridInterpreter

        p = self.program = artifact.program
        self.artifact, self.name = artifact, p.name
        self.input_index = {n: i for i, (n, _, _) in enumerate(p.inputs)}
        self.output_index = {n: i for i, (n, _, _) in enumerate(p.outputs)}
        self.inputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in p.inputs]
        self.outputs = [InputSpec(n, dt, tuple(s)) for n, dt, s in p.outputs]
        self.num_threads = 1  # kept for the Executable interface: a GPU runs the grid
        self._in: list = [None] * len(p.inputs)
        self._out: list = [None] * len(p.outputs)
        if ordinal is None:
            self.interp, self.cuda = GridInterpreter(p), None
        else:
            from ..runtime.cuda import CudaModel

            self.interp, self.cuda = None, CudaModel(artifact, ordinal)

    def bind_input(self, i: int, a) -> None:
        self._in[i] = a

    def bind_output(self, i: int, a) -> None:
        self._out[i] = a

    def run_bound(self) -> None:
        missing = [self.inputs[i].name for i, a in enumerate(self._in) if a is None]
        if missing:
            raise UnsupportedError(f"model '{self.name}': inputs {missing} are not bound")
        if self.cuda is None:  # the interpreter updates the state inputs in place (C-contiguous arrays of their type)
            outs = self.interp.run(self._in)
        else:
            outs = self._run_cuda()
        for o, r in zip(self._out, outs):
            if o is not None:
                o[...] = r

    def _run_cuda(self) -> list:
        import ctypes

        from ..runtime.cuda import _DevicePtr

        m = self.cuda
        outs = m.call(*self._in)
        with m._lock:  # the state the kernels updated in the inputs' device buffers, back into the host arrays
            m.d.cuCtxSetCurrent(m.ctx)
            for ii in sorted(set(self.program.state.values())):
                a = self._in[ii]
                m.d.cuMemcpyDtoHAsync_v2(a.ctypes.data_as(ctypes.c_void_p), _DevicePtr(m.in_bufs[ii]),
                                         ctypes.c_size_t(a.nbytes), m.stream)  # fmt: skip
            m.d.cuStreamSynchronize(m.stream)
        return outs

    def wait(self) -> None:
        return None

    def profile_kernels(self, *args, **kwargs):
        raise UnsupportedError(f"model '{self.name}': per-kernel profiles of GPU programs are not available yet")


def gpu_program(g, target: Target, options: Options, ordinal: int | None, state: dict[int, int] | None = None):
    """A training step's (or predict) graph compiled for an NVPTX target, as a ``GpuBound`` on the GPU
    ``ordinal`` or (None) on the grid interpreter."""
    from .api import build_artifact

    if ordinal is None:  # not cached: the interpreter needs the kernel bodies
        return GpuBound(Build(g, target, options, state=state).run("llvm").artifact())
    return GpuBound(build_artifact(g, target, options, state=state, until="llvm")[0], ordinal)


def gpu_runner(target) -> tuple[Target, int | None] | None:
    """For a training step's ``target``: (the NVPTX target, the GPU ordinal) for ``cuda`` / ``cuda:N``, (the
    target, None: the grid interpreter) for an NVPTX target name (``nvptx-sm80``, ``sm_80``); None otherwise."""
    if is_cuda(target):
        ordinal = _ordinal(target)
        return cuda_target(ordinal), ordinal
    if isinstance(target, str) and target.startswith("sm_"):
        return nvptx_target(target), None
    if isinstance(target, str) and target.startswith("nvptx"):
        return get_target(target), None
    return None


def _static_only(g) -> None:
    raise UnsupportedError(f"model '{g.name}': its shapes depend on input values or data (or are symbolic); GPU "
                           "targets compile static graphs only: give input_shapes, or run it on the CPU")  # fmt: skip


__all__ = [
    "GpuBound",
    "compile_cuda",
    "cuda_target",
    "gpu_program",
    "gpu_runner",
    "is_cuda",
    "nvptx_target",
    "simulate",
]
