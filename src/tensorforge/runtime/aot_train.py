"""Exported training: a compiled training step as a standalone C library (``tensorforge export-train``).

    tensorforge export-train model.onnx --loss cross_entropy --optimizer sgd --batch-size 32 -o build/ --name net

writes into ``build/``: ``libnet.so`` / ``libnet.a``, ``net.h``, ``net.s``, ``net.json`` (kind "training"),
``train_example.c`` + ``Makefile`` + ``README.md`` (``runtime/aot_train_files.py``). The library holds two
programs, compiled by ``train/export.py`` for one fixed batch size: the training step (forward, loss,
backward, optimizer update, the parameters, optimizer state and batch-norm statistics updated in place) and
the forward pass with the current parameters (batch norm in inference mode), plus the initial state (the
step's state at export). Each session owns a copy of that state, the learning rate, a workspace shared by
both programs and the thread count. docs/C_API_TRAINING.md is the API.

Both programs are LLVM modules that define ``tf_run`` and its twins: the training module's definitions are
renamed apart (``tf_train_*``) after optimization, and its thread-count global becomes a declaration of the
forward module's one thread-local definition, so one ``tf_num_threads`` drives both. Kernels are internal
symbols, or renamed with the rest of the training module, and never clash (a clash would fail the link).
The thread pool (``pool.o``) is shared.

What Python checks before a step, the session layer checks before native code runs: NULL/misaligned
pointers, class indices in range (``<P>_ERROR_ARGUMENT``); a step whose loss or update is not finite leaves
the state unchanged (the update ops test it in native code) and returns ``<P>_ERROR_NOT_FINITE``.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from dataclasses import dataclass

import numpy as np

from ..codegen.emit import emit_assembly, emit_object, llvm_lock, parse_and_optimize, target_machine
from ..codegen.threadpool import pool_ir
from ..errors import CompileError
from ..ir.dtype import DType
from .aot import Toolchain, _write_export, library_objects, manifest
from .aot_train_c import TRAINING_SOURCE
from .aot_train_files import train_example_source, train_makefile, train_readme
from .artifact import Artifact
from .capi import (
    ALIGN,
    LibrarySpec,
    Tensor,
    Weights,
    _ints,
    c_string,
    check_prefix,
    common_source,
    header_text,
    session_accessors,
    uses_amx,  # fmt: skip
)

STATE_MAGIC = b"TFTSTATE"
STATE_VERSION = 1
STATE_HEADER = 128  # see the format in docs/C_API_TRAINING.md
TRAIN_PREFIX = "tf_train_"  # the training module's non-local symbols, renamed apart from the forward module's
_REAL = {DType.F32: "float", DType.F64: "double"}


@dataclass
class StateBuffer:
    """One persistent buffer of the step: a parameter, an optimizer state or a batch-norm statistic."""

    name: str
    kind: str  # "parameter" | "optimizer" | "statistic"
    value: np.ndarray  # its value at export (the session's initial state)


@dataclass
class TrainingSpec:
    """What the export needs to know about the step besides its two programs (``train/export.py``)."""

    model: str
    batch: int
    loss: str
    optimizer: str  # a description, for the manifest and the README
    data: list[str]  # the data inputs (names in both programs)
    target: str  # the training program's target input
    lr_input: str  # the training program's learning-rate input
    lr: float
    check_output: str  # the training program's update-check output
    check_labels: list[str]  # what each entry of the update check covers
    state: list[StateBuffer]
    classes: int = 0  # class-index targets: the number of classes (0: float targets)
    trained_output: str = ""  # the predict output the loss is computed on
    steps: int = 0


def state_digest(spec: TrainingSpec) -> bytes:
    """Identifies the layout of a state file: the model and every buffer's name, kind, dtype and shape."""
    rows = [[b.name, b.kind, str(b.value.dtype), list(b.value.shape)] for b in spec.state]
    return hashlib.sha256(json.dumps([spec.model, rows]).encode()).digest()


