"""ONNX's node conformance tests of the CI subset (``conformance_subset.txt``) compiled for an NVPTX target and run
on the grid interpreter: every kernel GPU-mapped, every block and thread executed, compared with ONNX's expected
outputs at the test's own tolerance. Ops the GPU path does not compile are skipped with the reason (dynamic
shapes, control flow and data-dependent ops run on the CPU only; no libm trigonometry in PTX)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from tensorforge.compiler.gpu import simulate
from tensorforge.errors import CompileError, UnsupportedError

with open(os.path.join(os.path.dirname(__file__), "conformance_subset.txt")) as _f:
    SUBSET = sorted(line.strip().removesuffix("_cpu") for line in _f if line.strip() and not line.startswith("#"))


def _cases() -> dict:
    from onnx.backend.test.case import node

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return {c.name: c for c in node.collect_testcases("")}


CASES = _cases()
NAMES = [n for n in SUBSET if n in CASES]


def _array(x):
    return numpy_helper.to_array(x) if isinstance(x, TensorProto) else np.asarray(x)


@pytest.mark.parametrize("name", NAMES)
def test_node_on_grid_interpreter(name):
    case = CASES[name]
    ins, outs = case.data_sets[0]
    try:
        sim = simulate(case.model)
    except UnsupportedError as e:
        pytest.skip(f"not compiled for GPUs: {str(e).splitlines()[0][:150]}")
    except CompileError as e:
        if "nvptx" not in str(e):
            raise
        pytest.skip(f"no PTX for it: {str(e)[:150]}")
    got = sim.call(*[_array(x) for x in ins])
    assert len(got) == len(outs)
    for g, o in zip(got, outs):
        o = _array(o)
        assert g.shape == o.shape, (g.shape, o.shape)
        if o.dtype.kind in "fc":
            np.testing.assert_allclose(g, o, rtol=case.rtol, atol=case.atol, equal_nan=True)
        else:
            np.testing.assert_array_equal(g, o)


def test_most_of_the_subset_runs():
    """The GPU path is not a corner: most operators of the CI subset compile for it."""
    assert len(NAMES) > 150
