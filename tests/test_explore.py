"""The assembly explorer (explore/): loop analysis of listings, the report model, the page and its parts, the
compare view, the CLI command and the Python entry points. The browser checks are in test_explore_browser.py."""

from __future__ import annotations

import base64
import gzip
import os
import re

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.cli import main
from tensorforge.examples import mlp, small_cnn
from tensorforge.explore.asm import analyze, find_loops
from tensorforge.explore.compare import match_kernels
from tensorforge.explore.layout import layout
from tensorforge.explore.report import build_report, graph_nodes

X86 = """k0:
\tpushq\t%rbp
\tmovq\t%rsp, %rbp
.LBB0_1:
\tvmovups\t(%rsi), %ymm0
.LBB0_2:
\tvbroadcastss\t(%rax,%rcx,4), %ymm2
\tvfmadd231ps\t%ymm0, %ymm2, %ymm3
\tvfmadd231ps\t32(%rdx), %ymm2, %ymm4
\tvmovups\t-64(%rsp), %ymm5
\tvfmadd231ps\t%ymm5, %ymm2, %ymm6
\tvmovups\t%ymm7, 96(%rsp)
\taddq\t$4, %rcx
\tcmpq\t%r8, %rcx
\tjne\t.LBB0_2
\tvmovups\t%ymm3, (%rdi)
\tleaq\t8(%rdi), %rdi
\tdecq\t%r9
\tjne\t.LBB0_1
.LBB0_3:
\tvaddps\t%zmm1, %zmm1, %zmm1
\tjmp\t.LBB0_3
\tretq"""

A64 = """k0:
.LBB0_1:
\tldr\tq0, [x1], #16
\tld1r\t{ v1.4s }, [x2]
\tfmla\tv2.4s, v0.4s, v1.4s
\tfmla\tv3.4s, v0.4s, v1.s[1]
\tstr\tq4, [sp, #32]
\tsubs\tx3, x3, #1
\tb.ne\t.LBB0_1
\tret"""


def test_loops_hot_loop_and_summary_x86():
    lines = X86.splitlines()
    loops = find_loops(lines)
    assert [(lp.label, lp.depth, lp.inner) for lp in loops] == [
        (".LBB0_1", 1, False),
        (".LBB0_2", 2, True),
        (".LBB0_3", 1, True),
    ]
    a = analyze(X86)
    h = a.hot
    # the inner loop with FMAs wins over the innermost loop without any
    assert h.label == ".LBB0_2" and h.fmas == 3 and h.vector_bits == 256
    # loads: broadcast, folded FMA operand, stack reload; store: the spill
    assert (h.loads, h.stores, h.spill_loads, h.spill_stores) == (3, 1, 1, 1)
    assert h.loads_per_fma == pytest.approx(1.0)
    assert "3 vector FMAs of 256 bits" in h.describe() and "1 reloads" in h.describe()
    # outside the hot loop: the store of the result, and no memory access for lea
    assert a.whole.stores == 2 and a.whole.loads == 4


def test_loops_hot_loop_aarch64():
    h = analyze(A64, "aarch64").hot
    assert (h.fmas, h.vector_bits, h.loads, h.stores, h.spill_stores) == (2, 128, 2, 1, 1)


@pytest.mark.parametrize(
    "target,bits,fma", [("x86_64", 256, "vfmadd"), ("x86_64-avx512", 512, "vfmadd"), ("aarch64", 128, "fmla")]
)
def test_hot_loop_of_a_gemm_on_every_isa(target, bits, fma):
    """The micro-kernel of a GEMM is found on each ISA's listing (compiled for targets the host need not run)."""
    from tensorforge.codegen.targets import get_target
    from tensorforge.explore.asm import arch_of

    listing = tfg.assembly(mlp(batch=16, sizes=(256, 128, 10), softmax=False), target=target, kernel="Gemm")
    part = listing.split("# ---- kernel ")[1]
    h = analyze(part, arch_of(get_target(target).triple)).hot
    assert h is not None and h.fmas >= 4 and h.vector_bits == bits
    assert fma in "".join(h.kinds)
    assert h.loads_per_fma < 1.5  # register blocking: less than one and a half loads per FMA


