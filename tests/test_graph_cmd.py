"""`tensorforge graph`: the optimized graph as Graphviz DOT, rendered when Graphviz is installed."""

from __future__ import annotations

import shutil

import pytest

from tensorforge.cli import main


def test_graph_writes_dot_with_fused_groups_as_clusters(tmp_path, capsys):
    out = tmp_path / "g.dot"
    assert main(["graph", "cnn", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith('digraph "small_cnn"')
    assert 'subgraph "cluster_0"' in text and "fused kernel: Conv + Relu" in text
    assert '"p" -> "f" [label=" f32[1,8,8,8]"]' in text  # edges carry tensor types
    assert "render it with: dot -Tsvg" in capsys.readouterr().out


def test_graph_at_O0_has_no_clusters(tmp_path):
    out = tmp_path / "g.dot"
    assert main(["graph", "cnn", "-O0", "-o", str(out)]) == 0
    text = out.read_text()
    assert "cluster" not in text and "BatchNormalization" in text


def test_graph_without_graphviz_fails_clearly_and_keeps_the_dot_source(tmp_path, monkeypatch, capsys):
    import tensorforge.ir.dot as dot

    monkeypatch.setattr(dot, "dot_program", lambda: None)
    out = tmp_path / "g.svg"
    assert main(["graph", "cnn", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "Graphviz's 'dot' program is not installed" in err and "g.dot" in err
    assert (tmp_path / "g.dot").exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_renders_svg_with_graphviz(tmp_path):
    out = tmp_path / "g.svg"
    assert main(["graph", "mlp", "-o", str(out)]) == 0
    svg = out.read_text()
    assert "<svg" in svg and "Gemm" in svg


def test_graph_rejects_unknown_formats(tmp_path, capsys):
    assert main(["graph", "cnn", "-o", str(tmp_path / "g.txt")]) == 1
    assert "use a .dot, .svg, .png or .pdf" in capsys.readouterr().err


def test_compile_writes_the_graph_source(tmp_path):
    assert main(["compile", "cnn", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")
