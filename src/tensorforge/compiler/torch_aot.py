"""``torch.compile(model, backend="tensorforge")``: inference and training through AOTAutograd.

    fast = torch.compile(model, backend="tensorforge")    # or backend=tfg.torch_backend
    loss = F.cross_entropy(fast(x), y); loss.backward(); opt.step()
    print(tfg.torch_report())                              # what ran where, and why

Dynamo captures the model's Python into FX graphs (one per region between graph breaks; under DDP one per
gradient bucket); AOTAutograd (``aot_autograd`` with ``core_aten_decompositions``) turns each into a
forward and a backward graph of core-ATen ops when gradients are needed, else one inference graph; each is
handed to a ``FxRunner``. The forward returns what the backward needs (activations, batch statistics) and
the new running statistics of batch norm, which AOTAutograd writes back into the buffers.

A ``FxRunner`` compiles its graph per input signature on first use (``frontends/torch_fx.py``: every
SymInt of a dynamic shape specialized to the call's value, so torch's recompiles with symbolic sizes
become one native program per size seen) and runs it with one native call: tensors go in and out as numpy
views of the same memory (no copy for contiguous CPU tensors). A graph with random ops (dropout in
training) gets one more input, a seed drawn from PyTorch's default generator per call (``_draw_seed``).
When a graph cannot be converted, the nodes at fault run eagerly and the rest is compiled: the graph is
partitioned around them (torch.fx's
``CapabilityBasedPartitioner``) and each supported part gets a runner of its own, which can split again.

Inference graphs take the model's parameters and buffers as inputs (dynamo lifts them); they are
compiled as constants (folded, pre-packed) instead, behind a guard that checks, per call, that each is
the same tensor at the same version and address; an in-place update (an optimizer step,
``load_state_dict``) recompiles, and after ``MAX_REFREEZE`` of those the parameters stay inputs. Writes
through ``.data`` are invisible to PyTorch's version counter, and so to the guard.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import operator
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import TensorforgeError
from ..frontends.torch import import_torch

MAX_REFREEZE = 2  # recompiles for changed frozen parameters before they become inputs
MAX_SPLITS = 32  # nested partitions before a graph runs wholly eagerly


# -------------------------------------------------------------------------------------------------
# what ran where
# -------------------------------------------------------------------------------------------------
@dataclass
class GraphRecord:
    name: str
    kind: str  # forward, backward, inference, part
    nodes: int
    where: str = "pending"  # tensorforge, eager, split
    why: str = ""
    compiles: int = 0
    compile_seconds: float = 0.0
    calls: int = 0
    frozen: int = 0
    eager_ops: dict[str, int] = field(default_factory=dict)
    parent: str = ""


class TorchReport:
    """The graphs ``torch.compile`` gave tensorforge in this process: per graph its kind, node count,
    where it ran (tensorforge, eager, or split into compiled parts and eager nodes), why, the ops that ran
    eagerly, compiles, calls and frozen parameters."""

    def __init__(self, records: list[GraphRecord]):
        self.graphs = list(records)

    def eager_ops(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.graphs:
            for k, v in r.eager_ops.items():
                out[k] = out.get(k, 0) + v
        return out

    def __str__(self) -> str:
        if not self.graphs:
            return "tensorforge torch.compile report: no graphs compiled yet"
        rows = [f"{'graph':<14} {'kind':<10} {'nodes':>5}  {'ran on':<11} {'compiles':>8} {'calls':>6}  why"]
        for r in self.graphs:
            name = ("  " + r.name) if r.parent else r.name
            why = r.why
            if r.eager_ops:
                why += (" " if why else "") + "eager: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.eager_ops.items()))
            if r.frozen:
                why += (" " if why else "") + f"({r.frozen} parameters frozen as constants)"
            rows.append(f"{name:<14} {r.kind:<10} {r.nodes:>5}  {r.where:<11} {r.compiles:>8} {r.calls:>6}  {why}")
        return "\n".join(rows)

    __repr__ = __str__


_RECORDS: list[GraphRecord] = []
_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


def _record(kind: str, nodes: int, parent: str = "") -> GraphRecord:
    with _LOCK:
        k = _COUNTS.get(kind, 0)
        _COUNTS[kind] = k + 1
        r = GraphRecord(f"{kind}{k}", kind, nodes, parent=parent)
        _RECORDS.append(r)
    return r


def torch_report(clear: bool = False) -> TorchReport:
    """What ran where: every graph ``torch.compile(backend="tensorforge")`` handed over in this process
    (``clear=True`` starts a new list after returning this one)."""
    with _LOCK:
        rep = TorchReport(_RECORDS)
        if clear:
            _RECORDS.clear()
            _COUNTS.clear()
    return rep


# -------------------------------------------------------------------------------------------------
# the border
# -------------------------------------------------------------------------------------------------
def _as_numpy(t, torch) -> np.ndarray:
    """A CPU tensor as a numpy array over the same memory (a copy only when it is not contiguous)."""
    if t.requires_grad:
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _from_numpy(a: np.ndarray, torch):
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def _draw_seed(torch) -> np.ndarray:
    """A seed for a graph's random ops (dropout), drawn from PyTorch's default CPU generator at every call, as
    inductor draws its Philox seeds: ``torch.manual_seed`` reproduces the masks, and calls never share one."""
    return np.array(torch.randint(-(2**63), 2**63 - 1, (), dtype=torch.int64).item(), np.int64)


def _signature(args) -> tuple:
    return tuple((a.dtype, tuple(a.shape)) if hasattr(a, "dtype") and hasattr(a, "shape") else a for a in args)


@dataclass
class _Compiled:
    model: object  # CompiledModel, or None when nothing is computed
    plan: list
    positions: list[int]


class FxRunner:
    """One FX graph of core-ATen ops, run by tensorforge per input signature (see the module docstring).
    ``frozen``: positions of inputs (parameters, buffers) compiled as constants behind a guard."""

    def __init__(self, gm, kind: str, frozen: list[int] | None = None, parent: str = "", depth: int = 0):
        self.torch = import_torch()
        self.gm = gm
        self.kind = kind
        self.depth = depth
        nodes = sum(1 for n in gm.graph.nodes if n.op == "call_function")
        self.record = _record(kind, nodes, parent)
        self.frozen = list(frozen or [])
        self._guard: list[tuple[int, object, int, int]] = []  # (position, tensor, version, data_ptr)
        self._refreezes = 0
        self._compiled: dict[tuple, _Compiled] = {}
        self._eager = None  # the graph run by PyTorch (whole, or partitioned around unsupported nodes)
        self._bad: set[str] = set()
        self._tuple_out = _returns_tuple(gm)
        self._lock = threading.Lock()

    # -- calling ------------------------------------------------------------------------------------
    def boxed(self):
        """The callable AOTAutograd expects: takes the argument list (and may clear it)."""

        def run(args):
            xs = list(args)
            args.clear()
            return self(*xs)

        run._boxed_call = True
        return run

    def __call__(self, *args):
        self.record.calls += 1
        if self._eager is not None:
            return self._eager(*args)
        if self._guard and not self._guard_ok(args):
            self._refreeze()
        key = _signature(args)
        c = self._compiled.get(key)
        if c is None:
            with self._lock:
                c = self._compiled.get(key) or self._build(args, key)
            if c is None:
                return self._eager(*args)
        torch = self.torch
        outs = c.model.call([_as_numpy(args[p], torch) if p >= 0 else _draw_seed(torch) for p in c.positions]
                            ) if c.model is not None else []  # fmt: skip
        res = []
        for how, x in c.plan:
            if how == "graph":
                res.append(_from_numpy(outs[x], torch))
            elif how == "input":
                res.append(args[x])
            elif how == "const":
                res.append(_from_numpy(np.array(x, copy=True), torch))
            else:
                res.append(x)
        return res if self._tuple_out else res[0]

    def _guard_ok(self, args) -> bool:
        for pos, t, ver, ptr in self._guard:
            a = args[pos]
            if a is not t or a._version != ver or a.data_ptr() != ptr:
                return False
        return True

    def _refreeze(self) -> None:
        """A frozen parameter changed: compile again with its new value, or stop freezing."""
        self._compiled.clear()
        self._guard = []
        self._refreezes += 1
        if self._refreezes > MAX_REFREEZE:
            self.frozen = []
            self.record.frozen = 0
            self.record.why = f"parameters changed {self._refreezes} times: passed as inputs, not frozen"

    # -- compiling ----------------------------------------------------------------------------------
    def _build(self, args, key) -> _Compiled | None:
        from ..frontends.torch_export import op_name
        from ..frontends.torch_fx import FxImporter, trace_values
        from .api import compile as tf_compile

        torch = self.torch
        t0 = time.perf_counter()
        importer = None
        try:
            consts = {}
            if self.frozen and not self._guard:
                self._guard = [(p, args[p], args[p]._version, args[p].data_ptr()) for p in self.frozen]
            for p in self.frozen:
                consts[p] = np.array(_as_numpy(args[p], torch), copy=True)
            vals = trace_values(self.gm, args)
            importer = FxImporter(self.gm, vals, self.record.name, consts)
            bad = importer.unsupported_nodes()
            if bad:
                raise _Unsupported([n.name for n in bad], sorted({op_name(n.target) for n in bad}))
            graph, plan, positions = importer.run()
            model = tf_compile(graph, name=self.record.name) if graph is not None else None
        except _Unsupported as e:
            return self._split(e.nodes, f"unsupported ATen op(s) {', '.join(e.ops)}")
        except TensorforgeError as e:
            failed = getattr(importer, "failed", None)
            why = str(e).splitlines()[0]
            if failed is not None:
                return self._split([failed.name], f"{op_name(failed.target)} not convertible: {why}")
            return self._fall_back(f"{type(e).__name__}: {why}")
        except Exception as e:  # noqa: BLE001  (torch tracing errors: run what PyTorch can run)
            return self._fall_back(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if not hasattr(model, "call") and model is not None:  # a DynamicModel: shapes are static here
            return self._fall_back("the graph did not compile to one static program")
        self.record.where = "tensorforge"
        self.record.compiles += 1
        self.record.compile_seconds += time.perf_counter() - t0
        self.record.frozen = len(self.frozen)
        c = _Compiled(model, plan.items, positions)
        self._compiled[key] = c
        return c

    def _fall_back(self, why: str) -> None:
        self.record.where = "eager"
        self.record.why = why
        self.record.eager_ops = _op_counts(self.gm.graph.nodes)
        self._eager = self.gm
        return None

    def _split(self, names: list[str], why: str) -> None:
        """Run the nodes ``names`` (and any found later) eagerly, the rest as compiled parts."""
        from ..frontends.torch_export import op_name

        self._bad.update(names)
        if self.depth >= MAX_SPLITS:
            return self._fall_back(f"{why}; too many nested splits")
        try:
            split, parts = _partition(self.gm, self._bad)
        except Exception as e:  # noqa: BLE001
            return self._fall_back(f"{why}; partitioning failed: {type(e).__name__}: {e}")
        if not parts:
            return self._fall_back(why)
        for pname in parts:
            sub = getattr(split, pname)
            runner = FxRunner(sub, "part", None, self.record.name, self.depth + 1)
            setattr(split, pname, _Part(runner))
        self.record.where = "split"
        self.record.why = why
        eager = [n for n in split.graph.nodes if n.op == "call_function" and op_name(n.target) != "operator.getitem"]
        self.record.eager_ops = _op_counts(eager)
        self._eager = split
        return None


class _Unsupported(Exception):
    def __init__(self, nodes, ops):
        super().__init__(", ".join(ops))
        self.nodes, self.ops = nodes, ops


def _op_counts(nodes) -> dict[str, int]:
    from ..frontends.torch_export import op_name

    out: dict[str, int] = {}
    for n in nodes:
        if n.op == "call_function" and n.target is not operator.getitem:
            k = op_name(n.target)
            out[k] = out.get(k, 0) + 1
    return out


def _returns_tuple(gm) -> bool:
    for n in gm.graph.nodes:
        if n.op == "output":
            return isinstance(n.args[0], list | tuple)
    return False


@functools.cache
def _part_module():
    torch = import_torch()

    class Part(torch.nn.Module):
        """A compiled part of a partitioned graph, called by the eager remainder."""

        def __init__(self, runner):
            super().__init__()
            self.runner = runner

        def forward(self, *args):
            return self.runner(*args)

    return Part


def _Part(runner):  # noqa: N802  (builds a module)
    return _part_module()(runner)


_COMPUTE_FREE = ["operator.getitem", "aten.view.default", "aten.permute.default", "aten.alias.default",
                 "aten.unsqueeze.default", "aten.squeeze.dims", "aten.expand.default", "aten.clone.default",
                 "aten._unsafe_view.default"]  # fmt: skip


def _partition(gm, bad: set[str]):
    """``gm`` with its convertible regions fused into submodules: the graph (a copy) and their names."""
    torch = import_torch()
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
    from torch.fx.passes.operator_support import OperatorSupportBase

    from ..frontends.torch_export import ATEN, op_name

    class Support(OperatorSupportBase):
        def is_node_supported(self, submodules, node) -> bool:
            return node.op == "call_function" and op_name(node.target) in ATEN and node.name not in bad

    g = torch.fx.GraphModule(gm, copy.deepcopy(gm.graph))
    part = CapabilityBasedPartitioner(g, Support(), allows_single_node_partition=True,
                                      non_compute_ops=_COMPUTE_FREE)  # fmt: skip
    partitions = part.propose_partitions()
    fused = part.fuse_partitions(partitions)
    names = [n.target for n in fused.graph.nodes if n.op == "call_module"]
    return fused, names


# -------------------------------------------------------------------------------------------------
# the backend
# -------------------------------------------------------------------------------------------------
def _static_inputs() -> list[int]:
    """Positions of the parameters and buffers among an inference graph's inputs (AOTAutograd's
    ``static_input_indices``: dynamo lifts them to inputs)."""
    torch = import_torch()
    ctx = torch._guards.TracingContext.try_get()
    meta = getattr(ctx, "fw_metadata", None) if ctx is not None else None
    return list(getattr(meta, "static_input_indices", None) or [])


def _forward(gm, example_inputs):
    return FxRunner(gm, "forward").boxed()


def _backward(gm, example_inputs):
    return FxRunner(gm, "backward").boxed()


def _inference(gm, example_inputs):
    torch = import_torch()
    n = len(example_inputs)
    static = [i for i in _static_inputs() if i < n and isinstance(example_inputs[i], torch.Tensor)]
    return FxRunner(gm, "inference", frozen=static).boxed()


@contextlib.contextmanager
def attention_as_math():
    """While AOTAutograd traces: ``scaled_dot_product_attention`` in its math form, so that autograd
    differentiates matmuls and a softmax. (With the fused CPU kernel, AOTAutograd keeps the fused backward
    op, and core ATen's decomposition of the forward hands it the probabilities where it expects the
    log-sum-exp: right for our converter, wrong for PyTorch's kernel if that part ran eagerly.)"""
    import_torch()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


@functools.cache
def aot_backend():
    """The dynamo backend: AOTAutograd with core-ATen decompositions, every graph run by a ``FxRunner``."""
    import_torch()
    from torch._decomp import core_aten_decompositions
    from torch._dynamo.backends.common import aot_autograd

    return aot_autograd(fw_compiler=_forward, bw_compiler=_backward, inference_compiler=_inference,
                        decompositions=core_aten_decompositions())  # fmt: skip