def _peak():
    from tensorforge.runtime.peak import MachinePeak

    return MachinePeak("test", 2, 3.0, "given", 512, 100.0, 10.0, 20.0, 64)


def _report(model, **kw):
    m = tfg.compile(model, **kw)
    rows, total = m.profile(
        {m.input_names[0]: np.random.default_rng(0).standard_normal(m.inputs[0].shape).astype(np.float32)}, repeat=3
    )
    return m, build_report(m.artifact, rows, total, 2, _peak(), 3)


def test_report_ties_kernels_to_nodes_listings_and_times():
    m, r = _report(small_cnn(batch=1))
    assert [k.name for k in r.kernels] == [k.name for k in m.kernels]
    conv = r.kernels[0]
    assert {x.op for x in conv.members} == {"Conv", "Relu"}  # the fused group's members
    assert r.nodes[conv.node].op == "Fused" and conv.name in r.nodes[conv.node].kernels
    assert conv.asm.startswith(f"{conv.name}:") and f'@"{conv.name}"' in conv.llvm_ir.splitlines()[0]
    assert conv.kernel_ir and conv.analysis.hot is not None and conv.analysis.hot.fmas > 0
    assert sum(k.share for k in r.kernels) == pytest.approx(1.0, abs=0.1)  # medians of parts vs of the whole
    for k in r.kernels:  # the numbers follow from the measurement and the peak given
        assert k.seconds > 0
        assert k.pct_peak == pytest.approx(100 * k.flops / k.seconds / 1e9 / 200.0)
        assert k.pct_bw == pytest.approx(100 * k.bytes / k.seconds / 1e9 / 20.0)
    assert r.arena and all(b.first <= b.last for b in r.arena)
    assert [p.name for p in r.passes][-1] == "fuse"


def test_layout_ranks_follow_edges_and_boxes_do_not_overlap():
    g = tfg.compile(small_cnn(batch=1)).graph
    nodes = graph_nodes(g)
    boxes, w, h = layout(nodes, [v.name for v in g.inputs])
    for n in nodes:
        for s in n.inputs:
            assert boxes[s].rank < boxes[n.index].rank and boxes[s].y + boxes[s].height < boxes[n.index].y
    by_rank: dict[int, list] = {}
    for b in boxes.values():
        by_rank.setdefault(b.rank, []).append(b)
    for bs in by_rank.values():
        bs.sort(key=lambda b: b.x)
        assert all(a.x + a.width <= b.x for a, b in zip(bs, bs[1:]))
    assert all(b.x + b.width <= w and b.y + b.height <= h for b in boxes.values())


def _unpack(html: str) -> list[str]:
    return [gzip.decompress(base64.b64decode(z)).decode() for z in re.findall(r'data-z="([^"]+)"', html)]


def test_page_is_self_contained_with_one_point_and_panel_per_kernel(tmp_path):
    m = tfg.compile(small_cnn(batch=1))
    path = m.explore(str(tmp_path / "r.html"), repeat=3)
    html = open(path).read()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script src" not in html and '<link rel="stylesheet"' not in html
    names = [k.name for k in m.kernels]
    assert re.findall(r'<template id="tpl-([^"]+)">', html) == names
    assert sorted(re.findall(r'<circle class="pt[^"]*" data-kernel="([^"]+)"', html)) == sorted(names)
    assert len(re.findall(r'<g class="gnode"', html)) == len(m.graph.nodes)
    listings = _unpack(html)
    assert len(listings) == 3 * len(set(names) - set(m.artifact.aliases))
    asm = next(t for t in listings if f">{names[0]}:<" in t)
    assert 'class="l hot hot0"' in asm and "vfmadd" in asm


