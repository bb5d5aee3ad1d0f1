"""Program -> LLVM module, optimization, and assembly/object emission."""

from __future__ import annotations

import functools
import re
import struct
import sys
import threading

import llvmlite.binding as llvm

from ..errors import CompileError
from ..lower.kir import Kernel, walk_stmt
from ..lower.program import Program
from ..lower.vectorize import vectorize_kernel
from ..util.forksafe import renew_in_child
from .llvm import ModuleBuilder
from .parallel import fork_map, partition
from .targets import Target

ENTRY = "tf_run"
PROFILE_ENTRY = "tf_run_profile"  # tf_run plus a table of per-kernel timestamps (runtime/profile.py)
PY_ENTRY = "tf_call"
NUMPY_DATA_OFFSET = 16  # offsetof(PyArrayObject_fields, data) on 64-bit CPython (checked at run time)
_LOCK = threading.Lock()  # llvmlite lets one thread into LLVM at a time
renew_in_child(sys.modules[__name__], "_LOCK")


def llvm_lock() -> threading.Lock:
    """The lock every entry into LLVM takes (hold it to fork with no thread inside LLVM)."""
    return _LOCK


@functools.cache
def _init_llvm() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


# a program is cut into parts of about this much kernel IR (statements), at most MAX_PARTS of them
PART_COST = 1000
MAX_PARTS = 16


def _cost(k: Kernel) -> int:
    return sum(1 for _ in walk_stmt(k.body))


