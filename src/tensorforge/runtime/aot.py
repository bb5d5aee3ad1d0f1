"""Ahead-of-time export: a compiled model as a standalone shared library plus a C header.

    tensorforge export model.onnx -o out/      # out/libmodel.so, out/model.h

The library holds the kernels, the entry function and the weights (embedded with ``.incbin``); it
depends only on libc (with pthreads) and libm; tensorforge's thread pool is linked in. C API (see the generated header):

    size_t tf_model_workspace_size(void);
    void   tf_model_set_num_threads(int n);
    int    tf_model_run(const void *const *inputs, void *const *outputs, void *workspace);
    int    tf_model_error_message(char *buf, size_t size);

``workspace`` may be NULL (the library allocates per call) or a buffer of ``tf_model_workspace_size()``
bytes owned by the caller (one per concurrent caller). Inputs and outputs are dense, C-ordered arrays in
the order and with the shapes/dtypes listed in the header; their form is not checked on the C side, their
indices are: ``tf_model_run`` returns ``TF_MODEL_ERROR_INDEX`` when a run-time check (``lower/checks.py``)
found an index out of range (the outputs are then unspecified), and ``tf_model_error_message`` formats the
calling thread's last error like the Python runtime does (the check table is compiled into the library as
printf formats; the status is kept thread-local, so it survives a workspace the library freed).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from ..codegen.emit import ENTRY, emit_object, parse_and_optimize, target_machine
from ..codegen.targets import Target
from ..codegen.threadpool import pool_ir
from ..errors import CompileError
from ..lower.checks import INDEX_OUT_OF_RANGE, STATUS_WORDS
from ..lower.program import Program
from .artifact import Artifact

ALIGN = 64
_C_TYPES = {"f32": "float", "f64": "double", "f16": "uint16_t /* float16 */", "i8": "int8_t", "i16": "int16_t",
            "i32": "int32_t", "i64": "int64_t", "u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t",
            "u64": "uint64_t", "bool": "uint8_t /* bool */"}  # fmt: skip


def _c_ident(s: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", s)
    return s if s and not s[0].isdigit() else "_" + s


def _weights_blob(consts: list[np.ndarray]) -> tuple[bytes, list[int]]:
    parts, offsets, off = [], [], 0
    for c in consts:
        data = np.ascontiguousarray(c).tobytes()
        offsets.append(off)
        parts.append(data)
        pad = (-len(data)) % ALIGN
        parts.append(b"\0" * pad)
        off += len(data) + pad
    return b"".join(parts), offsets


def _wrapper_ir(program: Program, offsets: list[int], const_out_offsets: dict[int, tuple[int, int]]) -> str:
    n = len(offsets)
    arena = program.arena_bytes + ALIGN
    entries = ", ".join(f"ptr getelementptr (i8, ptr @tf_weights, i64 {o})" for o in offsets) or ""
    table = f"@tf_aot_consts = internal global [{max(n, 1)} x ptr] [{entries or 'ptr null'}], align 8"
    copies = []
    for i, (off, nbytes) in const_out_offsets.items():
        copies.append(f"""  %outp{i} = getelementptr ptr, ptr %outputs, i64 {i}
  %out{i} = load ptr, ptr %outp{i}
  %src{i} = getelementptr i8, ptr @tf_weights, i64 {off}
  call void @llvm.memcpy.p0.p0.i64(ptr %out{i}, ptr %src{i}, i64 {nbytes}, i1 false)""")
    copy_text = "\n".join(copies)
    if program.status_offset >= 0:  # keep the status where tf_model_error_message finds it, per thread
        status = f"""  %failed_run = icmp ne i32 %rc, 0
  %status = getelementptr i8, ptr %arena, i64 {program.status_offset}
  %status_words = select i1 %failed_run, ptr %status, ptr @tf_model_ok
  %tls = call ptr @llvm.threadlocal.address.p0(ptr @tf_model_status)
  call void @llvm.memcpy.p0.p0.i64(ptr %tls, ptr %status_words, i64 {STATUS_WORDS * 8}, i1 false)"""
    else:
        status = ""
    return f"""
@tf_weights = external global [0 x i8], align 64
{table}
{_error_ir(program)}
declare ptr @malloc(i64)
declare void @free(ptr)
declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
declare ptr @llvm.threadlocal.address.p0(ptr)

define i64 @tf_model_workspace_size() {{
  ret i64 {arena}
}}

define void @tf_model_set_num_threads(i32 %n) {{
  %ok = icmp sgt i32 %n, 0
  %v = select i1 %ok, i32 %n, i32 1
  store i32 %v, ptr @tf_num_threads
  ret void
}}

