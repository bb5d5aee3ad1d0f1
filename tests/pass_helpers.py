"""Pass tests as "before -> expected" graph text (TVM Relax style), checked two ways: the printed result
must equal the expected text, and the graphs before and after must compute the same function (the
reference interpreter on random inputs)."""

from __future__ import annotations

import textwrap

import numpy as np

from tensorforge.ir.interp import run_graph
from tensorforge.ir.parser import parse_graph
from tensorforge.ir.verify import verify
from tensorforge.passes import PassManager


def norm(text: str) -> str:
    return "\n".join(line.rstrip() for line in textwrap.dedent(text).strip().splitlines())


def random_feeds(g, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in g.inputs:
        shape = [int(d) for d in v.shape]
        if v.dtype.is_float:
            feeds[v.name] = rng.uniform(-2, 2, shape).astype(v.dtype.np)
        else:
            feeds[v.name] = rng.integers(-3, 4, shape).astype(v.dtype.np)
    return feeds


def run_passes(passes, before: str, consts=None, options=None):
    g = parse_graph(before, consts)
    verify(g)
    pm = PassManager(list(passes) if not isinstance(passes, str) else [passes], verify=True, options=options or {})
    return g, pm.run(g), pm


def check_pass(passes, before: str, expected: str, consts=None, rtol=1e-5, atol=1e-5, options=None):
    """Run ``passes`` on ``before``; the result must print as ``expected`` and compute what ``before`` does."""
    g, out, pm = run_passes(passes, before, consts, options)
    got = norm(str(out))
    want = norm(str(parse_graph(expected, consts)))
    assert got == want, f"\n--- got ---\n{got}\n--- expected ---\n{want}"
    if all(v.type.is_static for v in g.inputs):
        feeds = random_feeds(g)
        for a, b in zip(run_graph(g, feeds), run_graph(out, feeds)):
            np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)
    return out, pm
