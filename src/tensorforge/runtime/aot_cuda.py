"""Ahead-of-time export for NVIDIA GPUs: a compiled model as a C library with its PTX embedded and the same C API
as the CPU export (docs/C_API.md).

    tensorforge export model.onnx --target cuda -o build/ --name resnet

writes what ``runtime/aot.py`` writes for a CPU (``libresnet.so`` / ``.a``, ``resnet.h``, ``example.c``,
``Makefile``, ``README.md``, ``resnet.json``) with ``resnet.ptx`` in place of the assembly listing. The library
embeds the PTX (``.incbin``, NUL-terminated) and the weights; ``<p>_session_create`` opens the driver with
``dlopen("libcuda.so.1")`` (so the library has no link-time CUDA dependency and loads on machines without
one), initializes it, loads the PTX with ``cuModuleLoadData`` (the driver JIT-compiles it for the GPU, so PTX
built for sm_80 also runs on newer GPUs), uploads the constants and allocates the device arena and the
input/output buffers once. ``<p>_run`` copies the inputs in, launches every kernel in order on one stream
(``cuLaunchKernel`` with the schedule's grid), reads the status words back after kernels with run-time
checks, and copies the outputs out. Without a driver or GPU, session creation returns
``<P>_ERROR_DEVICE`` with a message naming what is missing (``TENSORFORGE_LIBCUDA`` names another driver
library, as for the Python runtime).
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import tempfile

import numpy as np

from ..errors import CompileError
from .aot import Toolchain, _write_export, manifest
from .aot_files import example_source, makefile, readme
from .artifact import Artifact
from .capi import (
    INFERENCE_DECLS,
    STATUS,
    LibrarySpec,
    _ints,
    c_string,
    check_prefix,
    common_source,
    header_text,
    session_accessors,
)

_KIND = {"in": 0, "out": 1, "const": 2}  # kernel argument kinds; anything else is an arena offset (3)


def _launch_tables(artifact: Artifact) -> dict[str, str]:
    p = artifact.program
    launch = artifact.metadata.get("gpu_launch")
    if not artifact.target.is_gpu or launch is None:
        raise CompileError(f"model '{p.name}' was compiled for {artifact.target.name}, not for a GPU")
    names, grid, block, base, count, kinds, idx = [], [], [], [], [], [], []
    for k, args in zip(p.kernels, p.kernel_args):
        names.append(c_string(k.name))
        g, b = launch[k.name]
        grid.append(g)
        block.append(b)
        base.append(len(kinds))
        count.append(len(args))
        for kind, i in args:
            kinds.append(_KIND.get(kind, 3))
            idx.append(i)
    checks = set(p.check_kernels)
    return {"n_kernels": str(len(p.kernels)), "kernel_names": ", ".join(names) or "0",
            "grid": _ints(grid, "u"), "block": _ints(block, "u"), "arg_base": _ints(base), "arg_count": _ints(count),
            "arg_kind": _ints(kinds), "arg_index": _ints(idx, "LL"), "max_args": str(max([1, *count])),
            "check_kernel": _ints([int(i in checks) for i in range(len(p.kernels))]),
            "const_bytes": _ints([np.ascontiguousarray(c).nbytes for c in p.consts], "ULL"),
            "has_checks": str(int(bool(checks)))}  # fmt: skip


def cuda_source(spec: LibrarySpec, artifact: Artifact) -> str:
    """The session layer of a GPU library: ``common_source`` (tables, weights, errors) and the CUDA session."""
    p = spec.prefix
    return common_source(spec) + string.Template(CUDA_SOURCE).substitute(
        p=p, P=p.upper(), n_in=len(spec.inputs), n_out=len(spec.outputs), n_consts=max(1, len(spec.const_offsets)),
        device_error=STATUS["ERROR_DEVICE"][0], session_accessors=session_accessors(p), **_launch_tables(artifact),
    )  # fmt: skip


def _ptx_object(ptx: str, tc: Toolchain) -> bytes:
    """An object holding the PTX as the hidden NUL-terminated array ``tf_ptx``."""
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "model.ptx"), "w") as f:
            f.write(ptx)
        with open(os.path.join(d, "ptx.S"), "w") as f:
            f.write('\t.section .rodata\n\t.balign 64\n\t.globl tf_ptx\n\t.hidden tf_ptx\n\t.type tf_ptx, %object\n'
                    'tf_ptx:\n\t.incbin "model.ptx"\n\t.byte 0\n\t.size tf_ptx, .-tf_ptx\n'
                    '\t.section .note.GNU-stack,"",%progbits\n')  # fmt: skip
        r = subprocess.run([tc.cc, "-c", "ptx.S", "-o", "ptx.o"], cwd=d, capture_output=True, text=True)
        if r.returncode != 0:
            raise CompileError(f"assembling the embedded PTX failed: {r.stderr.strip()}")
        with open(os.path.join(d, "ptx.o"), "rb") as f:
            return f.read()


def export_cuda_library(artifact: Artifact, out_dir: str, lib_name: str = "model", cc: str | None = None,
                        weights: str = "embedded") -> dict[str, str]:  # fmt: skip
    """Write the GPU library of ``artifact`` (compiled for an NVPTX target through stage ``llvm``) and the files
    around it into ``out_dir`` (module docstring). The library runs on the machine's CPU architecture."""
    from ..codegen.targets import get_target

    prefix = check_prefix(lib_name)
    if weights not in ("embedded", "file"):
        raise ValueError(f"weights must be 'embedded' or 'file', got {weights!r}")
    host = get_target("host")
    tc = Toolchain.for_target(host, cc)
    spec = LibrarySpec.of(artifact.program, prefix, artifact.target, embedded=weights == "embedded")
    ptx = artifact.assembly()
    c_source = cuda_source(spec, artifact)
    header = header_text(spec, INFERENCE_DECLS.format(p=prefix, P=prefix.upper()))
    objects = {"ptx.o": _ptx_object(ptx, tc)}
    info = manifest(spec, "inference", weights)
    info["device"] = {"api": "cuda-driver", "ptx": f"{prefix}.ptx", "arch": artifact.target.cpu}
    extra = {f"{prefix}.ptx": ptx, "example.c": example_source(prefix), "Makefile": makefile(prefix, tc.cc, False),
             "README.md": readme(prefix, spec, False, weights == "file"),
             f"{prefix}.json": json.dumps(info, indent=2) + "\n"}  # fmt: skip
    if weights == "file":
        extra[f"{prefix}.weights"] = spec.weights.file_bytes()
    return _write_export(out_dir, prefix, objects, c_source, header, spec, tc, extra)