define i32 @tf_model_run(ptr %inputs, ptr %outputs, ptr %workspace) {{
entry:
  %given = icmp ne ptr %workspace, null
  br i1 %given, label %run, label %alloc
alloc:
  %mem = call ptr @malloc(i64 {arena})
  %failed = icmp eq ptr %mem, null
  br i1 %failed, label %oom, label %run
oom:
  ret i32 -1
run:
  %ws = phi ptr [ %workspace, %entry ], [ %mem, %alloc ]
  %wsi = ptrtoint ptr %ws to i64
  %up = add i64 %wsi, {ALIGN - 1}
  %al = and i64 %up, {-ALIGN}
  %arena = inttoptr i64 %al to ptr
  %rc = call i32 @"{ENTRY}"(ptr %inputs, ptr %outputs, ptr @tf_aot_consts, ptr %arena)
{status}
{copy_text}
  br i1 %given, label %done, label %release
release:
  call void @free(ptr %ws)
  br label %done
done:
  ret i32 %rc
}}
"""


def _c_string(name: str, text: str) -> str:
    data = text.encode() + b"\0"
    body = "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\{c:02X}" for c in data)
    return f'{name} = private unnamed_addr constant [{len(data)} x i8] c"{body}"'


def _error_ir(program: Program) -> str:
    """``tf_model_error_message``: the thread's last status formatted with the check's printf format (one per
    range of a check: the entry of the failing position's range)."""
    if program.status_offset < 0:  # nothing can fail at run time
        return """define i32 @tf_model_error_message(ptr %buf, i64 %size) {
  %room = icmp ne i64 %size, 0
  br i1 %room, label %clear, label %done
clear:
  store i8 0, ptr %buf
  br label %done
done:
  ret i32 0
}
"""
    formats, base, count = [], [], []
    for c in program.checks:
        base.append(len(formats))
        count.append(len(c.ranges))
        formats += c.c_formats(program.name)
    strings = "\n".join(_c_string(f"@tf_fmt{i}", f) for i, f in enumerate(formats))
    table = ", ".join(f"ptr @tf_fmt{i}" for i in range(len(formats)))
    ints = lambda xs: ", ".join(f"i64 {x}" for x in xs)  # noqa: E731
    return f"""{strings}
@tf_fmts = internal constant [{len(formats)} x ptr] [{table}]
@tf_fmt_base = internal constant [{len(base)} x i64] [{ints(base)}]
@tf_fmt_count = internal constant [{len(count)} x i64] [{ints(count)}]
@tf_model_status = internal thread_local global [{STATUS_WORDS} x i64] zeroinitializer
@tf_model_ok = internal constant [{STATUS_WORDS} x i64] zeroinitializer
declare i32 @snprintf(ptr, i64, ptr, ...)

define i32 @tf_model_error_message(ptr %buf, i64 %size) {{
entry:
  %st = call ptr @llvm.threadlocal.address.p0(ptr @tf_model_status)
  %code = load i64, ptr %st
  %failed = icmp ne i64 %code, 0
  br i1 %failed, label %format, label %ok
ok:
  %room = icmp ne i64 %size, 0
  br i1 %room, label %clear, label %none
clear:
  store i8 0, ptr %buf
  br label %none
none:
  ret i32 0
format:
  %idp = getelementptr i64, ptr %st, i64 1
  %id = load i64, ptr %idp
  %valp = getelementptr i64, ptr %st, i64 2
  %val = load i64, ptr %valp
  %posp = getelementptr i64, ptr %st, i64 3
  %pos = load i64, ptr %posp
  %bp = getelementptr i64, ptr @tf_fmt_base, i64 %id
  %b = load i64, ptr %bp
  %np = getelementptr i64, ptr @tf_fmt_count, i64 %id
  %n = load i64, ptr %np
  %k = urem i64 %pos, %n
  %fi = add i64 %b, %k
  %fp = getelementptr ptr, ptr @tf_fmts, i64 %fi
  %fmt = load ptr, ptr %fp
  %len = call i32 (ptr, i64, ptr, ...) @snprintf(ptr %buf, i64 %size, ptr %fmt, i64 %val, i64 %pos)
  ret i32 %len
}}
"""


def header_text(program: Program, lib_name: str) -> str:
    guard = _c_ident(lib_name).upper() + "_H"
    lines = [
        f"/* {lib_name}: generated by tensorforge from model '{program.name}' for {program.target.name} "
        f"({program.target.cpu}). */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define TF_MODEL_NUM_INPUTS {len(program.inputs)}",
        f"#define TF_MODEL_NUM_OUTPUTS {len(program.outputs)}",
        "",
    ]
    for kind, specs in (("input", program.inputs), ("output", program.outputs)):
        for i, (name, dt, shape) in enumerate(specs):
            ident = _c_ident(name).upper()
            numel = int(np.prod(shape)) if shape else 1
            lines.append(f'/* {kind} {i}: "{name}" {_C_TYPES[dt.short]}[{", ".join(map(str, shape))}] */')
            lines.append(f"#define TF_{kind.upper()}_{ident}_INDEX {i}")
            lines.append(f"#define TF_{kind.upper()}_{ident}_NUMEL {numel}")
    lines += [
        "",
        "/* Bytes of scratch memory tf_model_run needs when given a workspace. */",
        "size_t tf_model_workspace_size(void);",
        "/* Worker threads for parallel kernels (default 1). */",
        "void tf_model_set_num_threads(int n);",
        "/* What tf_model_run returns. */",
        "#define TF_MODEL_OK 0",
        "#define TF_MODEL_ERROR_NO_MEMORY (-1) /* the workspace could not be allocated */",
        f"#define TF_MODEL_ERROR_INDEX {INDEX_OUT_OF_RANGE} /* an index (or length) in the data is out of range */",
        f"/* Run-time checks of indices in this model: {len(program.checks)}. */",
        "",
        "/* Run the model: inputs/outputs are arrays of TF_MODEL_NUM_INPUTS/OUTPUTS data pointers in the",
        "   order above. workspace: NULL (allocated per call) or tf_model_workspace_size() bytes, one per",
        "   concurrent caller. Returns TF_MODEL_OK, TF_MODEL_ERROR_NO_MEMORY, or TF_MODEL_ERROR_INDEX when an",
        "   index read from the data is out of range (as in ONNX; the run stops there and the outputs are",
        "   unspecified). */",
        "int tf_model_run(const void *const *inputs, void *const *outputs, void *workspace);",
        "/* The calling thread's last tf_model_run error (the node, op, value, position and valid range) written",
        "   to buf as snprintf does; returns the message's length (0 and an empty string after a success). */",
        "int tf_model_error_message(char *buf, size_t size);",
        "",
        "#ifdef __cplusplus",
        "}",
        "#endif",
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(lines)


def export_library(artifact: Artifact, out_dir: str, lib_name: str = "model", cc: str | None = None
                   ) -> dict[str, str]:  # fmt: skip
    """Write ``lib<lib_name>.so`` and ``<lib_name>.h`` into ``out_dir`` (atomically: both or neither): the
    artifact's LLVM module compiled as position-independent code, with a C entry and its weights."""
    program: Program = artifact.program
    target: Target = artifact.target
    if target.is_gpu:
        raise CompileError("export of GPU targets is not supported; use `tensorforge asm --target nvptx-sm90`")
    cc = cc or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise CompileError("export needs a C compiler/linker (cc or gcc) on PATH")
    consts = list(program.consts)
    const_out: dict[int, tuple[int, int]] = {}
    for i, arr in program.const_outputs.items():
        const_out[i] = (len(consts), np.ascontiguousarray(arr).nbytes)
        consts.append(np.ascontiguousarray(arr))
    blob, offsets = _weights_blob(consts)
    const_out_offsets = {i: (offsets[k], nbytes) for i, (k, nbytes) in const_out.items()}
    ir_text = artifact.llvm_ir + _wrapper_ir(program, offsets[: len(program.consts)], const_out_offsets)
    tm = target_machine(target, jit=False)
    mod = parse_and_optimize(ir_text, tm)
    obj = emit_object(mod, tm)
    pool_obj = emit_object(parse_and_optimize(pool_ir(target, jit=False), tm, opt=2), tm)
    os.makedirs(out_dir, exist_ok=True)
    lib_path = os.path.join(out_dir, f"lib{lib_name}.so")
    hdr_path = os.path.join(out_dir, f"{lib_name}.h")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp-export-") as tmp:
        with open(os.path.join(tmp, "model.o"), "wb") as f:
            f.write(obj)
        with open(os.path.join(tmp, "pool.o"), "wb") as f:
            f.write(pool_obj)
        with open(os.path.join(tmp, "weights.bin"), "wb") as f:
            f.write(blob)
        with open(os.path.join(tmp, "weights.S"), "w") as f:
            f.write('\t.section .rodata\n\t.balign 64\n\t.globl tf_weights\n\t.type tf_weights, @object\n'
                    'tf_weights:\n\t.incbin "weights.bin"\n\t.size tf_weights, .-tf_weights\n'
                    '\t.section .note.GNU-stack,"",@progbits\n')  # fmt: skip
        tmp_lib = os.path.join(tmp, "lib.so")
        cmd = [cc, "-shared", "-o", tmp_lib, "model.o", "pool.o", "weights.S", "-lpthread", "-lm"]
        r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"linking the shared library failed ({' '.join(cmd)}):\n{r.stderr.strip()}")
        tmp_hdr = os.path.join(tmp, "model.h")
        with open(tmp_hdr, "w") as f:
            f.write(header_text(program, lib_name))
        os.replace(tmp_lib, lib_path)
        os.replace(tmp_hdr, hdr_path)
    return {"library": lib_path, "header": hdr_path}
