"""Programs with state: outputs written back into their inputs' buffers (``lower_graph(state=...)``) — in
place when the producing kernel is elementwise and nothing reads the old value later, otherwise through a
copy after everything else; the results are the same either way."""

from __future__ import annotations

import numpy as np

from tensorforge.autodiff import GraphBuilder
from tensorforge.codegen.targets import get_target
from tensorforge.compiler import Options, build_artifact
from tensorforge.ir import DType, Graph
from tensorforge.ir.graph import TensorType, Value
from tensorforge.runtime.executable import Executable


def _run(build):
    b = GraphBuilder("state")
    x = Value("x", TensorType(DType.F32, (4, 4)))
    g = Value("g", TensorType(DType.F32, (4, 4)))
    outs = build(b, x, g)
    art, _, _ = build_artifact(Graph(b.nodes, [x, g], outs, "state"), get_target(None), Options(), state={0: 0})
    prog = Executable(art)
    xa = np.arange(16, dtype=np.float32).reshape(4, 4)
    x0 = xa.copy()
    prog.bind_input(0, xa)
    prog.bind_input(1, np.ones((4, 4), np.float32))
    others = [np.empty((4, 4), np.float32) for _ in outs[1:]]
    for i, o in enumerate(others, 1):
        prog.bind_output(i, o)
    prog.run_bound()
    copies = [k for k in prog.program.kernels if any(lab.startswith("state ") for lab in k.labels)]
    return x0, xa, others, copies


def test_elementwise_update_is_in_place():
    x0, x1, _, copies = _run(lambda b, x, g: [b.add(x, g)])
    np.testing.assert_array_equal(x1, x0 + 1)
    assert not copies


def test_later_reader_of_the_old_value_forces_a_copy():
    x0, x1, (y,), copies = _run(lambda b, x, g: [b.add(x, g), b.mul(x, b.scalar(2.0, x))])
    np.testing.assert_array_equal(x1, x0 + 1)
    np.testing.assert_array_equal(y, 2 * x0)  # read the old value
    assert len(copies) == 1


def test_old_value_read_through_a_view_forces_a_copy():
    x0, x1, _, copies = _run(lambda b, x, g: [b.add(x, b.transpose(x, [1, 0]))])
    np.testing.assert_array_equal(x1, x0 + x0.T)
    assert len(copies) == 1


def test_unchanged_state_costs_nothing():
    x0, x1, _, copies = _run(lambda b, x, g: [x])
    np.testing.assert_array_equal(x1, x0)
    assert not copies
