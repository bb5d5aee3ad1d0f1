"""Refactorings keep the generated code: the assembly of the built-in examples for the fixed targets
(which do not depend on the host) hashes to the values recorded in tests/golden/asm_sha256.json.

A change that means to alter the code regenerates them with ``python tools/golden_asm.py --write`` in a
commit that says why. The hashes were recorded with one llvmlite (LLVM) version; another LLVM emits other
code, so the test is skipped there (pyproject pins the version this holds for)."""

from __future__ import annotations

import hashlib
import json
import os

import llvmlite
import pytest

import tensorforge as tfg
from tensorforge import examples

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "asm_sha256.json")
with open(GOLDEN) as _f:
    _DATA = json.load(_f)


@pytest.mark.parametrize("target", ["x86_64", "x86_64-avx512"])
@pytest.mark.parametrize("model", ["mlp", "small_cnn", "resnet50", "bert_encoder"])
def test_assembly_unchanged(model, target):
    if llvmlite.__version__ != _DATA["llvmlite"]:
        pytest.skip(f"hashes recorded with llvmlite {_DATA['llvmlite']}, this is {llvmlite.__version__}")
    asm = tfg.assembly(getattr(examples, model)(), target=target)
    got = hashlib.sha256(asm.encode()).hexdigest()
    assert got == _DATA["sha256"][f"{model}/{target}"], (
        f"the {target} assembly of {model} changed; if that is intended, run tools/golden_asm.py --write and "
        "say why in the commit"
    )
