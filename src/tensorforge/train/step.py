"""``tfg.training_step``: forward, loss, backward and optimizer update compiled into one native function.

    step = tfg.training_step(model, loss="cross_entropy", optimizer=tfg.optim.SGD(lr=0.1, momentum=0.9))
    for xb, yb in batches:
        loss = step(xb, yb)          # one native call; parameters updated in place
    trained = step.export_onnx()

The step owns the parameters (the model's float initializers), the optimizer state and the batch-norm
statistics as numpy arrays; the generated code reads and updates them in place. It is compiled once per
batch shape (the model's batch dimension may be symbolic). Everything that could make native code go
wrong is checked first, in Python: data shapes and dtypes, targets, class indices in range; indices the
model itself reads (an embedding's) are checked by the code (``DataError``). A step whose loss is not
finite, or whose update would make a parameter or its optimizer state non-finite (a learning rate too
large), changes nothing (the update ops test it in native code, ``autodiff/train_graph.py``) and raises
``TrainingError``.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ..autodiff.losses import LOSSES, check_target
from ..autodiff.train_graph import Slot, TrainingGraph, build_training_graph
from ..autodiff.transform import import_with_inputs, promote
from ..codegen.targets import get_target
from ..compiler import Options, build_artifact, compile_tiered
from ..compiler.gpu import gpu_program, gpu_runner
from ..errors import InputError, TensorforgeError, TrainingError
from ..frontends.onnx import load_model
from ..ir.dtype import is_float_dtype
from ..ir.graph import Graph
from ..ir.signature import InputSpec, check_array
from ..runtime.executable import Executable
from ..runtime.jit import default_num_threads
from ..util.files import atomic_write
from ..util.forksafe import renew_in_child
from .optim import SGD, Optimizer

SERIAL_FLOPS = 20_000_000  # work per step (FLOPs) below which one thread is faster


class _Variant:
    """The step compiled for one batch shape and target kind."""

    def __init__(self, tg: TrainingGraph, prog: Executable, out_shape: tuple[int, ...]):
        self.tg = tg
        self.prog = prog
        self.out_shape = out_shape
        self.data_index = [prog.input_index[n] for n in tg.data]
        self.target_index = prog.input_index[tg.target]
        self.target_dtype = tg.graph.inputs[self.target_index].dtype.np


class TrainingStep:
    """A model's training step, compiled; call it with a batch (see the module docstring)."""

    def __init__(self, model, loss: str = "cross_entropy", optimizer: Optimizer | None = None, *,
                 params: Sequence[str] | None = None, frozen: Sequence[str] = (), output: str | None = None,
                 from_logits: bool | None = None, num_threads: int | None = None, opt_level: int = 2,
                 target: str | None = None, name: str | None = None, tiered: bool = True):  # fmt: skip
        if loss not in LOSSES:
            raise TensorforgeError(f"unknown loss {loss!r}; losses: {', '.join(sorted(LOSSES))}")
        if from_logits is not None and loss != "cross_entropy":
            raise TensorforgeError("from_logits only applies to loss='cross_entropy'")
        self.loss = loss
        self.loss_options = {"from_logits": from_logits} if loss == "cross_entropy" else {}
        self.optimizer = optimizer if optimizer is not None else SGD()
        self.output = output
        gpu = gpu_runner(target)  # cuda / cuda:N: the GPU; an NVPTX target name: the grid interpreter
        self._gpu = gpu[1] if gpu else False
        self.target = gpu[0] if gpu else get_target(target)
        if not gpu and not self.target.is_host:
            raise TensorforgeError(f"a training step runs in this process; target {self.target.name} is not the host")
        self.options = Options(opt_level=opt_level)
        self.tiered = tiered
        self._forwards: dict[int, Graph] = {}
        if isinstance(model, Graph):
            self.proto, self.source_names = None, {}
            g, initial = model, {}
            self.params = _trainable(g, params, frozen)
        else:  # parameters become inputs before import: no import-time folding can fold one away
            self.proto = load_model(model)
            dropout = [n.name or n.output[0] for n in self.proto.graph.node if n.op_type == "Dropout"]
            if dropout:
                warnings.warn(f"model '{self.proto.graph.name}': Dropout node(s) {dropout[:3]} train as the identity "
                              "(tensorforge has no random dropout mask)", stacklevel=2)  # fmt: skip
            names = _trainable_initializers(self.proto, params, frozen)
            if name is None and isinstance(model, str | os.PathLike):
                name = os.path.splitext(os.path.basename(os.fspath(model)))[0]  # as tfg.compile names it
            g, initial, self.source_names = import_with_inputs(self.proto, names, name)
            self.params = [self.source_names[n] for n in names]
        self.graph, self._initial, demoted = _demote_unused(g, self.params, initial, self._output_index(g),
                                                           params is None)  # fmt: skip
        self.params = [p for p in self.params if p not in demoted]
        if not self.params:
            raise TensorforgeError(f"model '{g.name}': no parameter affects the output being trained")
        self.name = self.graph.name
        self.inputs = [v for v in self.graph.inputs if v.name not in set(self.params)]  # the data
        self._feature_shapes = [tuple(v.shape[1:]) for v in self.inputs]
        # build the step once at a nominal batch: checks the model, loss and optimizer, and lists the slots
        plan = self._training_graph(*self._nominal())
        self.slots: list[Slot] = plan.slots
        self._arrays = {s.name: np.array(s.init, order="C", copy=True) for s in plan.slots}
        dtype = np.dtype(_named(plan.graph, "lr").dtype.np)
        self._lr = np.zeros((), dtype)
        self._loss = np.zeros((), dtype)
        kinds = {s.name: {"optimizer": "optimizer state", "statistic": "statistic"}.get(s.kind, s.kind)
                 for s in plan.slots}  # fmt: skip
        self._check_labels = [f"{kinds[g[0]]} '{g[0]}'" + (f" (or its optimizer state {', '.join(g[1:])})"
                              if len(g) > 1 else "") for g in plan.check_groups]  # fmt: skip
        self._check = np.zeros(len(plan.check_groups), dtype)  # per group of slots: NaN where not finite
        self._variants: dict[tuple, _Variant] = {}
        self._predict: dict[tuple, Executable] = {}
        self._lock = threading.Lock()
        renew_in_child(self, "_lock")
        self._num_threads = int(num_threads) if num_threads else None  # None: chosen per compiled step
        self.steps = 0

    # -- the training graph --------------------------------------------------------------------------
    def _forward(self, batch: int) -> Graph:
        """The model with its batch dim set (cached: the step's per-call checks read its output shape)."""
        g = self._forwards.get(batch)
        if g is None:
            g = self._forwards[batch] = self._specialize(batch)
        return g

    def _specialize(self, batch: int) -> Graph:
        from ..passes import specialize

        shapes = {}
        for v in self.inputs:
            rest = v.shape[1:]
            if not all(isinstance(d, int) for d in rest):
                raise TensorforgeError(f"model '{self.name}': input '{v.name}' has symbolic dims {list(v.shape)}; "
                                       "only the batch dim (the first) may be symbolic for training")  # fmt: skip
            if isinstance(v.shape[0], int) and v.shape[0] != batch:
                raise InputError(f"model '{self.name}': input '{v.name}' has a fixed batch of {v.shape[0]}, got a "
                                 f"batch of {batch} (give the model a symbolic batch dim to vary it)")  # fmt: skip
            shapes[v.name] = (batch, *rest)
        return specialize(self.graph, shapes) if not all(v.type.is_static for v in self.inputs) else self.graph

    def _output_index(self, g: Graph) -> int:
        names = list(g.output_names)
        if self.output is None:
            return 0
        if self.output not in names:
            raise TensorforgeError(f"model '{g.name}' has no output '{self.output}'; outputs: {names}")
        return names.index(self.output)

    def _output_value(self, g: Graph):
        return g.outputs[self._output_index(g)]

    def _nominal(self) -> tuple[int, np.dtype, tuple]:
        v = self.inputs[0]
        batch = v.shape[0] if isinstance(v.shape[0], int) else 2
        out = self._output_value(self._forward(batch))
        if self.loss == "cross_entropy":
            return batch, np.dtype(np.int64), (batch,)
        return batch, out.dtype.np, tuple(out.shape)

    def _training_graph(self, batch: int, target_dtype, target_shape) -> TrainingGraph:
        return build_training_graph(self._forward(batch), self.loss, self.optimizer, self.params, target_dtype,
                                    target_shape, self.output, self.loss_options, self._initial)  # fmt: skip

    def training_graph(self, batch: int, target_dtype=np.int64, target_shape: tuple | None = None) -> Graph:
        """The whole step as one graph (printable), for a batch of ``batch`` rows."""
        if target_shape is None:
            target_shape = (batch,) if np.dtype(target_dtype).kind in "iu" else self._output_shape(batch)
        return self._training_graph(batch, np.dtype(target_dtype), tuple(target_shape)).graph

    def _output_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(self._output_value(self._forward(batch)).shape)

    def _variant(self, batch: int, target_dtype: np.dtype, target_shape: tuple) -> _Variant:
        key = (batch, target_dtype.str, target_shape)
        v = self._variants.get(key)
        if v is None:
            with self._lock:
                v = self._variants.get(key)
                if v is None:
                    tg = self._training_graph(batch, target_dtype, target_shape)
                    if [s.name for s in tg.slots] != [s.name for s in self.slots]:
                        raise TensorforgeError(f"model '{self.name}': the step's state differs between batch sizes")
                    prog = self._compile(tg.graph, tg.state)
                    prog.num_threads = self._threads_for(prog)
                    for s in self.slots:
                        prog.bind_input(prog.input_index[s.name], self._arrays[s.name])
                    prog.bind_input(prog.input_index[tg.hyper[0]], self._lr)
                    prog.bind_output(0, self._loss)
                    prog.bind_output(prog.output_index[tg.check], self._check)
                    v = _Variant(tg, prog, self._output_shape(batch))
                    self._variants[key] = v
        return v

    # -- one step ------------------------------------------------------------------------------------
    def _check_data(self, x) -> list[np.ndarray]:
        """The batch's arrays, checked: dtypes, feature dims, one batch size (>= 1) shared by all inputs."""
        ins = self.inputs
        if isinstance(x, Mapping):
            missing = [v.name for v in ins if v.name not in x]
            if missing:
                raise InputError(f"model '{self.name}': missing input(s) {missing}")
            xs = [x[v.name] for v in ins]
        elif isinstance(x, tuple | list) and len(ins) > 1:
            xs = list(x)
        else:
            xs = [x]
        if len(xs) != len(ins):
            raise InputError(
                f"model '{self.name}': expected {len(ins)} input(s) {[v.name for v in ins]}, got {len(xs)}"
            )
        dims: dict[str, int] = {}
        xs = [check_array(self.name, InputSpec(v.name, v.dtype, ("batch", *f)), a, dims)
              for v, a, f in zip(ins, xs, self._feature_shapes)]  # fmt: skip
        if dims["batch"] < 1:
            raise InputError(f"model '{self.name}': input '{ins[0].name}' has a batch of 0, expected at least 1")
        return xs

    def _check_target(self, y, batch: int, out_shape: tuple) -> np.ndarray:
        if not isinstance(y, np.ndarray):
            y = np.asarray(y)
        if y.dtype.kind in "iu":
            if y.dtype not in (np.dtype(np.int64), np.dtype(np.int32)):
                y = y.astype(np.int64)
        elif is_float_dtype(y.dtype) and y.dtype != self._lr.dtype:
            raise InputError(f"model '{self.name}': the target has dtype {y.dtype}, expected {self._lr.dtype} or "
                             "integer class indices")  # fmt: skip
        out = self._output_value(self._forward(batch))
        try:
            check_target(self.loss, out, y.dtype, y.shape)
        except TensorforgeError as e:
            raise InputError(f"model '{self.name}': {e}") from None
        if y.dtype.kind in "iu":
            classes = out_shape[1]
            bad = np.flatnonzero((y < 0) | (y >= classes))
            if bad.size:
                i = int(bad[0])
                raise TrainingError(f"model '{self.name}': class index {int(y[i])} at position {i} is out of range; "
                                    f"the output '{out.name}' has {classes} classes (0..{classes - 1})")  # fmt: skip
        return np.ascontiguousarray(y)

    def _batch(self, x, y) -> tuple[_Variant, list[np.ndarray], np.ndarray]:
        """The checked batch and the step compiled for its shape."""
        xs = self._check_data(x)
        batch = xs[0].shape[0]
        y = self._check_target(y, batch, self._output_shape(batch))
        return self._variant(batch, y.dtype, tuple(y.shape)), xs, y

    def _bind(self, v: _Variant, xs: list[np.ndarray], y: np.ndarray) -> None:
        """Point the step at the batch and the current learning rate (with the lock held)."""
        for i, a in zip(v.data_index, xs):
            v.prog.bind_input(i, a)
        v.prog.bind_input(v.target_index, y)
        self._lr[...] = self.optimizer.lr

    def __call__(self, x, y) -> float:
        """Train on one batch; returns its loss (before the update)."""
        v, xs, y = self._batch(x, y)
        with self._lock:
            self._bind(v, xs, y)
            v.prog.run_bound()
            loss = float(self._loss)
        if not math.isfinite(loss):
            raise TrainingError(f"model '{self.name}': the loss is {loss} at step {self.steps + 1}; the parameters and "
                                "optimizer state were left unchanged (lower the learning rate, or check the data "
                                "for inf/nan)")  # fmt: skip
        bad = [label for label, c in zip(self._check_labels, self._check) if math.isnan(c)]
        if bad:
            raise TrainingError(f"model '{self.name}': step {self.steps + 1} would make {'; '.join(bad)} non-finite "
                                f"(the loss, {loss:.6g}, is finite); the parameters and optimizer state were left "
                                f"unchanged (lower the learning rate, {self.optimizer.lr:g})")  # fmt: skip
        self.steps += 1
        return loss

    def profile(self, x, y, repeat: int = 20) -> str:
        """A per-kernel time table of the step on this batch (it trains on the batch ``repeat`` + 2 times)."""
        from ..runtime.profile import format_profile

        v, xs, y = self._batch(x, y)
        with self._lock:
            self._bind(v, xs, y)
            rows, total = v.prog.profile_kernels(None, repeat)
            self.steps += repeat + 2
        return format_profile(rows, total, v.prog.num_threads)

    def profile_rows(self, x, y, repeat: int = 20):
        """The step's per-kernel medians on this batch as (executable, KernelTime rows, median total seconds), for
        the explorer (``TrainingStep.explore``, added by ``explore/api.py``); it trains on the batch ``repeat`` + 2
        times, like ``profile``. Waits for the optimized build first."""
        v, xs, y = self._batch(x, y)
        v.prog.wait()
        with self._lock:
            self._bind(v, xs, y)
            rows, total = v.prog.profile_kernels(None, repeat)
            self.steps += repeat + 2
        return v.prog, rows, total

    # -- using the trained model -------------------------------------------------------------------------
    def predict(self, x):
        """The model's outputs on ``x`` with the current parameters (batch norm uses running statistics)."""
        xs = self._check_data(x)
        batch = xs[0].shape[0]
        prog = self._predict.get((batch,))
        if prog is None:
            g, names = self.predict_graph(batch)
            prog = self._compile(g)
            prog.num_threads = self._threads_for(prog)
            for n in names:
                prog.bind_input(prog.input_index[n], self._arrays[n])
            self._predict[(batch,)] = prog
        outs = [np.empty(s.shape, s.dtype.np) for s in prog.outputs]
        with self._lock:
            for i, a in enumerate(xs):
                prog.bind_input(i, a)
            for i, o in enumerate(outs):
                prog.bind_output(i, o)
            prog.run_bound()
        return outs[0] if len(outs) == 1 else tuple(outs)

    def predict_graph(self, batch: int) -> tuple[Graph, list[str]]:
        """The forward pass at ``batch`` rows with the parameters and statistics as inputs (named in the list
        returned): what ``predict`` runs, batch norm in inference mode."""
        names = [s.name for s in self.slots if s.kind != "optimizer"]
        g, _ = promote(self._forward(batch), names)
        return g, names

    def export_c(self, out_dir: str | os.PathLike, name: str = "model", batch_size: int = 32,
                 target: str | None = None, cc: str | None = None) -> dict:  # fmt: skip
        """Write the step as a standalone C library for batches of ``batch_size`` rows (``<name>_train_step``,
        ``<name>_predict``, ``<name>_save_state``...; docs/C_API_TRAINING.md), its current state embedded,
        for ``target`` (host, x86_64, x86_64-avx512, aarch64). Returns the files written."""
        from .export import export_training_step

        return export_training_step(self, os.fspath(out_dir), name, batch_size, target, cc)

    def wait_compiled(self) -> None:
        """Block until every compiled step runs its optimized build (see ``tiered``)."""
        for p in [*(v.prog for v in self._variants.values()), *self._predict.values()]:
            p.wait()

    def _compile(self, g: Graph, state: dict[int, int] | None = None) -> Executable:
        """The executable of a step (or predict) graph; tiered: unoptimized code first (see ``compile_tiered``)."""
        if self._gpu is not False:  # GPU schedules, on the GPU or the grid interpreter (compiler/gpu.py)
            return gpu_program(g, self.target, self.options, self._gpu, state)
        if self.tiered:
            return compile_tiered(g, self.target, self.options, state)
        return Executable(build_artifact(g, self.target, self.options, state=state)[0])

    def _threads_for(self, prog: Executable) -> int:
        """The thread count given, else TENSORFORGE_NUM_THREADS, else one thread per SERIAL_FLOPS of work:
        a small step's parallel regions cost more in synchronization than they save."""
        if self._num_threads:
            return self._num_threads
        if os.environ.get("TENSORFORGE_NUM_THREADS"):
            return default_num_threads()
        return max(1, min(default_num_threads(), prog.program.flops // SERIAL_FLOPS))

    @property
    def num_threads(self) -> int | None:
        """Threads per step (None: chosen per compiled batch shape from its work, see ``_threads_for``)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise ValueError("num_threads must be >= 1")
        self._num_threads = int(n)
        for p in [*(v.prog for v in self._variants.values()), *self._predict.values()]:
            p.num_threads = self._num_threads

    @property
    def parameters(self) -> dict[str, np.ndarray]:
        """The current parameters (copies)."""
        return {s.name: self._arrays[s.name].copy() for s in self.slots if s.kind == "parameter"}

    # -- state -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters, optimizer state, batch-norm statistics and the step count (copies)."""
        d = {name: a.copy() for name, a in self._arrays.items()}
        d["__steps__"] = np.array(self.steps, np.int64)
        return d

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        """Restore a ``state_dict`` (checked whole before anything is written)."""
        want = set(self._arrays)
        missing, extra = sorted(want - set(d)), sorted(set(d) - want - {"__steps__"})
        if missing or extra:
            raise TensorforgeError(f"model '{self.name}': state does not match this step: missing {missing}, "
                                   f"unexpected {extra}")  # fmt: skip
        for name, a in self._arrays.items():
            b = np.asarray(d[name])
            if b.shape != a.shape or b.dtype != a.dtype:
                raise TensorforgeError(f"model '{self.name}': state '{name}' is {b.dtype}{list(b.shape)}, expected "
                                       f"{a.dtype}{list(a.shape)}")  # fmt: skip
        with self._lock:
            for name, a in self._arrays.items():
                np.copyto(a, d[name])  # in place: the compiled code holds these buffers
            self.steps = int(d.get("__steps__", self.steps))

    def save(self, path: str | os.PathLike) -> None:
        buf = io.BytesIO()
        np.savez(buf, **self.state_dict())
        atomic_write(os.fspath(path), buf.getvalue())

    def load(self, path: str | os.PathLike) -> None:
        with np.load(os.fspath(path), allow_pickle=False) as f:
            self.load_state_dict({k: f[k] for k in f.files})

    def export_onnx(self, path: str | os.PathLike | None = None):
        """The model with its trained parameters and statistics as an ONNX ModelProto (also written to
        ``path`` when given)."""
        from onnx import numpy_helper

        from ..frontends.onnx_export import graph_to_onnx

        values = {s.name: self._arrays[s.name] for s in self.slots if s.kind != "optimizer"}
        if self.proto is not None:
            import onnx

            m = onnx.ModelProto()
            m.CopyFrom(self.proto)
            for t in m.graph.initializer:
                name = self.source_names.get(t.name)
                if name in values:
                    t.CopyFrom(numpy_helper.from_array(values[name].astype(numpy_helper.to_array(t).dtype), t.name))
        else:
            m = graph_to_onnx(self.graph, values)
        if path is not None:
            atomic_write(os.fspath(path), m.SerializeToString())
        return m


def _named(g: Graph, name: str):
    return next(v for v in g.inputs if v.name == name)


def _trainable(g: Graph, params: Sequence[str] | None, frozen: Sequence[str]) -> list[str]:
    """The parameters to train: those named, or every float constant with at least one dim that is not a
    batch-norm running statistic; minus ``frozen``."""
    consts = {v.name: v for v in g.constants()}
    if params is None:
        stats = {v.id for n in g.nodes if n.op == "BatchNormalization" for v in n.inputs[3:5] if v is not None}
        params = [v.name for v in consts.values() if v.dtype.is_float and v.const.ndim >= 1 and v.id not in stats]
    unknown = [p for p in [*params, *frozen] if p not in consts]
    if unknown:
        floats = [n for n, v in consts.items() if v.dtype.is_float]
        raise TensorforgeError(f"model '{g.name}' has no parameter(s) {unknown}; its float initializers are {floats}")
    out = [p for p in params if p not in set(frozen)]
    if not out:
        raise TensorforgeError(f"model '{g.name}': nothing to train (no parameters)")
    return out


def _trainable_initializers(proto, params: Sequence[str] | None, frozen: Sequence[str]) -> list[str]:
    """ONNX initializer names to train: those named, or every float initializer with at least one dim that is
    not a batch-norm running statistic; minus ``frozen``."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16}
    inits = {t.name: t for t in proto.graph.initializer}
    if params is None:
        stats = {n.input[i] for n in proto.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)
                 if len(n.input) > i}  # fmt: skip
        params = [t.name for t in proto.graph.initializer if t.data_type in floats and len(t.dims) >= 1
                  and t.name not in stats]  # fmt: skip
    unknown = [p for p in [*params, *frozen] if p not in inits or inits[p].data_type not in floats]
    if unknown:
        names = [n for n, t in inits.items() if t.data_type in floats]
        raise TensorforgeError(f"model '{proto.graph.name}' has no float initializer(s) {unknown}; its float "
                               f"initializers are {names}")  # fmt: skip
    out = [p for p in params if p not in set(frozen)]
    if not out:
        raise TensorforgeError(f"model '{proto.graph.name}': nothing to train (no parameters)")
    return out


def _demote_unused(g: Graph, params: list[str], initial: dict, output: int, lenient: bool):
    """Parameters-as-inputs that cannot reach the trained output become constants again (when they were
    chosen by default; named ones are an error). Returns the graph, the remaining initial values and the
    names demoted."""
    from ..ir.graph import Value

    reach = {g.outputs[output].id}
    for n in reversed(g.nodes):
        if any(o.id in reach for o in n.outputs):
            reach.update(v.id for v in n.inputs if v is not None)
    unused = [v for v in g.inputs if v.name in params and v.id not in reach]
    if not unused:
        return g, initial, set()
    if not lenient:
        raise TensorforgeError(f"model '{g.name}': parameter(s) {[v.name for v in unused]} do not affect the output "
                               f"'{g.output_names[output]}'; leave them out (frozen=[...])")  # fmt: skip
    consts = {v.id: Value(v.name, const=initial[v.name]) for v in unused}
    nodes = [n.replace(inputs=tuple(consts.get(x.id, x) if x is not None else None for x in n.inputs)) for n in g.nodes]
    kept = [v for v in g.inputs if v.id not in consts]
    graph = Graph(nodes, kept, [consts.get(v.id, v) for v in g.outputs], g.name, g.output_names)
    names = {v.name for v in unused}
    return graph, {k: a for k, a in initial.items() if k not in names}, names


# (accepts(model) -> bool, TrainingStep subclass) for models that are not ONNX: registered by the frontends'
# compiler modules (compiler/tensorflow_api.py: Keras models), so train/ imports none of them
STEP_KINDS: list[tuple] = []


def training_step(model, loss: str = "cross_entropy", optimizer: Optimizer | None = None, **options) -> TrainingStep:
    """Compile ``model``'s training step (see ``TrainingStep`` for the options)."""
    for accepts, kind in STEP_KINDS:
        if accepts(model):
            return kind(model, loss, optimizer, **options)
    return TrainingStep(model, loss, optimizer, **options)
