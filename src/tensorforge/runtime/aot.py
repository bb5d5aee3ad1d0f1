"""Ahead-of-time export: a compiled model as a standalone C library, for this machine or another one.

    tensorforge export model.onnx -o build/ --name resnet [--target host|x86_64|aarch64] [--weights file]

writes into ``build/``: ``libresnet.so`` and ``libresnet.a`` (the kernels, the thread pool, the session layer
and the weights; they need only libc, libm and pthreads), ``resnet.h`` (the versioned C API, docs/C_API.md),
``resnet.s`` (the assembly of exactly the code in the library), ``example.c`` + ``Makefile`` (a program that
reads inputs from .npy/.bin files, runs and prints/saves the outputs), ``README.md``, ``resnet.json`` (what
``tfg.load(dir)`` reads) and, with ``--weights file``, ``resnet.weights``.

Every exported symbol starts with ``<name>_``; everything else is hidden (a version script for the shared
library, ``objcopy --keep-global-symbols`` for the static one), so any number of exported models link into
one program. The LLVM object is compiled for the target by llvmlite; the session layer (``capi.py``) and the
link use the target's C compiler: ``cc`` for the host, ``aarch64-linux-gnu-gcc`` (Debian's
``gcc-aarch64-linux-gnu``) for AArch64. The program's thread-count global becomes thread-local in the
library, so each session runs with its own count.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from ..codegen.emit import emit_assembly, emit_object, llvm_lock, parse_and_optimize, target_machine
from ..codegen.parallel import fork_map
from ..codegen.targets import Target
from ..codegen.threadpool import pool_ir
from ..errors import CompileError
from .aot_files import example_source, makefile, readme
from .artifact import Artifact
from .capi import (
    API_VERSION,
    INFERENCE_DECLS,
    LibrarySpec,
    check_prefix,
    header_text,
    inference_source,  # fmt: skip
    uses_amx,
)

MANIFEST_FORMAT = "tensorforge-export"


@dataclass
class Toolchain:
    """The C compiler (and binutils) that build and link for a target."""

    cc: str
    objcopy: str | None
    ar: str | None
    cross: bool

    @classmethod
    def for_target(cls, target: Target, cc: str | None = None) -> Toolchain:
        arch = target.triple.split("-")[0]
        host = platform.machine().replace("arm64", "aarch64")
        cross = arch != host
        prefix = f"{arch}-linux-gnu-" if cross else ""
        if cc is None:
            cc = shutil.which(f"{prefix}gcc") if cross else shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            hint = (f"install Debian's gcc-{arch.replace('_', '-')}-linux-gnu and libc6-dev-"
                    f"{'arm64' if arch == 'aarch64' else arch}-cross (`make cross-tools` as root)" if cross
                    else "install gcc")  # fmt: skip
            raise CompileError(f"exporting for {target.name} ({target.triple}) needs a C compiler for {arch} "
                               f"({prefix or ''}gcc) on PATH: {hint}")  # fmt: skip
        tool = lambda n: shutil.which(f"{prefix}{n}") or (None if cross else shutil.which(n))  # noqa: E731
        return cls(cc, tool("objcopy"), tool("ar"), cross)


_THREADS_RE = re.compile(r'^(@"?tf_num_threads"?\s*=\s*)((?:external\s+|dso_local\s+|hidden\s+)*)'
                         r'((?:local_unnamed_addr\s+|unnamed_addr\s+)?)global\b', re.M)  # fmt: skip


def library_ir(text: str, defines: bool = True) -> str:
    """A module of the program as the library holds it: the thread count thread-local and hidden (each
    session sets it before running; the JIT keeps it a plain global). ``defines``: the module must define
    or declare it (the entry module does; a part of a program may not use it)."""

    def tls(m: re.Match) -> str:
        linkage = "external " if "external" in m.group(2) else ""
        return f"{m.group(1)}{linkage}hidden thread_local(localdynamic) {m.group(3)}global"

    text, n = _THREADS_RE.subn(tls, text, count=1)
    if n != 1 and defines:
        raise CompileError("export: the program's thread count global was not found in its LLVM IR")
    return text


def library_objects(artifact: Artifact) -> tuple[dict[str, bytes], str]:
    """The program's object files for the library (position-independent; the parts of a program compiled
    side by side in worker processes, as for the JIT) and their assembly."""
    target = artifact.target
    parts = artifact.llvm_parts
    texts = [library_ir(t, defines=i == 0) for i, t in enumerate(parts)]

    def one(i: int) -> tuple[bytes, str]:
        tm = target_machine(target, jit=False)
        mod = parse_and_optimize(texts[i], tm)
        return emit_object(mod, tm), emit_assembly(mod, tm)

    done = [one(0)] if len(texts) == 1 else fork_map(one, len(texts), llvm_lock())
    objects = {f"model{i}.o": obj for i, (obj, _) in enumerate(done)}
    return objects, "\n".join(asm for _, asm in done)


def _run(cmd: list[str], cwd: str, what: str) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CompileError(f"{what} failed ({' '.join(cmd)}):\n{(r.stderr or r.stdout).strip()}")


def api_symbols(c_source: str, prefix: str) -> list[str]:
    """The public functions a generated C source defines (``TF_API``)."""
    return re.findall(rf"^TF_API [^(\n]*?\b({re.escape(prefix)}_\w+)\(", c_source, re.M)


def build_library(tmp: str, prefix: str, objects: dict[str, bytes], c_source: str, header: str, blob: bytes | None,
                  tc: Toolchain) -> list[str]:  # fmt: skip
    """Compile and link ``lib<prefix>.so`` and ``lib<prefix>.a`` in ``tmp`` from the LLVM objects, the session
    layer's C source and (when given) the weights to embed; returns the files made."""
    for name, data in objects.items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
    with open(os.path.join(tmp, f"{prefix}.h"), "w") as f:
        f.write(header)
    with open(os.path.join(tmp, "api.c"), "w") as f:
        f.write(c_source)
    objs = list(objects)
    _run([tc.cc, "-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Werror", "-c", "api.c", "-o",
          "api.o"], tmp, "compiling the session layer")  # fmt: skip
    objs.append("api.o")
    if blob is not None:
        with open(os.path.join(tmp, "weights.bin"), "wb") as f:
            f.write(blob)
        with open(os.path.join(tmp, "weights.S"), "w") as f:
            f.write('\t.section .rodata\n\t.balign 64\n\t.globl tf_weights\n\t.hidden tf_weights\n'
                    '\t.type tf_weights, %object\ntf_weights:\n\t.incbin "weights.bin"\n'
                    '\t.size tf_weights, .-tf_weights\n\t.section .note.GNU-stack,"",%progbits\n')  # fmt: skip
        _run([tc.cc, "-c", "weights.S", "-o", "weights.o"], tmp, "assembling the weights")
        objs.append("weights.o")
    symbols = api_symbols(c_source, prefix)
    with open(os.path.join(tmp, "exports.map"), "w") as f:
        f.write("{\n  global:\n" + "".join(f"    {s};\n" for s in symbols) + "  local: *;\n};\n")
    with open(os.path.join(tmp, "exports.txt"), "w") as f:
        f.write("".join(f"{s}\n" for s in symbols))
    lib = f"lib{prefix}.so"
    _run([tc.cc, "-shared", "-o", lib, *objs, "-Wl,--version-script=exports.map", f"-Wl,-soname,{lib}",
          "-Wl,-z,noexecstack", "-lpthread", "-lm"], tmp, "linking the shared library")  # fmt: skip
    made = [lib]
    if tc.objcopy and tc.ar:
        _run([tc.cc, "-r", "-nostdlib", "-o", "all.o", *objs], tmp, "linking the static library's object")
        _run([tc.objcopy, "--keep-global-symbols=exports.txt", "all.o"], tmp, "hiding the static library's symbols")
        _run([tc.ar, "rcs", f"lib{prefix}.a", "all.o"], tmp, "archiving the static library")
        made.append(f"lib{prefix}.a")
    return made


