"""Autotuning (``compiler/tuning.py``): the candidates are real plans that compute the right thing, the
database is per CPU, and compile uses what was recorded for its CPU only. Speed itself is measured in
benchmarks/, never asserted here."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensorforge as tfg
from helpers import one_node_model, rand
from tensorforge.cli import main
from tensorforge.codegen.targets import host
from tensorforge.compiler import Options, build_artifact
from tensorforge.compiler.tuning import (
    TuningError,
    candidates,
    cpu_key,
    gemm_signatures,
    load_db,
    save_db,
    tuned_plans,
)
from tensorforge.examples import mlp


def test_signatures_name_every_gemm_of_a_model():
    sigs = gemm_signatures(mlp(batch=4), host())
    assert sorted(sigs) == ["matmul/f32/1x4x10x256/Bconst", "matmul/f32/1x4x256x784/Bconst"]
    info = sigs["matmul/f32/1x4x256x784/Bconst"]
    assert (info["M"], info["N"], info["K"], info["const_b"]) == (4, 256, 784, True)


@pytest.mark.parametrize("const_b", [True, False], ids=["constB", "runtimeB"])
def test_every_candidate_computes_the_product(const_b, rng):
    """Each plan the tuner may pick is checked against numpy here (the tuner also compares them at run time)."""
    a, b = rand(rng, (37, 96)), rand(rng, (96, 50))
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    model = one_node_model("MatMul", feeds, consts={"b": b} if const_b else None)
    ((sig, info),) = gemm_signatures(model, host()).items()
    cands = candidates(info, host())
    assert cands[0] == {} and len(cands) >= 4
    for c in cands:
        art, _, _ = build_artifact(model, host(), Options(lowering={"gemm_tuned": {sig: c}} if c else {}))
        got = tfg.CompiledModel(art)(*feeds.values())
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3, err_msg=str(c))


def test_compile_uses_the_plans_of_its_own_cpu(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache
    model = mlp(batch=4, seed=3)
    x = rand(rng, (4, 784))
    default = tfg.compile(model)
    path = str(tmp_path / "db.json")
    sig = "matmul/f32/1x4x256x784/Bconst"
    plan = {"MR": 1, "nv": 2, "KC": 200}
    save_db({"version": 1, "cpus": {cpu_key(): {sig: {"plan": plan}}, "another cpu": {sig: {"plan": {"MR": 3}}}}},
            path)  # fmt: skip
    assert tuned_plans(path, host()) == {sig: plan}
    tuned = tfg.compile(model, tuning_db=path)
    assert not tuned.cache_hit and tuned.artifact.llvm_ir != default.artifact.llvm_ir
    np.testing.assert_allclose(tuned(x), default(x), rtol=1e-5, atol=1e-6)
    # the same database for another CPU only: the default code (a cache hit)
    save_db({"version": 1, "cpus": {"another cpu": {sig: {"plan": plan}}}}, path)
    assert tfg.compile(model, tuning_db=path).cache_hit


def test_bad_databases_are_clear_errors(tmp_path):
    with pytest.raises(TuningError, match="does not exist"):
        tfg.compile(mlp(), tuning_db=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TuningError, match="cannot be read"):
        load_db(str(bad))
    bad.write_text(json.dumps({"version": 99, "cpus": {}}))
    with pytest.raises(TuningError, match="not a version-1"):
        tfg.compile(mlp(), tuning_db=str(bad))


def test_tune_records_the_best_plan_and_compile_uses_it(tmp_path, monkeypatch, capsys, rng):
    monkeypatch.setenv("TENSORFORGE_CACHE_DIR", str(tmp_path / "cache"))
    path = str(tmp_path / "db.json")
    assert main(["tune", "mlp", "--budget", "3", "--tuning-db", path, "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "matmul/f32/1x1x256x784/Bconst" in out and "speedup" in out
    recs = load_db(path)["cpus"][cpu_key()]
    assert set(recs) == {"matmul/f32/1x1x10x256/Bconst", "matmul/f32/1x1x256x784/Bconst"}
    for rec in recs.values():
        assert rec["best_seconds"] <= rec["default_seconds"] and rec["candidates"] >= 2
    x = rand(rng, (1, 784))
    np.testing.assert_allclose(tfg.compile(mlp(), tuning_db=path)(x), tfg.compile(mlp())(x), rtol=1e-5, atol=1e-6)