CUDA_SOURCE = r"""
/* ---- the CUDA session: the driver API through dlopen (no link-time dependency) ---- */
#include <dlfcn.h>
typedef int tf_cu_result;
typedef unsigned long long tf_cu_ptr;
extern TF_HIDDEN const char tf_ptx[];

static const int tf_n_kernels = ${n_kernels};
static const char *const tf_kernel_names[] = {${kernel_names}};
static const unsigned tf_grid[] = {${grid}}, tf_block[] = {${block}};
static const int tf_arg_base[] = {${arg_base}}, tf_arg_count[] = {${arg_count}}, tf_arg_kind[] = {${arg_kind}};
static const long long tf_arg_index[] = {${arg_index}};
static const int tf_check_kernel[] = {${check_kernel}};
static const uint64_t tf_const_bytes[] = {${const_bytes}};

typedef struct {
    void *lib;
    tf_cu_result (*Init)(unsigned);
    tf_cu_result (*DeviceGetCount)(int *);
    tf_cu_result (*DeviceGet)(int *, int);
    tf_cu_result (*DevicePrimaryCtxRetain)(void **, int);
    tf_cu_result (*DevicePrimaryCtxRelease)(int);
    tf_cu_result (*CtxSetCurrent)(void *);
    tf_cu_result (*ModuleLoadData)(void **, const void *);
    tf_cu_result (*ModuleUnload)(void *);
    tf_cu_result (*ModuleGetFunction)(void **, void *, const char *);
    tf_cu_result (*StreamCreate)(void **, unsigned);
    tf_cu_result (*StreamDestroy)(void *);
    tf_cu_result (*StreamSynchronize)(void *);
    tf_cu_result (*MemAlloc)(tf_cu_ptr *, size_t);
    tf_cu_result (*MemFree)(tf_cu_ptr);
    tf_cu_result (*MemcpyHtoD)(tf_cu_ptr, const void *, size_t);
    tf_cu_result (*MemcpyHtoDAsync)(tf_cu_ptr, const void *, size_t, void *);
    tf_cu_result (*MemcpyDtoHAsync)(void *, tf_cu_ptr, size_t, void *);
    tf_cu_result (*MemsetD8Async)(tf_cu_ptr, unsigned char, size_t, void *);
    tf_cu_result (*LaunchKernel)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                 void *, void **, void **);
    tf_cu_result (*GetErrorName)(tf_cu_result, const char **);
} tf_cuda;

struct ${p}_session {
    const unsigned char *weights;
    void *weights_mem;
    tf_cuda cu;
    int device, has_ctx;
    void *ctx, *module, *stream;
    void *functions[${n_kernels} > 0 ? ${n_kernels} : 1];
    tf_cu_ptr arena, consts[${n_consts}], inputs[${n_in} > 0 ? ${n_in} : 1], outputs[${n_out} > 0 ? ${n_out} : 1];
    int threads;
    int busy;
    char error[TF_ERR];
};

static int tf_cu_fail(${p}_session *s, char *err, tf_cu_result rc, const char *what) {
    const char *name = NULL;
    if (s->cu.GetErrorName == NULL || s->cu.GetErrorName(rc, &name) != 0 || name == NULL) name = "unknown error";
    if (err) snprintf(err, TF_ERR, "model %s: %s failed: %s (%d)", tf_model_name, what, name, rc);
    return ${device_error};
}

#define TF_CU(s, err, call, what) \
    do { tf_cu_result rc_ = (call); if (rc_ != 0) return tf_cu_fail(s, err, rc_, what); } while (0)

static int tf_open_driver(tf_cuda *cu, char *err) {
    const char *name = getenv("TENSORFORGE_LIBCUDA");
    if (name == NULL || !*name) name = "libcuda.so.1";
    cu->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (cu->lib == NULL) {
        if (err) snprintf(err, TF_ERR, "model %s: no CUDA driver: %s could not be loaded (no NVIDIA driver "
                          "installed, or not on the library path): %s", tf_model_name, name, dlerror());
        return ${device_error};
    }
    struct { void **slot; const char *sym; } need[] = {
        {(void **)&cu->Init, "cuInit"}, {(void **)&cu->DeviceGetCount, "cuDeviceGetCount"},
        {(void **)&cu->DeviceGet, "cuDeviceGet"}, {(void **)&cu->DevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
        {(void **)&cu->DevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
        {(void **)&cu->CtxSetCurrent, "cuCtxSetCurrent"}, {(void **)&cu->ModuleLoadData, "cuModuleLoadData"},
        {(void **)&cu->ModuleUnload, "cuModuleUnload"}, {(void **)&cu->ModuleGetFunction, "cuModuleGetFunction"},
        {(void **)&cu->StreamCreate, "cuStreamCreate"}, {(void **)&cu->StreamDestroy, "cuStreamDestroy_v2"},
        {(void **)&cu->StreamSynchronize, "cuStreamSynchronize"}, {(void **)&cu->MemAlloc, "cuMemAlloc_v2"},
        {(void **)&cu->MemFree, "cuMemFree_v2"}, {(void **)&cu->MemcpyHtoD, "cuMemcpyHtoD_v2"},
        {(void **)&cu->MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"},
        {(void **)&cu->MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"},
        {(void **)&cu->MemsetD8Async, "cuMemsetD8Async"}, {(void **)&cu->LaunchKernel, "cuLaunchKernel"},
    };
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        *need[i].slot = dlsym(cu->lib, need[i].sym);
        if (*need[i].slot == NULL) {
            if (err) snprintf(err, TF_ERR, "model %s: the CUDA driver %s has no %s (driver too old?)",
                              tf_model_name, name, need[i].sym);
            dlclose(cu->lib);
            cu->lib = NULL;
            return ${device_error};
        }
    }
    *(void **)&cu->GetErrorName = dlsym(cu->lib, "cuGetErrorName");
    return 0;
}

static int tf_cuda_setup(${p}_session *s, char *err) {
    tf_cuda *cu = &s->cu;
    int rc = tf_open_driver(cu, err), n = 0;
    if (rc) return rc;
    if (cu->Init(0) != 0) {
        if (err) snprintf(err, TF_ERR, "model %s: cuInit failed: no NVIDIA GPU visible to this process", tf_model_name);
        return ${device_error};
    }
    TF_CU(s, err, cu->DeviceGetCount(&n), "cuDeviceGetCount");
    if (n == 0) {
        if (err) snprintf(err, TF_ERR, "model %s: the CUDA driver sees no GPU (CUDA_VISIBLE_DEVICES?)", tf_model_name);
        return ${device_error};
    }
    TF_CU(s, err, cu->DeviceGet(&s->device, 0), "cuDeviceGet");
    TF_CU(s, err, cu->DevicePrimaryCtxRetain(&s->ctx, s->device), "cuDevicePrimaryCtxRetain");
    s->has_ctx = 1;
    TF_CU(s, err, cu->CtxSetCurrent(s->ctx), "cuCtxSetCurrent");
    TF_CU(s, err, cu->ModuleLoadData(&s->module, tf_ptx), "cuModuleLoadData (the driver's JIT compiling the PTX)");
    for (int k = 0; k < tf_n_kernels; k++)
        TF_CU(s, err, cu->ModuleGetFunction(&s->functions[k], s->module, tf_kernel_names[k]), "cuModuleGetFunction");
    TF_CU(s, err, cu->StreamCreate(&s->stream, 0), "cuStreamCreate");
    TF_CU(s, err, cu->MemAlloc(&s->arena, tf_workspace_bytes), "cuMemAlloc (the arena)");
    for (int i = 0; i < (int)(sizeof tf_const_bytes / sizeof tf_const_bytes[0]); i++) {
        size_t nb = (size_t)tf_const_bytes[i];
        TF_CU(s, err, cu->MemAlloc(&s->consts[i], nb ? nb : 8), "cuMemAlloc (a constant)");
        if (nb) TF_CU(s, err, cu->MemcpyHtoD(s->consts[i], s->weights + tf_const_offsets[i], nb), "cuMemcpyHtoD");
    }
    for (int i = 0; i < ${n_in}; i++)
        TF_CU(s, err, cu->MemAlloc(&s->inputs[i], tf_inputs[i].bytes ? tf_inputs[i].bytes : 8),
              "cuMemAlloc (an input)");
    for (int i = 0; i < ${n_out}; i++)
        TF_CU(s, err, cu->MemAlloc(&s->outputs[i], tf_outputs[i].bytes ? tf_outputs[i].bytes : 8),
              "cuMemAlloc (an output)");
    return 0;
}

TF_API void ${p}_session_destroy(${p}_session *s) {
    if (s == NULL) return;
    tf_cuda *cu = &s->cu;
    if (cu->lib) {
        if (s->ctx) cu->CtxSetCurrent(s->ctx);
        for (int i = 0; i < ${n_in}; i++) if (s->inputs[i]) cu->MemFree(s->inputs[i]);
        for (int i = 0; i < ${n_out}; i++) if (s->outputs[i]) cu->MemFree(s->outputs[i]);
        for (int i = 0; i < ${n_consts}; i++) if (s->consts[i]) cu->MemFree(s->consts[i]);
        if (s->arena) cu->MemFree(s->arena);
        if (s->stream) cu->StreamDestroy(s->stream);
        if (s->module) cu->ModuleUnload(s->module);
        if (s->has_ctx) cu->DevicePrimaryCtxRelease(s->device);
        dlclose(cu->lib);
    }
    free(s->weights_mem);
    free(s);
}

TF_API int ${p}_session_create(${p}_session **out, const char *weights_path) {
    if (out == NULL) return ${P}_ERROR_ARGUMENT;
    *out = NULL;
    int rc = tf_check_cpu(tf_create_error);
    if (rc) return rc;
    ${p}_session *s = calloc(1, sizeof *s);
    if (s == NULL) return tf_fail_text(tf_create_error, ${P}_ERROR_NO_MEMORY, "out of memory");
    rc = tf_load_weights(weights_path, &s->weights, &s->weights_mem, tf_create_error);
    if (!rc) rc = tf_cuda_setup(s, tf_create_error);
    if (rc) { ${p}_session_destroy(s); return rc; }
    tf_create_error[0] = 0;
    s->threads = 1;
    *out = s;
    return ${P}_OK;
}

/* The GPU runs the whole grid: the thread count is kept for the API, not used. */
${session_accessors}

static int tf_cuda_run(${p}_session *s, const void *const *inputs, void *const *outputs) {
    tf_cuda *cu = &s->cu;
    char *err = s->error;
    TF_CU(s, err, cu->CtxSetCurrent(s->ctx), "cuCtxSetCurrent");
    for (int i = 0; i < ${n_in}; i++)
        if (tf_inputs[i].bytes)
            TF_CU(s, err, cu->MemcpyHtoDAsync(s->inputs[i], inputs[i], tf_inputs[i].bytes, s->stream),
                  "cuMemcpyHtoDAsync");
    if (${has_checks})
        TF_CU(s, err, cu->MemsetD8Async(s->arena + (tf_cu_ptr)tf_status_offset, 0, 8, s->stream), "cuMemsetD8Async");
    tf_cu_ptr vals[${max_args}];
    void *params[${max_args}];
    for (int k = 0; k < tf_n_kernels; k++) {
        for (int a = 0; a < tf_arg_count[k]; a++) {
            int j = tf_arg_base[k] + a;
            long long ix = tf_arg_index[j];
            switch (tf_arg_kind[j]) {
            case 0: vals[a] = s->inputs[ix]; break;
            case 1: vals[a] = s->outputs[ix]; break;
            case 2: vals[a] = s->consts[ix]; break;
            default: vals[a] = s->arena + (tf_cu_ptr)ix;
            }
            params[a] = &vals[a];
        }
        TF_CU(s, err, cu->LaunchKernel(s->functions[k], tf_grid[k], 1, 1, tf_block[k], 1, 1, 0, s->stream, params,
                                       NULL), "cuLaunchKernel");
        if (tf_check_kernel[k]) {
            int64_t words[4] = {0, 0, 0, 0};
            TF_CU(s, err, cu->MemcpyDtoHAsync(words, s->arena + (tf_cu_ptr)tf_status_offset, sizeof words, s->stream),
                  "cuMemcpyDtoHAsync");
            TF_CU(s, err, cu->StreamSynchronize(s->stream), "cuStreamSynchronize");
            if (words[0]) {
                tf_check_message((const unsigned char *)words - tf_status_offset, err);
                return ${P}_ERROR_INDEX;
            }
        }
    }
    for (int i = 0; i < ${n_out}; i++)
        if (tf_outputs[i].bytes)
            TF_CU(s, err, cu->MemcpyDtoHAsync(outputs[i], s->outputs[i], tf_outputs[i].bytes, s->stream),
                  "cuMemcpyDtoHAsync");
    TF_CU(s, err, cu->StreamSynchronize(s->stream), "cuStreamSynchronize");
    for (int i = 0; i < tf_n_const_outputs; i++)
        memcpy(outputs[tf_const_outputs[i].output], s->weights + tf_const_outputs[i].offset, tf_const_outputs[i].bytes);
    return 0;
}

TF_API int ${p}_run(${p}_session *s, const void *const *inputs, void *const *outputs) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE)) return ${P}_ERROR_BUSY;
    int rc = tf_check_pointers(inputs, tf_inputs, ${n_in}, "input", s->error);
    if (!rc) rc = tf_check_pointers((const void *const *)outputs, tf_outputs, ${n_out}, "output", s->error);
    if (!rc) rc = tf_cuda_run(s, inputs, outputs);
    if (!rc) s->error[0] = 0;
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    return rc;
}
"""


__all__ = ["cuda_source", "export_cuda_library"]
