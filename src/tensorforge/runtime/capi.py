"""The C API of an exported model: its header and the C source of its session layer.

Everything here is generated text. Names that come from the model (its name, tensor names, node names in
error messages) only ever appear inside C string literals, every byte outside a small safe set written as an
octal escape (``c_string``): a tensor named ``y */ int injected; /*`` is data, never code. Macros derived from
tensor names are sanitized to identifiers and made unique (``a-b`` and ``a.b`` become ``A_B`` and ``A_B_2``).
Every public symbol starts with the library's prefix, so any number of exported models link into one
program (``runtime/aot.py`` hides everything else).

The session layer (``API_SOURCE``) is plain C11 compiled by the target's C compiler next to the LLVM object;
it calls the program's entry ``tf_run(inputs, outputs, consts, arena)`` and owns, per session: the weights
(the embedded copy, or a weights file read at ``<p>_session_create``), the constants' pointer table, the
workspace (the arena), the thread count, a busy flag (a session used by two threads at once returns
``<P>_ERROR_BUSY`` instead of racing) and the last error message. See docs/C_API.md.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass, field

import numpy as np

from ..codegen.targets import Target
from ..ir.dtype import DType
from ..lower.checks import INDEX_OUT_OF_RANGE, STATUS_WORDS
from ..lower.program import Program

API_VERSION = 1
ALIGN = 64
WEIGHTS_MAGIC = b"TFWEIGHT"
WEIGHTS_HEADER = 64  # magic, u32 version, u32 0, u64 payload bytes, 32-byte sha256 of the payload, 8 bytes 0

# Status codes (the same numbers in every exported library; each header defines them under its prefix).
STATUS = {"OK": (0, "success"),
          "ERROR_NO_MEMORY": (-1, "out of memory"),
          "ERROR_INDEX": (INDEX_OUT_OF_RANGE, "an index (or length) read from the data is out of range"),
          "ERROR_ARGUMENT": (2, "invalid argument (a NULL or misaligned pointer, a thread count < 1)"),
          "ERROR_WEIGHTS": (3, "the weights could not be loaded (missing, wrong size or another model's)"),
          "ERROR_BUSY": (4, "the session is in use by another thread"),
          "ERROR_CPU": (5, "this CPU lacks an instruction set extension the library was compiled for"),
          "ERROR_NOT_FINITE": (6, "a training step's loss or update is not finite; nothing was changed"),
          "ERROR_IO": (7, "a file could not be read or written"),
          "ERROR_DEVICE": (8, "no usable CUDA driver or GPU, or a CUDA driver call failed")}  # fmt: skip

# x86 features the code may use that GCC's __builtin_cpu_supports can test (checked at session creation)
_CPU_CHECKS = ["sse4.2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd",
               "avx512vnni", "avx512bf16", "avx512vbmi", "avx512ifma", "avxvnni", "amx-tile", "amx-int8",
               "amx-bf16"]  # fmt: skip

_SAFE = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _.,:;()[]{}<>=+-*/'#!|~^&@$")


def c_string(text: str | bytes) -> str:
    """A C string literal holding ``text`` (UTF-8): every byte outside a safe set as a 3-digit octal escape,
    so no name can end the literal, start a comment, form a trigraph or a line continuation."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return '"' + "".join(chr(b) if b in _SAFE else f"\\{b:03o}" for b in data) + '"'


