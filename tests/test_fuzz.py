"""Fuzzing (tests/fuzzgen.py): random valid models against ONNX's reference evaluator at -O0 and -O2,
mutated models that must fail with a clear ``TensorforgeError`` or compute what a reference computes,
and damaged artifacts that must be refused or load unchanged.

CI runs a fixed sample (``derandomize``: the same seeds every run, so a red CI is reproducible). The
``fuzz``-marked variants explore new seeds for longer (``pytest -m fuzz``); ``make fuzz`` runs the same
cases for ten minutes, each batch in its own process so that crashes and hangs are caught too
(tools/fuzz.py)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzgen import run_case

SEEDS = st.integers(0, 2**31 - 1)
CI = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}
LONG = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


@settings(max_examples=25, **CI)
@given(seed=SEEDS)
def test_valid_models_match_the_reference(seed):
    run_case("valid", seed)


@settings(max_examples=80, **CI)
@given(seed=SEEDS)
def test_mutated_models_fail_clearly_or_compute_right(seed):
    run_case("mutant", seed)


@settings(max_examples=15, **CI)
@given(seed=SEEDS)
def test_damaged_artifacts_are_refused_or_unchanged(seed):
    run_case("artifact", seed)


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.parametrize("kind", ["valid", "mutant", "artifact"])
def test_fuzz_long(kind):
    @settings(max_examples=1000, **LONG)
    @given(seed=SEEDS)
    def case(seed):
        run_case(kind, seed)

    case()