def build_module_parts(program: Program, code: list[Kernel | None], aliases: dict[str, str],
                       target: Target | None = None) -> list[str]:  # fmt: skip
    """The program's LLVM IR as modules built side by side (``codegen/parallel.py``): first the entry module
    (globals, ``tf_run`` and its twins, declaring the kernels), then parts each defining some kernels. A small
    program, or a GPU one, is one module (``build_module``)."""
    target = target or program.target
    real = [i for i, vk in enumerate(code) if vk is not None]
    costs = [_cost(code[i]) for i in real]
    n_parts = min(MAX_PARTS, len(real), sum(costs) // PART_COST)
    if target.is_gpu or n_parts < 2:
        return [build_module(program, code, aliases, target)]
    groups = [[real[j] for j in g] for g in partition(costs, n_parts)]

    def part(p: int) -> str:
        mb = ModuleBuilder(target, f"{program.name}.part{p}", owns_globals=False)
        for i in groups[p]:
            mb.add_kernel(code[i], linkage="hidden")
        return mb.ir_text()

    texts = fork_map(part, len(groups), _LOCK)
    mb = ModuleBuilder(target, program.name)
    fns = {program.kernels[i].name: mb.declare_kernel(program.kernels[i].name, len(program.kernels[i].params))
           for i in real}  # fmt: skip
    _add_entries(mb, program, [(fns[aliases.get(k.name, k.name)], args)
                               for k, args in zip(program.kernels, program.kernel_args)])  # fmt: skip
    return [mb.ir_text(), *texts]


def _add_entries(mb: ModuleBuilder, program: Program, calls: list) -> None:
    checks = (program.status_offset, program.check_kernels)
    entry = mb.add_entry(ENTRY, calls, checks)
    mb.add_entry(PROFILE_ENTRY, calls, checks, profile=True)
    mb.add_py_entry(PY_ENTRY, entry, len(program.inputs), len(program.outputs), NUMPY_DATA_OFFSET)


def build_module(program: Program, code: list[Kernel | None], aliases: dict[str, str],
                 target: Target | None = None) -> str:  # fmt: skip
    """The LLVM IR text of a program's module: one function per kernel of ``code`` (the program's kernels with their
    vector loops made explicit; None for a kernel that runs the function of the identical kernel named in
    ``aliases``), then on CPUs the entry ``tf_run`` calling them in order (returning the status of the run-time
    checks, ``lower/checks.py``), its profiling twin and the Python-call entry."""
    target = target or program.target
    mb = ModuleBuilder(target, program.name)
    fns: dict[str, object] = {}
    calls = []
    for k, vk, args in zip(program.kernels, code, program.kernel_args):
        if vk is not None:
            fns[k.name] = mb.add_kernel(vk, linkage="" if target.is_gpu else "internal")
        calls.append((fns[aliases.get(k.name, k.name)], args))
    if not target.is_gpu:
        _add_entries(mb, program, calls)
    return mb.ir_text()


def build_kernel_module(kernels: list[Kernel], target: Target, name: str = "kernels") -> str:
    """LLVM IR of standalone kernels (vector loops made explicit, each an external function taking one
    pointer per buffer, no entry): for testing kernels one by one."""
    mb = ModuleBuilder(target, name)
    for k in kernels:
        mb.add_kernel(vectorize_kernel(k, 1 if target.is_gpu else None, target.masked_ops), linkage="")
    return mb.ir_text()


def target_machine(target: Target, jit: bool = False, opt: int = 3) -> llvm.TargetMachine:
    _init_llvm()
    try:
        t = llvm.Target.from_triple(target.triple)
    except RuntimeError as e:
        raise CompileError(f"LLVM has no backend for {target.triple}: {e}") from None
    features = target.features
    return t.create_target_machine(
        cpu=target.cpu,
        features=features,
        opt=opt,
        reloc="pic" if not jit else "default",
        codemodel="jitdefault" if jit else "default",
    )


def parse_and_optimize(ir_text: str, tm: llvm.TargetMachine, opt: int = 3) -> llvm.ModuleRef:
    _init_llvm()
    with _LOCK:
        try:
            mod = llvm.parse_assembly(ir_text)
            mod.verify()
        except RuntimeError as e:
            raise CompileError(f"generated LLVM IR is invalid (a code-generator bug): {e}") from None
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        if opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pto.loop_vectorization = False  # kernels are vectorized explicitly
            pto.slp_vectorization = True
            pb = llvm.create_pass_builder(tm, pto)
            mpm = pb.getModulePassManager()
            mpm.run(mod, pb)
    return mod


def emit_assembly(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> str:
    with _LOCK:
        return tm.emit_assembly(mod)


def emit_object(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> bytes:
    with _LOCK:
        return tm.emit_object(mod)


def compile_object(ir_text: str | list[str], target: Target, opt: int = 3) -> bytes:
    """Native object code of an LLVM module, made to be loaded into this process (the JIT's code model and
    relocations; ``runtime/jit.py`` loads it). The parts of a program (``build_module_parts``) are compiled
    side by side in worker processes into one object each, returned together (``pack_objects``)."""
    if isinstance(ir_text, str) or len(ir_text) == 1:
        tm = target_machine(target, jit=True, opt=opt)
        return emit_object(parse_and_optimize(ir_text if isinstance(ir_text, str) else ir_text[0], tm, opt), tm)
    parts = ir_text

    def one(i: int) -> bytes:
        tm = target_machine(target, jit=True, opt=opt)
        return emit_object(parse_and_optimize(parts[i], tm, opt), tm)

    return pack_objects(fork_map(one, len(parts), _LOCK))


_OBJECTS_MAGIC = b"TFOBJS1\0"


def pack_objects(objects: list[bytes]) -> bytes:
    """Several object files as one blob: magic, count, sizes (little-endian u64), then the files."""
    head = _OBJECTS_MAGIC + struct.pack(f"<Q{len(objects)}Q", len(objects), *(len(o) for o in objects))
    return head + b"".join(objects)


def unpack_objects(blob: bytes) -> list[bytes]:
    """The object files of ``pack_objects`` (or a single object file as it is)."""
    if not blob.startswith(_OBJECTS_MAGIC):
        return [blob]
    at = len(_OBJECTS_MAGIC)
    try:
        (n,) = struct.unpack_from("<Q", blob, at)
        sizes = struct.unpack_from(f"<{n}Q", blob, at + 8)
    except struct.error:
        raise CompileError("the packed object code is truncated") from None
    at += 8 + 8 * n
    if at + sum(sizes) != len(blob):
        raise CompileError("the packed object code is truncated or has trailing bytes")
    out = []
    for size in sizes:
        out.append(blob[at : at + size])
        at += size
    return out


def link_parts(parts: list[str]) -> str:
    """One module's LLVM IR from the parts of a program (unoptimized: for assembly listings, libraries)."""
    if len(parts) == 1:
        return parts[0]
    _init_llvm()
    with _LOCK:
        try:
            mod = llvm.parse_assembly(parts[0])
            for p in parts[1:]:
                mod.link_in(llvm.parse_assembly(p))
        except RuntimeError as e:
            raise CompileError(f"generated LLVM IR is invalid (a code-generator bug): {e}") from None
        return str(mod)


def assembly_of(ir_text: str, target: Target) -> str:
    """The optimized module's assembly (PTX on GPU targets), as a standalone build would emit it."""
    tm = target_machine(target, jit=False)
    return emit_assembly(parse_and_optimize(ir_text, tm), tm)


_FUNC_RE = re.compile(r"^([A-Za-z_.$][\w.$]*):\s*(#.*)?$")


def split_assembly(asm: str, names: list[str]) -> dict[str, str]:
    """Cut a module's assembly into per-function listings (outlined parallel bodies go with their kernel)."""
    out: dict[str, list[str]] = {}
    current = None
    wanted = set(names)
    for line in asm.splitlines():
        m = _FUNC_RE.match(line)
        if m and not line.startswith("."):
            sym = m.group(1)
            base = sym.split(".")[0]
            if sym in wanted:
                current = sym
            elif base in wanted:
                current = base
            elif sym.startswith("tf."):
                current = None
            elif not sym.startswith(".L"):
                current = None
        if current is not None:
            if line.strip().startswith(".cfi_") or line.strip().startswith(".p2align"):
                continue
            out.setdefault(current, []).append(line)
    return {k: "\n".join(v) for k, v in out.items()}