def test_explore_from_a_model_records_the_graph_after_each_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))
    model = small_cnn(batch=1)
    for i in range(2):  # the second report reads the listings and pass graphs the first one made
        html = open(tfg.explore(model, tmp_path / f"r{i}.html", repeat=2)).read()
        assert "fold_bn: graph diff" in html and "fuse: graph diff" in html
        assert "-1 BatchNormalization" in html  # what fold_bn changed, in op counts
        assert ("read from the cache directory" in html) == (i == 1)


def test_compare_matches_kernels_by_graph_nodes(tmp_path):
    _, a = _report(small_cnn(batch=1), opt_level=0)
    _, b = _report(small_cnn(batch=1), opt_level=2)
    groups = match_kernels(a, b)
    conv = next(g for g in groups if any("Conv" in k.name for k in g.b))
    # -O0's separate conv and relu kernels are the one fused kernel of -O2
    assert {k.name.split("_")[1] for k in conv.a} == {"Conv", "Relu"} and len(conv.b) == 1
    assert sum(len(g.a) for g in groups) == len(a.kernels) and sum(len(g.b) for g in groups) == len(b.kernels)
    path = tfg.explore(small_cnn(batch=1), tmp_path / "c.html", compare=[{"opt_level": 0}, {"opt_level": 2}], repeat=2)
    html = open(path).read()
    assert len(re.findall(r'<tr class="krow" data-kernel="g\d+"', html)) == len(groups)
    assert any("@@" in t for t in _unpack(html))  # an assembly diff


def test_training_step_explore(tmp_path):
    step = tfg.training_step(mlp(batch=8, sizes=(32, 16, 4), softmax=False), tiered=False)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 32)).astype(np.float32), rng.integers(0, 4, 8)
    path = step.explore(tmp_path / "t.html", x, y, repeat=2)
    html = open(path).read()
    assert "training step" in html and step.steps == 4
    assert len(re.findall(r"<template id=", html)) > 6  # forward, backward and update kernels


def test_cli_explore_and_its_errors(tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["explore", "cnn", "-o", str(out), "--repeat", "2"]) == 0
    assert out.stat().st_size > 10_000 and "wrote" in capsys.readouterr().out
    assert main(["explore", "cnn", "-o", str(tmp_path / "both.html"), "--compare", "-O0", "-O2", "--repeat", "2"]) == 0
    assert "k0_Conv_conv_relu" in (tmp_path / "both.html").read_text()
    capsys.readouterr()
    assert main(["explore", "cnn", "-o", str(tmp_path / "c.html"), "--compare", "-O", "2"]) == 1
    assert "--compare needs two -O levels" in capsys.readouterr().err
    assert main(["explore", "cnn", "-o", str(tmp_path)]) == 1  # a directory
    assert "is a directory" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "c.html")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "bert_encoder"])
def test_large_model_report_time_and_size(tmp_path, monkeypatch, name):
    """ResNet-50 and a BERT encoder: the report from scratch (compile with an empty cache, listings made side
    by side, profile within its time budget) in under 30 s, and again with the build and listings cached in
    under 10 s (TENSORFORGE_TIME_SLACK scales both on a machine shared with other work); the file under 10 MB."""
    import time

    from tensorforge import examples
    from tensorforge.compiler import cache
    from tensorforge.runtime.peak import machine_peak

    machine_peak()  # the machine's model, measured once per machine (not per report)
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))  # compile from scratch
    slack = float(os.environ.get("TENSORFORGE_TIME_SLACK", "1"))
    model = getattr(examples, name)(batch=1)
    took = []
    for i in range(2):
        t0 = time.perf_counter()
        path = tfg.explore(model, tmp_path / f"r{i}.html")
        took.append(time.perf_counter() - t0)
        cache.wait()  # the artifact written in the background (not part of the report's time)
        page = open(path).read()
        assert os.path.getsize(path) < 10 * 2**20
        assert ("read from the cache directory" in page) == (i == 1)  # the second report reuses the listings
    assert took[0] < 30 * slack, f"{name} from scratch: {took[0]:.1f} s"
    assert took[1] < 10 * slack, f"{name} cached: {took[1]:.1f} s"
