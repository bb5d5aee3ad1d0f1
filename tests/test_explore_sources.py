"""Source locations in the explorer: a model imported through torch.export keeps each FX node's source line on
the IR nodes it becomes (``Node.source``), through the passes, fusion, the graph printer and parser (the
artifact's graph text) and the compile cache, and the kernel panel shows it next to the node."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.explore.api import report_of
from tensorforge.explore.page import render
from tensorforge.ir.dtype import DType
from tensorforge.ir.graph import Node, TensorType, Value
from tensorforge.ir.parser import parse_graph
from tensorforge.ir.printer import format_node

torch = pytest.importorskip("torch")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))  # LINE_CONV
        y = y.mean(dim=(2, 3))
        return self.fc(y)  # LINE_FC


def _line(tag: str) -> int:
    src, start = inspect.getsourcelines(Net.forward)
    return start + next(i for i, s in enumerate(src) if tag in s)


def test_node_source_round_trips_through_printer_and_parser():
    f32 = DType.parse("f32")
    x, y = Value("x", TensorType(f32, (2,))), Value("y", TensorType(f32, (2,)))
    n = Node("Relu", (x,), (y,), {}, "relu_1", source="/a/b.py:12 in forward: y = torch.relu(x  @ 2)")
    line = format_node(n)
    assert line.endswith("# relu_1  @ /a/b.py:12 in forward: y = torch.relu(x @ 2)")  # one line, single spaces
    text = f"graph g(%x: f32[2]) -> (%y: f32[2]) {{\n{line}\n}}"
    g = parse_graph(text)
    assert (g.nodes[0].name, g.nodes[0].source) == ("relu_1", "/a/b.py:12 in forward: y = torch.relu(x @ 2)")
    assert str(g) == str(parse_graph(str(g)))
    plain = parse_graph("graph g(%x: f32[2]) -> (%y: f32[2]) {\n  %y: f32[2] = Relu(%x)  # relu_1\n}")
    assert (plain.nodes[0].name, plain.nodes[0].source) == ("relu_1", "")


def test_torch_source_lines_reach_the_kernel_panel(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))
    net = Net().eval()
    x = torch.randn(1, 3, 16, 16)
    m = tfg.from_torch(net, (x,))
    conv_at, fc_at = f"{__file__}:{_line('LINE_CONV')}", f"{__file__}:{_line('LINE_FC')}"
    tfg.compiler.cache.wait()
    m2 = tfg.from_torch(net, (x,))  # from the compile cache: the graph is parsed back from its text
    assert m2.cache_hit
    for mm in (m, m2):
        srcs = {b.name: b.source for n in mm.artifact.graph.nodes for b in (n.attrs.get("body") or (n,))}
        assert any(s.startswith(conv_at) and "in module 'conv'" in s for s in srcs.values()), srcs
        assert any(s.startswith(fc_at) for s in srcs.values()), srcs
    r = report_of(m2, repeat=2)
    conv = next(k for k in r.kernels if any(mb.op == "Conv" for mb in k.members))
    assert any(mb.source.startswith(conv_at) for mb in conv.members)
    page = render(r)
    assert '<span class="src"' in page and f"@ {conv_at}" in page
    np.testing.assert_allclose(m2.run({m2.input_names[0]: x.numpy()})[m2.output_names[0]],
                               net(x).detach().numpy(), rtol=1e-4, atol=1e-5)  # fmt: skip