def c_ident(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return s if s and not s[0].isdigit() else "_" + s


def unique_idents(names: list[str]) -> list[str]:
    """Upper-case identifiers for ``names``, unique among themselves (a collision gets ``_2``, ``_3``...)."""
    out, seen = [], set()
    for n in names:
        base = c_ident(n).upper()
        ident, k = base, 2
        while ident in seen:
            ident, k = f"{base}_{k}", k + 1
        seen.add(ident)
        out.append(ident)
    return out


def check_prefix(name: str) -> str:
    """The library name, which prefixes every symbol: a C identifier."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
        raise ValueError(f"library name {name!r} must be a C identifier (letters, digits, '_'; not starting with "
                         "a digit; at most 64 characters): it prefixes every symbol of the library")  # fmt: skip
    return name


def uses_amx(asm: str) -> bool:
    """Whether an assembly listing configures AMX tiles (every AMX function starts with ``ldtilecfg``)."""
    return re.search(r"\bldtilecfg\b", asm) is not None


def cpu_requirements(target: Target) -> list[str]:
    """The x86 extensions the target's code may use that a session checks for before running it."""
    if not target.triple.startswith("x86_64"):
        return []
    on = {f[1:] for f in target.features.split(",") if f.startswith("+")}
    return [f for f in _CPU_CHECKS if f.replace(".", "") in on or f in on]


@dataclass
class Weights:
    """The constants of a program laid out in one blob (each at a multiple of ALIGN)."""

    blob: bytes
    offsets: list[int]
    sha256: bytes = b""

    @classmethod
    def of(cls, arrays: list[np.ndarray]) -> Weights:
        parts, offsets, off = [], [], 0
        for c in arrays:
            data = np.ascontiguousarray(c).tobytes()
            offsets.append(off)
            pad = (-len(data)) % ALIGN
            parts += [data, b"\0" * pad]
            off += len(data) + pad
        blob = b"".join(parts)
        return cls(blob, offsets, hashlib.sha256(blob).digest())

    def file_bytes(self) -> bytes:
        """The weights file: a 64-byte header (magic, version, size, sha256) and the blob."""
        head = WEIGHTS_MAGIC + np.array([1, 0], "<u4").tobytes() + np.array([len(self.blob)], "<u8").tobytes()
        head += self.sha256
        return head + b"\0" * (WEIGHTS_HEADER - len(head)) + self.blob


@dataclass
class Tensor:
    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class LibrarySpec:
    """What the generated C needs to know about one exported program."""

    prefix: str
    model: str
    target: Target
    inputs: list[Tensor]
    outputs: list[Tensor]
    weights: Weights
    const_offsets: list[int]  # the program's constants: their offsets in the blob
    const_outputs: dict[int, tuple[int, int]]  # output index -> (offset in the blob, bytes)
    arena_bytes: int
    status_offset: int
    formats: list[str] = field(default_factory=list)  # printf formats of the run-time checks
    format_base: list[int] = field(default_factory=list)
    format_count: list[int] = field(default_factory=list)
    embedded: bool = True
    amx: bool = False  # the code uses AMX tiles: a session asks Linux for the tile state first

    @classmethod
    def of(cls, program: Program, prefix: str, target: Target, embedded: bool = True) -> LibrarySpec:
        consts = [np.ascontiguousarray(c) for c in program.consts]
        const_out: dict[int, tuple[int, int]] = {}
        for i, arr in program.const_outputs.items():
            const_out[i] = (len(consts), np.ascontiguousarray(arr).nbytes)
            consts.append(np.ascontiguousarray(arr))
        w = Weights.of(consts)
        formats, base, count = [], [], []
        for c in program.checks:
            base.append(len(formats))
            count.append(len(c.ranges))
            formats += c.c_formats(program.name)
        return cls(prefix, program.name, target,
                   [Tensor(n, dt, tuple(s)) for n, dt, s in program.inputs],
                   [Tensor(n, dt, tuple(s)) for n, dt, s in program.outputs],
                   w, w.offsets[: len(program.consts)],
                   {i: (w.offsets[k], nb) for i, (k, nb) in const_out.items()},
                   program.arena_bytes, program.status_offset, formats, base, count, embedded)  # fmt: skip


def _ints(xs, typ: str = "") -> str:
    return ", ".join(f"{int(x)}{typ}" for x in xs) if len(xs) else "0"


def tensor_tables(spec: LibrarySpec) -> str:
    """The ``<p>_tensor_info`` tables of the inputs and outputs."""
    out = []
    for kind, ts in (("input", spec.inputs), ("output", spec.outputs)):
        for i, t in enumerate(ts):
            out.append(f"static const int64_t tf_{kind}_shape{i}[] = {{{_ints(t.shape, 'LL')}}};")
        rows = [f"    {{{c_string(t.name)}, {t.dtype.onnx}, {len(t.shape)}, tf_{kind}_shape{i}, {t.numel}u, "
                f"{t.numel * t.dtype.itemsize}u}}" for i, t in enumerate(ts)]  # fmt: skip
        out.append(f"static const {spec.prefix}_tensor_info tf_{kind}s[{max(1, len(ts))}] = {{\n"
                   + (",\n".join(rows) or "    {0}") + "\n};")  # fmt: skip
    return "\n".join(out)


def common_source(spec: LibrarySpec) -> str:
    """Tables and helpers every library of the spec shares (inference and training sessions)."""
    p = spec.prefix
    w = spec.weights
    fmts = ",\n".join(f"    {c_string(f)}" for f in spec.formats) or "    0"
    reqs = cpu_requirements(spec.target)
    cpu_check = "\n".join(
        f'    if (!__builtin_cpu_supports("{f}")) return tf_fail_text(err, {STATUS["ERROR_CPU"][0]}, '
        f'"this CPU lacks {f}, which the library was compiled for ({spec.target.cpu})");'
        for f in reqs
    )
    if reqs:
        cpu_check = "    __builtin_cpu_init();\n" + cpu_check
    if spec.amx:  # Linux hands out the AMX tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM, XTILEDATA)
        cpu_check += (
            "\n#if defined(__linux__)\n    { extern long syscall(long, ...);\n"
            f"      if (syscall(158, 0x1023, 18) != 0) return tf_fail_text(err, {STATUS['ERROR_CPU'][0]}, "
            '"the operating system refused this process the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM); '
            'export the model for a target without AMX"); }\n#endif'
        )
    statuses = "\n".join(f"    case {v}: return {c_string(text)};" for v, text in STATUS.values())
    return string.Template(_COMMON).substitute(
        p=p, P=p.upper(), model=c_string(spec.model), tables=tensor_tables(spec),
        n_in=len(spec.inputs), n_out=len(spec.outputs), n_consts=max(1, len(spec.const_offsets)),
        const_offsets=_ints(spec.const_offsets, "ULL"),
        weights_bytes=len(w.blob), sha=", ".join(str(b) for b in w.sha256),
        embedded=int(spec.embedded), arena=spec.arena_bytes + ALIGN, status_offset=spec.status_offset,
        status_words=STATUS_WORDS, fmts=fmts, fmt_base=_ints(spec.format_base), fmt_count=_ints(spec.format_count),
        cpu_check=cpu_check, statuses=statuses, header=WEIGHTS_HEADER, magic=c_string(WEIGHTS_MAGIC),
        const_out_rows=",\n".join(f"    {{{i}, {off}ULL, {nb}ULL}}" for i, (off, nb) in spec.const_outputs.items())
        or "    {-1, 0, 0}", n_const_out=len(spec.const_outputs), api_version=API_VERSION,
    )  # fmt: skip


_COMMON = r"""/* Generated by tensorforge: the session layer of library '${p}'. */
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "${p}.h"

#define TF_API __attribute__((visibility("default")))
#define TF_HIDDEN __attribute__((visibility("hidden")))
#define TF_ALIGN 64
#define TF_ERR 1024

/* the program (LLVM object) */
extern TF_HIDDEN int32_t tf_run(const void *const *inputs, void *const *outputs, const void *const *consts,
                                void *arena);
extern TF_HIDDEN __thread int32_t tf_num_threads;
#if ${embedded}
extern TF_HIDDEN const unsigned char tf_weights[];
#endif

static const char tf_model_name[] = ${model};
${tables}
static const uint64_t tf_const_offsets[${n_consts}] = {${const_offsets}};
static const struct { int output; uint64_t offset, bytes; } tf_const_outputs[] = {
${const_out_rows}
};
static const int tf_n_const_outputs = ${n_const_out};
static const uint64_t tf_weights_bytes = ${weights_bytes}ULL;
static const unsigned char tf_weights_sha256[32] = {${sha}};
static const size_t tf_workspace_bytes = ${arena};
static const long tf_status_offset = ${status_offset};
static const char *const tf_formats[] = {
${fmts}
};
static const int tf_format_base[] = {${fmt_base}};
static const int tf_format_count[] = {${fmt_count}};

static __thread char tf_create_error[TF_ERR];  /* the calling thread's last failed session creation */

static int tf_fail_text(char *err, int code, const char *text) {
    if (err) snprintf(err, TF_ERR, "model %s: %s", tf_model_name, text);
    return code;
}

TF_API int ${p}_api_version(void) { return ${api_version}; }
TF_API int ${p}_num_inputs(void) { return ${n_in}; }
TF_API int ${p}_num_outputs(void) { return ${n_out}; }
TF_API const ${p}_tensor_info *${p}_input_info(int i) { return i >= 0 && i < ${n_in} ? &tf_inputs[i] : NULL; }
TF_API const ${p}_tensor_info *${p}_output_info(int i) { return i >= 0 && i < ${n_out} ? &tf_outputs[i] : NULL; }
TF_API size_t ${p}_workspace_size(void) { return tf_workspace_bytes; }
TF_API const char *${p}_model_name(void) { return tf_model_name; }

TF_API const char *${p}_status_string(int status) {
    switch (status) {
${statuses}
    default: return "unknown status";
    }
}

static int tf_check_cpu(char *err) {
    (void)err;
${cpu_check}
    return 0;
}

/* The weights: the embedded copy (path NULL) or a weights file written by `tensorforge export --weights
   file`, checked (magic, size, sha256 recorded in the library) before use. *mem gets what to free. */
static int tf_load_weights(const char *path, const unsigned char **base, void **mem, char *err) {
    *mem = NULL;
    if (path == NULL) {
#if ${embedded}
        *base = tf_weights;
        return 0;
#else
        return tf_fail_text(err, ${P}_ERROR_WEIGHTS, "this library was exported without embedded weights; pass "
                            "the path of its weights file to ${p}_session_create");
#endif
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err) snprintf(err, TF_ERR, "model %s: cannot open the weights file '%s'", tf_model_name, path);
        return ${P}_ERROR_IO;
    }
    unsigned char head[${header}];
    uint64_t size = 0;
    int bad = fread(head, 1, sizeof head, f) != sizeof head || memcmp(head, ${magic}, 8) != 0;
    if (!bad) memcpy(&size, head + 16, 8);
    if (bad || size != tf_weights_bytes || memcmp(head + 24, tf_weights_sha256, 32) != 0) {
        fclose(f);
        if (err) snprintf(err, TF_ERR, "model %s: '%s' is not this library's weights file (expected %llu bytes "
                          "of weights with the digest recorded at export)", tf_model_name, path,
                          (unsigned long long)tf_weights_bytes);
        return ${P}_ERROR_WEIGHTS;
    }
    void *buf = NULL;
    if (posix_memalign(&buf, TF_ALIGN, size ? size : TF_ALIGN) != 0) {
        fclose(f);
        return tf_fail_text(err, ${P}_ERROR_NO_MEMORY, "out of memory reading the weights");
    }
    if (size && fread(buf, 1, size, f) != size) {
        fclose(f);
        free(buf);
        if (err) snprintf(err, TF_ERR, "model %s: the weights file '%s' is truncated", tf_model_name, path);
        return ${P}_ERROR_WEIGHTS;
    }
    fclose(f);
    *base = buf;
    *mem = buf;
    return 0;
}

/* Formats the status words a failing run-time check left in the arena. */
static void tf_check_message(const unsigned char *arena, char *err) {
    const int64_t *st = (const int64_t *)(arena + tf_status_offset);
    int64_t id = st[1], value = st[2], pos = st[3];
    if (tf_status_offset < 0 || id < 0 || id >= (int64_t)(sizeof tf_format_base / sizeof tf_format_base[0]) ||
        tf_formats[0] == 0) {
        tf_fail_text(err, 0, "a run-time check failed");
        return;
    }
    int k = tf_format_count[id] > 0 ? (int)(pos % tf_format_count[id]) : 0;
    snprintf(err, TF_ERR, tf_formats[tf_format_base[id] + k], (long long)value, (long long)pos);
}

/* NULL and alignment checks of a table of tensor pointers. */
static int tf_check_pointers(const void *const *ptrs, const ${p}_tensor_info *info, int n, const char *kind,
                             char *err) {
    if (n > 0 && ptrs == NULL) {
        if (err) snprintf(err, TF_ERR, "model %s: the %s table is NULL", tf_model_name, kind);
        return ${P}_ERROR_ARGUMENT;
    }
    for (int i = 0; i < n; i++) {
        size_t item = info[i].numel ? info[i].bytes / info[i].numel : 1;
        if (info[i].bytes && ptrs[i] == NULL) {
            if (err) snprintf(err, TF_ERR, "model %s: %s %d ('%s') is NULL", tf_model_name, kind, i, info[i].name);
            return ${P}_ERROR_ARGUMENT;
        }
        if (item > 1 && ((uintptr_t)ptrs[i] % item) != 0) {
            if (err) snprintf(err, TF_ERR, "model %s: %s %d ('%s') is not aligned to its element size (%zu bytes)",
                              tf_model_name, kind, i, info[i].name, item);
            return ${P}_ERROR_ARGUMENT;
        }
    }
    return 0;
}
"""


INFERENCE_SOURCE = r"""
struct ${p}_session {
    const unsigned char *weights;
    void *weights_mem;
    const void *consts[${n_consts}];
    void *workspace;
    unsigned char *arena;
    int threads;
    int busy;
    char error[TF_ERR];
};

TF_API int ${p}_session_create(${p}_session **out, const char *weights_path) {
    if (out == NULL) return ${P}_ERROR_ARGUMENT;
    *out = NULL;
    int rc = tf_check_cpu(tf_create_error);
    if (rc) return rc;
    ${p}_session *s = calloc(1, sizeof *s);
    if (s == NULL) return tf_fail_text(tf_create_error, ${P}_ERROR_NO_MEMORY, "out of memory");
    rc = tf_load_weights(weights_path, &s->weights, &s->weights_mem, tf_create_error);
    if (rc) { free(s); return rc; }
    for (int i = 0; i < (int)(sizeof tf_const_offsets / sizeof tf_const_offsets[0]); i++)
        s->consts[i] = s->weights + tf_const_offsets[i];
    if (posix_memalign(&s->workspace, TF_ALIGN, tf_workspace_bytes) != 0) {
        free(s->weights_mem);
        free(s);
        return tf_fail_text(tf_create_error, ${P}_ERROR_NO_MEMORY, "out of memory for the workspace");
    }
    tf_create_error[0] = 0;
    s->arena = s->workspace;
    s->threads = 1;
    *out = s;
    return ${P}_OK;
}

TF_API void ${p}_session_destroy(${p}_session *s) {
    if (s == NULL) return;
    free(s->workspace);
    free(s->weights_mem);
    free(s);
}

${session_accessors}

TF_API int ${p}_run(${p}_session *s, const void *const *inputs, void *const *outputs) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE)) return ${P}_ERROR_BUSY;
    int rc = tf_check_pointers(inputs, tf_inputs, ${n_in}, "input", s->error);
    if (!rc) rc = tf_check_pointers((const void *const *)outputs, tf_outputs, ${n_out}, "output", s->error);
    if (!rc) {
        tf_num_threads = s->threads;
        rc = tf_run(inputs, outputs, s->consts, s->arena);
        if (rc) {
            tf_check_message(s->arena, s->error);
            rc = ${P}_ERROR_INDEX;
        } else {
            for (int i = 0; i < tf_n_const_outputs; i++)
                memcpy(outputs[tf_const_outputs[i].output], s->weights + tf_const_outputs[i].offset,
                       tf_const_outputs[i].bytes);
            s->error[0] = 0;
        }
    }
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return rc;
}
"""


# The session accessors every library defines alike (inference, training, GPU): each session struct has the
# fields ``threads`` and ``error``; placed after the struct (``${session_accessors}`` in each source)
SESSION_ACCESSORS = """TF_API int ${p}_session_set_num_threads(${p}_session *s, int n) {
    if (s == NULL || n < 1) return ${P}_ERROR_ARGUMENT;
    s->threads = n;
    return ${P}_OK;
}

TF_API int ${p}_session_num_threads(const ${p}_session *s) { return s ? s->threads : 0; }

TF_API const char *${p}_session_error(const ${p}_session *s) { return s ? s->error : tf_create_error; }
"""


def session_accessors(prefix: str) -> str:
    return string.Template(SESSION_ACCESSORS).substitute(p=prefix, P=prefix.upper())


def inference_source(spec: LibrarySpec) -> str:
    p = spec.prefix
    return common_source(spec) + string.Template(INFERENCE_SOURCE).substitute(
        p=p, P=p.upper(), n_in=len(spec.inputs), n_out=len(spec.outputs), n_consts=max(1, len(spec.const_offsets)),
        session_accessors=session_accessors(p),
    )  # fmt: skip


def header_text(spec: LibrarySpec, extra_decls: str = "") -> str:
    """``<p>.h``: the versioned API of one exported library (every name under its prefix)."""
    p, P = spec.prefix, spec.prefix.upper()
    lines = [
        f"/* {p}.h: generated by tensorforge for target {spec.target.name} ({c_ident(spec.target.cpu)}).",
        f"   C API version {API_VERSION}; see docs/C_API.md. The model's name: {P}_MODEL_NAME. */",
        f"#ifndef {P}_H_TENSORFORGE",
        f"#define {P}_H_TENSORFORGE",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
        f"#define {P}_API_VERSION {API_VERSION}",
        f"#define {P}_MODEL_NAME {c_string(spec.model)}",
        "",
        "/* Status codes (every function that can fail returns one). */",
    ]
    lines += [f"#define {P}_{k} ({v})  /* {text} */" for k, (v, text) in STATUS.items()]
    lines += ["", "/* Element types: ONNX TensorProto numbering. */"]
    lines += [f"#define {P}_DTYPE_{d.name} {d.onnx}" for d in DType]
    lines += ["", f"#define {P}_NUM_INPUTS {len(spec.inputs)}", f"#define {P}_NUM_OUTPUTS {len(spec.outputs)}"]
    for kind, ts in (("INPUT", spec.inputs), ("OUTPUT", spec.outputs)):
        for i, (t, ident) in enumerate(zip(ts, unique_idents([t.name for t in ts]))):
            shape = ", ".join(map(str, t.shape))
            lines += [f"/* {kind.lower()} {i}: {t.dtype.name.lower()}[{shape}] */",
                      f"#define {P}_{kind}_{ident}_INDEX {i}",
                      f"#define {P}_{kind}_{ident}_NAME {c_string(t.name)}",
                      f"#define {P}_{kind}_{ident}_DTYPE {t.dtype.onnx}",
                      f"#define {P}_{kind}_{ident}_NUMEL {t.numel}"]  # fmt: skip
    lines += [
        "",
        f"typedef struct {p}_session {p}_session;",
        "typedef struct {",
        "    const char *name;      /* the model's tensor name (UTF-8) */",
        f"    int dtype;             /* {P}_DTYPE_* */",
        "    int rank;",
        "    const int64_t *shape;  /* rank dims */",
        "    size_t numel;          /* elements */",
        "    size_t bytes;          /* numel * element size */",
        f"}} {p}_tensor_info;",
        "",
        f"int {p}_api_version(void);               /* {P}_API_VERSION of the library */",
        f"const char *{p}_model_name(void);",
        f"const char *{p}_status_string(int status);",
        f"int {p}_num_inputs(void);",
        f"int {p}_num_outputs(void);",
        f"const {p}_tensor_info *{p}_input_info(int i);   /* NULL when i is out of range */",
        f"const {p}_tensor_info *{p}_output_info(int i);",
        f"size_t {p}_workspace_size(void);         /* bytes of scratch memory a session allocates */",
        "",
        "/* A session: weights, workspace, thread count, last error. weights_path: NULL for the weights",
        "   embedded in the library, else a weights file written by the export. Checks the CPU first. */",
        f"int {p}_session_create({p}_session **session, const char *weights_path);",
        f"void {p}_session_destroy({p}_session *session);",
        f"int {p}_session_set_num_threads({p}_session *session, int n);  /* default 1 */",
        f"int {p}_session_num_threads(const {p}_session *session);",
        "/* The session's last error message (\"\" after a success); with NULL: why the calling thread's last",
        f"   {p}_session_create failed. */",
        f"const char *{p}_session_error(const {p}_session *session);",
    ]
    if extra_decls:
        lines += ["", extra_decls]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {P}_H_TENSORFORGE */", ""]
    return "\n".join(lines)


INFERENCE_DECLS = """/* Run the model. inputs/outputs: {P}_NUM_INPUTS / {P}_NUM_OUTPUTS pointers to dense, C-ordered
   arrays of the shapes and types above (caller-owned). One session per concurrent caller: a session in use
   returns {P}_ERROR_BUSY. Returns {P}_OK, or an error with the message in {p}_session_error(). */
int {p}_run({p}_session *session, const void *const *inputs, void *const *outputs);"""


__all__ = ["API_VERSION", "LibrarySpec", "STATUS", "Weights", "c_ident", "c_string", "check_prefix",
           "cpu_requirements", "header_text", "inference_source", "session_accessors", "unique_idents",
           "uses_amx"]  # fmt: skip
