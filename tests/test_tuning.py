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
    load_db,
    save_db,
    signatures,
    tuned_plans,
)
from tensorforge.examples import mlp, small_cnn


def test_signatures_name_every_gemm_and_conv_of_a_model():
    sigs = signatures(mlp(batch=4), host())
    assert sorted(sigs) == ["matmul/f32/1x4x10x256/Bconst", "matmul/f32/1x4x256x784/Bconst"]
    convs = [s for s in signatures(small_cnn(batch=2), host()) if s.startswith("conv/")]
    assert convs and all("/x2x" in s for s in convs)
    info = sigs["matmul/f32/1x4x256x784/Bconst"]
    assert (info["M"], info["N"], info["K"], info["const_b"]) == (4, 256, 784, True)


@pytest.mark.parametrize("const_b", [True, False], ids=["constB", "runtimeB"])
def test_every_candidate_computes_the_product(const_b, rng):
    """Each plan the tuner may pick is checked against numpy here (the tuner also compares them at run time)."""
    a, b = rand(rng, (37, 96)), rand(rng, (96, 50))
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    model = one_node_model("MatMul", feeds, consts={"b": b} if const_b else None)
    ((sig, info),) = signatures(model, host()).items()
    cands = candidates(sig, info, host())
    assert cands[0] == {} and len(cands) >= 4
    for c in cands:
        art, _, _ = build_artifact(model, host(), Options(lowering={"gemm_tuned": {sig: c}} if c else {}))
        got = tfg.CompiledModel(art)(*feeds.values())
        np.testing.assert_allclose(got, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3, err_msg=str(c))


@pytest.mark.parametrize("case", ["3x3", "1x1_s2", "grouped"])
def test_every_conv_candidate_computes_the_layer(case, rng):
    xs, ws, attrs = {"3x3": ((1, 8, 12, 10), (24, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
                     "1x1_s2": ((2, 16, 9, 9), (20, 16, 1, 1), {"strides": [2, 2]}),
                     "grouped": ((1, 12, 7, 7), (18, 4, 3, 3), {"group": 3, "pads": [0, 1, 1, 0]})}[case]  # fmt: skip
    x, w = rand(rng, xs), rand(rng, ws)
    model = one_node_model("Conv", {"x": x}, attrs, consts={"w": w})
    ((sig, info),) = signatures(model, host()).items()
    assert sig.startswith("conv/f32/")
    cands = candidates(sig, info, host())
    assert cands[0] == {} and {"pix_vec": True} in cands and {"pix_vec": False} in cands
    want = tfg.compile(model)(x)
    for c in cands[1:]:
        art, _, _ = build_artifact(model, host(), Options(lowering={"conv_tuned": {sig: c}}))
        np.testing.assert_allclose(tfg.CompiledModel(art)(x), want, rtol=1e-4, atol=1e-4, err_msg=str(c))


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
