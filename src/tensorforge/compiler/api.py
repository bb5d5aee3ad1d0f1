"""``tfg.compile``, ``tfg.assembly``, ``tfg.load``: the pipeline, the compile cache and the runtime, joined.

``compile`` looks the model up in the compile cache first (a hit returns a model in milliseconds: no
import, passes, lowering or LLVM); on a miss it runs the stages (``pipeline.py``) with a progress bar and
stores the artifact. Models whose shapes are known only at run time come back as a ``DynamicModel`` that
compiles each static segment through ``compile_graph`` on first use.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence

from ..codegen.targets import Target, get_target
from ..errors import TensorforgeError
from ..ir.graph import Graph
from ..runtime.artifact import Artifact
from ..runtime.dynamic import DynamicModel
from ..runtime.executable import Executable
from ..runtime.model import CompiledModel, format_listing
from ..util.progress import Progress
from . import cache
from .pipeline import STAGES, Build, Options, check_lowerable, needs_dynamic


def build_artifact(model, target: Target, options: Options, *, name: str | None = None,
                   state: dict[int, int] | None = None, until: str = "object", dynamic_ok: bool = False
                   ) -> tuple[Artifact | None, bool, Build | None]:  # fmt: skip
    """The artifact of ``model`` through stage ``until``, from the cache when possible. Returns (artifact,
    whether it came from the cache, the build that made it). With ``dynamic_ok``, a model whose shapes are
    not static stops after import: (None, False, build) and ``build.graph`` is the imported graph."""
    key = _key(model, target, options, name, state, until)
    art = cache.load(key) if key is not None else None
    if art is not None:
        return art, True, None
    b = Build(model, target, options, name, state)
    with Progress(_count(until), f"compiling {name or getattr(model, 'name', '') or 'model'}") as bar:
        b.run("specialize", bar)
        if dynamic_ok and needs_dynamic(b.graph):
            return None, False, b
        b.run(until, bar)
    art = b.artifact()
    if key is not None:
        art.metadata["external_data"] = cache.external_data_digests(model)
        cache.store(key, art, background=True)
    return art, False, b


def _key(model, target: Target, options: Options, name, state, until: str) -> str | None:
    if options.verify or options.print_ir_after:  # the caller wants to see the passes run
        return None
    if cache.cache_dir() is None:
        return None
    digest = cache.model_digest(model)
    if name is None and isinstance(model, str | os.PathLike):  # the importer names a model after its file
        name = os.path.splitext(os.path.basename(os.fspath(model)))[0]
    return None if digest is None else cache.artifact_key(digest, name, target, options, state, until)


def _count(until: str) -> int:
    return [s.name for s in STAGES].index(until) + 1


def compile_graph(g: Graph, target: Target, options: Options, num_threads: int | None = None) -> CompiledModel:
    """Compile a static graph for this machine (cached)."""
    t0 = time.perf_counter()
    art, hit, _ = build_artifact(g, target, options)
    return CompiledModel(art, num_threads, cache_hit=hit, load_seconds=time.perf_counter() - t0)


def compile(
    model,
    target: str | Target | None = None,
    *,
    opt_level: int = 2,
    passes: str | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    num_threads: int | None = None,
    name: str | None = None,
    verify: bool = False,
    print_ir_after: set[str] | str | None = None,
    tuning_db: str | os.PathLike | None = None,
    quantize: str | None = None,
    calibration=None,
    quantize_options: Mapping | None = None,
    precision: str = "fp32",
) -> CompiledModel | DynamicModel:
    """Compile an ONNX model (path, bytes, ``onnx.ModelProto``) or a ``Graph`` for this machine.

    Models with symbolic input dims return a ``DynamicModel`` that compiles per input shape on first
    use (or pass ``input_shapes`` to fix them now). ``target="cuda"`` (or ``"cuda:N"``) compiles for the
    visible NVIDIA GPU and runs through the CUDA driver (``runtime/cuda.py``). Plans found by ``tensorforge
    tune`` for this CPU are used: from ``tuning_db`` when given, else from the cache directory's database.
    ``quantize="int8"`` compiles the model quantized on ``calibration`` data first (``"int8-dynamic"``: no calibration;
    ``quantize_options``: ``tfg.quantize``'s keyword arguments). ``precision="bf16"``: GEMMs and convolutions
    multiply bfloat16 operands with float32 accumulation (AMX-BF16 / AVX512-BF16 targets; refused elsewhere),
    everything else and the inputs and outputs stay float32 (``lower/bf16_gemm.py``)."""
    from .gpu import compile_cuda, is_cuda

    if is_cuda(target):  # the visible NVIDIA GPU, through the CUDA driver (runtime/cuda.py)
        return compile_cuda(model, target, opt_level=opt_level, passes=passes, input_shapes=input_shapes, name=name,
                            precision=precision)  # fmt: skip
    tgt = get_target(target)
    if not tgt.is_host:
        raise TensorforgeError(f"target {tgt.name} cannot run in this process; use tensorforge.assembly(model, "
                               f"target={tgt.name!r}) to see its code")  # fmt: skip
    options = Options(opt_level=opt_level, passes=passes, verify=verify, print_ir_after=print_ir_after,
                      input_shapes=dict(input_shapes) if input_shapes else None,
                      lowering=tuning_lowering(tuning_db, tgt))  # fmt: skip
    if precision != "fp32":  # a lowering option, so part of the compile-cache key
        from ..lower.bf16_gemm import check_precision

        check_precision(tgt, {"precision": precision}, name or getattr(model, "name", "") or "model")
        options.lowering["precision"] = precision
    if quantize is not None or calibration is not None:
        from ..compress.api import for_compile

        model = for_compile(model, quantize, calibration, quantize_options, compile_fn=compile)
    t0 = time.perf_counter()
    art, hit, b = build_artifact(model, tgt, options, name=name, dynamic_ok=True)
    if art is None:
        return _dynamic(b.graph, tgt, options, num_threads)
    return CompiledModel(art, num_threads, cache_hit=hit, load_seconds=time.perf_counter() - t0)


def tuning_lowering(tuning_db: str | os.PathLike | None, target: Target) -> dict:
    """Lowering options carrying the tuned plans for ``target``'s CPU (``compiler/tuning.py``): from the file
    ``tuning_db`` (which must exist), else from the cache directory's database if there is one."""
    from . import tuning

    if tuning_db is not None and not os.path.exists(tuning_db):
        raise tuning.TuningError(f"tuning database {os.fspath(tuning_db)!r} does not exist")
    path = os.fspath(tuning_db) if tuning_db is not None else tuning.default_db_path()
    return tuning.tuned_lowering(path, target)


def _dynamic(g: Graph, target: Target, options: Options, num_threads: int | None) -> DynamicModel:
    """A model compiled per shape: its segments go through ``compile_graph`` with the same options."""
    from ..ops.registry import get_op

    # data-dependent ops run on the host, control flow is expanded, value ops fold once inputs are known
    staged = [n for n in g.nodes if not (get_op(n.op).data_dependent or get_op(n.op).expand is not None
                                         or get_op(n.op).value is not None)]  # fmt: skip
    check_lowerable(Graph(staged, g.inputs, g.outputs, name=g.name))
    seg_options = Options(opt_level=options.opt_level, passes=options.passes, verify=options.verify,
                          print_ir_after=options.print_ir_after, printer=options.printer)  # fmt: skip
    if "precision" in options.lowering:  # every segment computes in the precision asked for
        seg_options.lowering["precision"] = options.lowering["precision"]
    return DynamicModel(g, lambda seg: compile_graph(seg, target, seg_options), num_threads)


def compile_tiered(g: Graph, target: Target, options: Options, state: dict[int, int] | None = None) -> Executable:
    """An executable that starts at once: on a cache miss it runs unoptimized LLVM code (about ten times
    faster to build, a few times slower to run) while the optimized build compiles on a thread and takes
    over between two calls (LLVM runs without the GIL; llvmlite lets one thread into LLVM at a time)."""
    key = _key(g, target, options, None, state, "object")
    art = cache.load(key) if key is not None else None
    if art is not None:
        return Executable(art)
    b = Build(g, target, options, state=state).run("llvm")
    exe = Executable(b.with_options(llvm_opt=0).run("object").artifact())

    def optimized() -> Artifact:
        art = b.run("object").artifact()
        if key is not None:
            cache.store(key, art)
        return art

    exe.upgrade_in_background(optimized)
    return exe


def assembly(model, target: str | Target | None = None, kernel: str | None = None, *, opt_level: int = 2,
             input_shapes: Mapping[str, Sequence[int]] | None = None) -> str:  # fmt: skip
    """Assembly listing of a model's kernels for any target (x86_64, x86_64-avx512, aarch64, nvptx-sm90);
    symbolic input dims not given in ``input_shapes`` are taken as 1."""
    tgt = get_target(target)
    options = Options(opt_level=opt_level, input_shapes=dict(input_shapes) if input_shapes else None,
                      symbolic_as_one=True)  # fmt: skip
    art, _, _ = build_artifact(model, tgt, options, until="llvm")
    if tgt.is_gpu:
        return art.assembly() if kernel is None else _ptx_kernel(art, kernel)
    return format_listing(art.assembly(), art.program, kernel, art.aliases)


def _ptx_kernel(art: Artifact, kernel: str) -> str:
    from ..codegen.emit import split_assembly

    names = [k.name for k in art.program.kernels if kernel == k.name or any(kernel in lab for lab in k.labels)]
    if not names:
        raise KeyError(f"no kernel named or labelled {kernel!r}")
    parts = split_assembly(art.assembly(), names)
    return "\n".join(parts.get(n, "") for n in names)


def load(path: str, num_threads: int | None = None):
    """A model saved with ``CompiledModel.save`` (or an artifact file from the cache), ready to run; or the
    library ``tensorforge export`` wrote into directory ``path``, run through its C API (``ExportedModel``; a
    training library from ``tensorforge export-train``: ``ExportedTrainer``)."""
    if os.path.isdir(path) or str(path).endswith(".json"):
        from ..runtime.library import open_export

        return open_export(str(path), num_threads)
    t0 = time.perf_counter()
    art = Artifact.load(path)
    if art.object is None:
        raise TensorforgeError(f"{path!r} holds no native code (it was compiled for {art.target.name})")
    if not art.target.is_host or art.target != get_target(None):
        raise TensorforgeError(f"{path!r} was compiled for {art.target.cpu} ({art.target.triple}), not for this "
                               f"machine ({get_target(None).cpu}); compile the model again")  # fmt: skip
    return CompiledModel(art, num_threads, cache_hit=True, load_seconds=time.perf_counter() - t0)


def quantize(model, calibration=None, **options):
    """``tensorforge.compress.quantize`` (see there) with calibration runs compiled by ``compile``."""
    from ..compress.api import quantize as _quantize

    return _quantize(model, calibration, compile_fn=compile, **options)


def compare(reference, *models, **options):
    """``tensorforge.compress.compare`` (see there) with the models compiled by ``compile``."""
    from ..compress.compare import compare as _compare

    return _compare(reference, *models, compile_fn=compile, **options)


__all__ = ["assembly", "build_artifact", "compare", "compile", "compile_graph", "compile_tiered", "load", "quantize"]