def export_library(artifact: Artifact, out_dir: str, lib_name: str = "model", cc: str | None = None,
                   weights: str = "embedded") -> dict[str, str]:  # fmt: skip
    """Write the library, its header and the files around it (module docstring) into ``out_dir``; each file
    appears complete or not at all. ``weights``: "embedded" (in the library) or "file" (``<name>.weights``,
    passed to ``<name>_session_create``)."""
    prefix = check_prefix(lib_name)
    if weights not in ("embedded", "file"):
        raise ValueError(f"weights must be 'embedded' or 'file', got {weights!r}")
    target: Target = artifact.target
    if target.is_gpu:
        raise CompileError("export of GPU targets is not supported yet; use `tensorforge asm --target nvptx-sm90`")
    tc = Toolchain.for_target(target, cc)
    spec = LibrarySpec.of(artifact.program, prefix, target, embedded=weights == "embedded")
    objects, asm = library_objects(artifact)
    spec.amx = uses_amx(asm)
    c_source = inference_source(spec)
    header = header_text(spec, INFERENCE_DECLS.format(p=prefix, P=prefix.upper()))
    tm = target_machine(target, jit=False)
    objects["pool.o"] = emit_object(parse_and_optimize(pool_ir(target, jit=False), tm, opt=2), tm)
    extra = {f"{prefix}.s": asm, "example.c": example_source(prefix), "Makefile": makefile(prefix, tc.cc, tc.cross),
             "README.md": readme(prefix, spec, tc.cross, weights == "file"),
             f"{prefix}.json": json.dumps(manifest(spec, "inference", weights), indent=2) + "\n"}  # fmt: skip
    if weights == "file":
        extra[f"{prefix}.weights"] = spec.weights.file_bytes()
    return _write_export(out_dir, prefix, objects, c_source, header, spec, tc, extra)


def manifest(spec: LibrarySpec, kind: str, weights: str) -> dict:
    t = spec.target
    return {"format": MANIFEST_FORMAT, "api_version": API_VERSION, "kind": kind, "name": spec.prefix,
            "model": spec.model, "library": f"lib{spec.prefix}.so", "header": f"{spec.prefix}.h",
            "weights": f"{spec.prefix}.weights" if weights == "file" else None,
            "target": {"name": t.name, "triple": t.triple, "cpu": t.cpu, "features": t.features}}  # fmt: skip


def _write_export(out_dir: str, prefix: str, objects: dict[str, bytes], c_source: str, header: str,
                  spec: LibrarySpec, tc: Toolchain, extra: dict[str, str | bytes]) -> dict[str, str]:  # fmt: skip
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp-export-") as tmp:
        made = build_library(tmp, prefix, objects, c_source, header, spec.weights.blob if spec.embedded else None,
                             tc)  # fmt: skip
        for name, data in extra.items():
            with open(os.path.join(tmp, name), "wb" if isinstance(data, bytes) else "w") as f:
                f.write(data)
        files = [*made, f"{prefix}.h", *extra]
        for name in files:
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    paths = {name: os.path.join(out_dir, name) for name in files}
    out = {"library": paths[f"lib{prefix}.so"], "header": paths[f"{prefix}.h"], "files": list(paths.values())}
    if f"lib{prefix}.a" in paths:
        out["static"] = paths[f"lib{prefix}.a"]
    return out


__all__ = ["Toolchain", "api_symbols", "build_library", "export_library", "library_ir", "library_objects", "manifest"]