def _apart(ir_text: str, tm) -> object:
    """The training module, optimized, with the thread count declared (not defined) and every other
    non-local definition renamed ``tf_train_*``."""
    pat = re.compile(r'^@"?tf_num_threads"?\s*=.*$', re.M)
    ir_text, n = pat.subn('@"tf_num_threads" = external hidden thread_local(localdynamic) global i32, align 4', ir_text,
                          count=1)  # fmt: skip
    if n != 1:
        raise CompileError("export-train: the training program's thread count global was not found in its LLVM IR")
    mod = parse_and_optimize(ir_text, tm)
    import llvmlite.binding as llvm

    local = (llvm.Linkage.internal, llvm.Linkage.private)
    with llvm_lock():
        for v in [*mod.functions, *mod.global_variables]:
            if not v.is_declaration and v.linkage not in local:
                v.name = TRAIN_PREFIX + v.name.removeprefix("tf_")
    return mod


def _formats(program) -> tuple[list[str], list[int], list[int]]:
    formats, base, count = [], [], []
    for c in program.checks:
        base.append(len(formats))
        count.append(len(c.ranges))
        formats += c.c_formats(program.name)
    return formats, base, count


class _Layout:
    """Where every buffer of the two programs' tables comes from, checked against the programs."""

    def __init__(self, train: Artifact, predict: Artifact, spec: TrainingSpec):
        tp, pp = train.program, predict.program
        self.tp, self.pp = tp, pp
        t_in = {n: i for i, (n, _, _) in enumerate(tp.inputs)}
        p_in = {n: i for i, (n, _, _) in enumerate(pp.inputs)}
        t_out = {n: i for i, (n, _, _) in enumerate(tp.outputs)}
        slot = {b.name: k for k, b in enumerate(spec.state)}
        model = spec.model
        need = [*spec.data, spec.target, spec.lr_input, *slot]
        missing = [n for n in need if n not in t_in] + [n for n in spec.data if n not in p_in]
        if missing or spec.check_output not in t_out:
            raise CompileError(f"export-train: model '{model}': the compiled step lacks {missing or spec.check_output}")
        for b in spec.state:
            _, dt, shape = tp.inputs[t_in[b.name]]
            if dt.np != b.value.dtype or tuple(shape) != b.value.shape:
                raise CompileError(f"export-train: model '{model}': state '{b.name}' is {b.value.dtype}"
                                   f"{list(b.value.shape)}, the step reads {dt.name}{list(shape)}")  # fmt: skip
        self.real = _REAL.get(tp.inputs[t_in[spec.lr_input]][1])
        loss_dt = tp.outputs[0][1]
        check_dt = tp.outputs[t_out[spec.check_output]][1]
        if self.real is None or _REAL.get(loss_dt) != self.real or _REAL.get(check_dt) != self.real:
            raise CompileError(f"export-train: model '{model}': a training step in C needs a float32 or float64 "
                               f"model (the loss is {loss_dt.name})")  # fmt: skip
        if tp.const_outputs:
            names = [tp.outputs[i][0] for i in tp.const_outputs]
            raise CompileError(f"export-train: model '{model}': the step's output(s) {names} are constants "
                               "(does any parameter affect the loss?)")  # fmt: skip
        target = tp.inputs[t_in[spec.target]]
        if spec.classes and target[1] != DType.I64:
            raise CompileError(f"export-train: model '{model}': class-index targets must be int64, got {target[1]}")
        self.data = [Tensor(n, dt, tuple(s)) for n, dt, s in (tp.inputs[t_in[d]] for d in spec.data)]
        for t in self.data:
            _, dt, s = pp.inputs[p_in[t.name]]
            if dt != t.dtype or tuple(s) != t.shape:
                raise CompileError(f"export-train: model '{model}': input '{t.name}' differs between the training "
                                   "step and the forward pass")  # fmt: skip
        self.target = Tensor(*target[:2], tuple(target[2]))
        self.outputs = [Tensor(n, dt, tuple(s)) for n, dt, s in pp.outputs]
        state_in = {i: o for o, i in tp.state.items()}
        # the state block: every buffer 64-byte aligned, then the learning rate, the loss, the update check
        off, self.state_off = 0, []
        for b in spec.state:
            self.state_off.append(off)
            off += -(-max(b.value.nbytes, 1) // ALIGN) * ALIGN
        item = 8 if self.real == "double" else 4
        self.lr_off, self.loss_off, self.check_off = off, off + ALIGN, off + 2 * ALIGN
        n_check = int(np.prod(tp.outputs[t_out[spec.check_output]][2]))
        self.n_check = n_check
        self.block_bytes = off + 2 * ALIGN + -(-max(n_check * item, 1) // ALIGN) * ALIGN
        # the tables' entries: (C expression of the pointer, set once at session creation or per call)
        self.t_static, self.t_call, self.p_static, self.p_call = [], [], [], []
        for i, (n, _, _) in enumerate(tp.inputs):
            if n in spec.data:
                self.t_call.append(f"s->tin[{i}] = x[{spec.data.index(n)}];")
            elif n == spec.target:
                self.t_call.append(f"s->tin[{i}] = y;")
            elif n == spec.lr_input:
                self.t_static.append(f"s->tin[{i}] = s->block + {self.lr_off};")
            elif n in slot:
                self.t_static.append(f"s->tin[{i}] = s->block + {self.state_off[slot[n]]};")
                if i not in state_in:
                    raise CompileError(f"export-train: model '{model}': state '{n}' is never updated by the step")
            else:
                raise CompileError(f"export-train: model '{model}': the step has an unexpected input '{n}'")
        for o, (n, _, _) in enumerate(tp.outputs):
            if o == 0:
                self.t_static.append(f"s->tout[0] = s->block + {self.loss_off};")
            elif n == spec.check_output:
                self.t_static.append(f"s->tout[{o}] = s->block + {self.check_off};")
            elif o in tp.state and tp.inputs[tp.state[o]][0] in slot:
                k = slot[tp.inputs[tp.state[o]][0]]
                self.t_static.append(f"s->tout[{o}] = s->block + {self.state_off[k]};")
            else:
                raise CompileError(f"export-train: model '{model}': the step has an unexpected output '{n}'")
        for i, (n, _, _) in enumerate(pp.inputs):
            if n in spec.data:
                self.p_call.append(f"s->pin[{i}] = x[{spec.data.index(n)}];")
            elif n in slot and spec.state[slot[n]].kind != "optimizer":
                self.p_static.append(f"s->pin[{i}] = s->block + {self.state_off[slot[n]]};")
            else:
                raise CompileError(f"export-train: model '{model}': the forward pass has an unexpected input '{n}'")


def export_training(train: Artifact, predict: Artifact, spec: TrainingSpec, out_dir: str, lib_name: str = "model",
                    cc: str | None = None) -> dict[str, str]:  # fmt: skip
    """Write the training library and the files around it (module docstring) into ``out_dir``; each file
    appears complete or not at all. ``train``/``predict``: the step and the forward pass, compiled through
    the ``llvm`` stage for one target and batch size."""
    prefix = check_prefix(lib_name)
    target = train.target
    if target.is_gpu:
        raise CompileError("export-train: GPU targets are not supported; export for a CPU target")
    if predict.target.triple != target.triple:
        raise CompileError("export-train: the training step and the forward pass were compiled for different targets")
    tc = Toolchain.for_target(target, cc)
    lay = _Layout(train, predict, spec)
    tp, pp = lay.tp, lay.pp
    # the blob: the forward pass's constants (and constant outputs), the step's constants, the initial state
    p_consts = [np.ascontiguousarray(c) for c in pp.consts]
    p_const_out = list(pp.const_outputs.items())
    arrays = [*p_consts, *(np.ascontiguousarray(a) for _, a in p_const_out),
              *(np.ascontiguousarray(c) for c in tp.consts), *(np.ascontiguousarray(b.value) for b in spec.state)]
    w = Weights.of(arrays)
    n_p, n_po, n_t = len(p_consts), len(p_const_out), len(tp.consts)
    formats, base, count = _formats(pp)
    lib = LibrarySpec(prefix, spec.model, target, lay.data, lay.outputs, w, w.offsets[:n_p],
                      {i: (w.offsets[n_p + k], np.ascontiguousarray(a).nbytes) for k, (i, a) in enumerate(p_const_out)},
                      max(tp.arena_bytes, pp.arena_bytes), pp.status_offset, formats, base, count, True)  # fmt: skip
    t_const_offsets = w.offsets[n_p + n_po : n_p + n_po + n_t]
    state_init = w.offsets[n_p + n_po + n_t :]
    objects, p_asm = library_objects(predict)  # the forward pass, as `tensorforge export` builds a model
    tm = target_machine(target, jit=False)
    tmod = _apart(train.llvm_ir, tm)  # one module (its parts linked): renamed apart as a whole
    objects["train.o"] = emit_object(tmod, tm)
    objects["pool.o"] = emit_object(parse_and_optimize(pool_ir(target, jit=False), tm, opt=2), tm)
    asm = (f"# {prefix}.s: the training step (symbols {TRAIN_PREFIX}*)\n" + emit_assembly(tmod, tm)
           + f"\n# the forward pass ({prefix}_predict)\n" + p_asm)  # fmt: skip
    lib.amx = uses_amx(asm)
    c_source = common_source(lib) + training_source(lib, spec, lay, t_const_offsets, state_init)
    header = training_header(lib, spec, lay)
    info = manifest(lib, "training", "embedded")
    info["training"] = {"batch_size": spec.batch, "loss": spec.loss, "optimizer": spec.optimizer,
                        "learning_rate": spec.lr, "classes": spec.classes, "data": spec.data,
                        "target": {"name": lay.target.name, "dtype": lay.target.dtype.name.lower(),
                                   "shape": list(lay.target.shape)},
                        "state": [{"name": b.name, "kind": b.kind, "dtype": str(b.value.dtype),
                                   "shape": list(b.value.shape)} for b in spec.state],
                        "state_format": {"magic": STATE_MAGIC.decode(), "version": STATE_VERSION,
                                         "digest": state_digest(spec).hex()}}  # fmt: skip
    extra = {f"{prefix}.s": asm, "train_example.c": train_example_source(prefix),
             "Makefile": train_makefile(prefix, tc.cc, tc.cross, target.triple.split("-")[0]),
             "README.md": train_readme(prefix, lib, spec, lay.target, tc.cross),
             f"{prefix}.json": json.dumps(info, indent=2) + "\n"}  # fmt: skip
    return _write_export(out_dir, prefix, objects, c_source, header, lib, tc, extra)


def _state_tables(p: str, spec: TrainingSpec, lay: _Layout, init: list[int]) -> str:
    out = [f"static const int64_t tf_state_shape{k}[] = {{{_ints(b.value.shape, 'LL')}}};"
           for k, b in enumerate(spec.state)]  # fmt: skip
    rows = [f"    {{{c_string(b.name)}, {DType.from_numpy(b.value.dtype).onnx}, {b.value.ndim}, tf_state_shape{k}, "
            f"{b.value.size}u, {b.value.nbytes}u}}" for k, b in enumerate(spec.state)]  # fmt: skip
    out.append(f"static const {p}_tensor_info tf_state[{len(spec.state)}] = {{\n" + ",\n".join(rows) + "\n};")
    out.append(f"static const char *const tf_state_kind[] = {{{', '.join(c_string(b.kind) for b in spec.state)}}};")
    out.append(f"static const uint64_t tf_state_init[] = {{{_ints(init, 'ULL')}}};  /* offsets in the blob */")
    out.append(f"static const size_t tf_state_off[] = {{{_ints(lay.state_off)}}};  /* offsets in a session's block */")
    labels = ",\n".join(f"    {c_string(t)}" for t in spec.check_labels) or "    0"
    out.append(f"static const char *const tf_check_labels[] = {{\n{labels}\n}};")
    return "\n".join(out)


def training_source(lib: LibrarySpec, spec: TrainingSpec, lay: _Layout, t_const_offsets: list[int],
                    state_init: list[int]) -> str:  # fmt: skip
    p = lib.prefix
    t_formats, t_base, t_count = _formats(lay.tp)
    t = lay.target
    return string.Template(TRAINING_SOURCE).substitute(
        p=p, P=p.upper(), session_accessors=session_accessors(p), real=lay.real, t_n_in=max(1, len(lay.tp.inputs)),
        t_n_out=max(1, len(lay.tp.outputs)), p_n_in=max(1, len(lay.pp.inputs)),
        t_n_consts=max(1, len(t_const_offsets)), t_const_offsets=_ints(t_const_offsets, "ULL"),
        p_n_consts=max(1, len(lib.const_offsets)), t_status_offset=lay.tp.status_offset,
        t_fmts=",\n".join(f"    {c_string(f)}" for f in t_formats) or "    0",
        t_fmt_base=_ints(t_base), t_fmt_count=_ints(t_count),
        target_shape=_ints(t.shape, "LL"), target_name=c_string(t.name), target_dtype=t.dtype.onnx,
        target_rank=len(t.shape), target_numel=t.numel, target_bytes=t.numel * t.dtype.itemsize,
        state_tables=_state_tables(p, spec, lay, state_init), n_state=len(spec.state), n_check=lay.n_check,
        n_labels=len(spec.check_labels), classes=spec.classes, trained_output=c_string(spec.trained_output),
        digest=", ".join(str(b) for b in state_digest(spec)), magic=c_string(STATE_MAGIC),
        version=STATE_VERSION, header=STATE_HEADER, block_bytes=lay.block_bytes, lr_off=lay.lr_off,
        loss_off=lay.loss_off, check_off=lay.check_off, lr=repr(float(spec.lr)), steps=int(spec.steps),
        state_bytes=sum(b.value.nbytes for b in spec.state), batch=spec.batch,
        bind_static="\n".join(f"    {x}" for x in lay.t_static + lay.p_static),
        bind_train="\n".join(f"        {x}" for x in lay.t_call),
        bind_predict="\n".join(f"        {x}" for x in lay.p_call),
    )  # fmt: skip


TRAINING_DECLS = """/* ---- training (docs/C_API_TRAINING.md) ----
   A training session owns the model's state (parameters, optimizer state, batch-norm statistics), the
   learning rate and a workspace; {p}_session_create's path is a state file written by {p}_save_state, or
   NULL for the state embedded in the library (the state at export). The inputs above are the data inputs
   of one batch of {P}_BATCH_SIZE rows; the outputs are the forward pass's ({p}_predict). */
#define {P}_BATCH_SIZE {batch}
#define {P}_NUM_CLASSES {classes}  /* class-index targets (int64 in 0..{P}_NUM_CLASSES-1); 0: float targets */
#define {P}_TARGET_DTYPE {tdtype}
#define {P}_TARGET_NUMEL {tnumel}
#define {P}_NUM_STATE {n_state}
#define {P}_STATE_FORMAT_VERSION {version}
const {p}_tensor_info *{p}_target_info(void);   /* the target of one batch */
int {p}_batch_size(void);
int {p}_num_classes(void);
int {p}_num_state(void);
const {p}_tensor_info *{p}_state_info(int i);   /* state buffer i (name, dtype, shape); NULL out of range */
const char *{p}_state_kind(int i);               /* "parameter", "optimizer" or "statistic" */

/* One training step on a batch: forward, loss, backward, optimizer update, the state updated in place.
   x: {P}_NUM_INPUTS pointers to the batch's data; y: the target; *loss (may be NULL): the batch's loss
   before the update. Class indices out of range: {P}_ERROR_ARGUMENT before any code runs. A step whose
   loss or update is not finite changes nothing and returns {P}_ERROR_NOT_FINITE. */
int {p}_train_step({p}_session *session, const void *const *x, const void *y, float *loss);
/* The forward pass with the current parameters (batch norm with its running statistics). */
int {p}_predict({p}_session *session, const void *const *x, void *const *outputs);
int {p}_set_learning_rate({p}_session *session, double lr);  /* lr >= 0 and finite */
double {p}_learning_rate(const {p}_session *session);
uint64_t {p}_steps(const {p}_session *session);  /* successful steps (including those before the state's save) */
/* Copy state buffer i out of / into the session (state_info(i)->bytes bytes). */
int {p}_get_state({p}_session *session, int i, void *dst);
int {p}_set_state({p}_session *session, int i, const void *src);
/* The whole state, the learning rate and the step count in a checked file (magic, version, sizes, the
   layout's digest, a checksum), written atomically (a temporary file renamed over path). Loading refuses
   another model's (or optimizer's) file and changes nothing when it fails. */
int {p}_save_state({p}_session *session, const char *path);
int {p}_load_state({p}_session *session, const char *path);"""


def training_header(lib: LibrarySpec, spec: TrainingSpec, lay: _Layout) -> str:
    p = lib.prefix
    decls = TRAINING_DECLS.format(p=p, P=p.upper(), batch=spec.batch, classes=spec.classes,
                                  tdtype=lay.target.dtype.onnx, tnumel=lay.target.numel, n_state=len(spec.state),
                                  version=STATE_VERSION)  # fmt: skip
    text = header_text(lib, decls)
    old = ("weights_path: NULL for the weights\n   embedded in the library, else a weights file written by the "
           "export. Checks the CPU first. */")  # fmt: skip
    new = ("state_path: NULL for the state\n   embedded in the library, else a file written by "
           f"{p}_save_state. Checks the CPU first. */")  # fmt: skip
    return text.replace(old, new).replace(f"{p}_session **session, const char *weights_path",
                                          f"{p}_session **session, const char *state_path")


__all__ = ["STATE_MAGIC", "STATE_VERSION", "StateBuffer", "TrainingSpec", "export_training", "state_digest"]
