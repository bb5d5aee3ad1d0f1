"""Golden hashes of the built-in examples' assembly for the fixed targets (tests/test_golden_asm.py).

    python tools/golden_asm.py            # compare with tests/golden/asm_sha256.json
    python tools/golden_asm.py --write    # record new hashes: only in a commit that says why the code changed

The fixed targets (``x86_64``, ``x86_64-avx512``) do not depend on the host, so the hashes hold on every
machine with the same LLVM (llvmlite) version; a refactoring that must not change behaviour keeps them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "asm_sha256.json")
MODELS = ("mlp", "small_cnn", "resnet50", "bert_encoder")
TARGETS = ("x86_64", "x86_64-avx512")


def asm_hash(model: str, target: str) -> str:
    import tensorforge as tfg
    from tensorforge import examples

    return hashlib.sha256(tfg.assembly(getattr(examples, model)(), target=target).encode()).hexdigest()


def llvm_version() -> str:
    import llvmlite

    return llvmlite.__version__


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="record the current hashes")
    args = ap.parse_args()
    got = {f"{m}/{t}": asm_hash(m, t) for m in MODELS for t in TARGETS}
    if args.write:
        with open(GOLDEN, "w") as f:
            json.dump({"llvmlite": llvm_version(), "sha256": got}, f, indent=1)
            f.write("\n")
        print(f"wrote {len(got)} hashes to {os.path.normpath(GOLDEN)}")
        return 0
    with open(GOLDEN) as f:
        want = json.load(f)["sha256"]
    bad = [k for k in got if got[k] != want.get(k)]
    for k in bad:
        print(f"changed: {k}")
    print(f"{len(got) - len(bad)} of {len(got)} identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
