"""Fuzz tensorforge for a while (`make fuzz`): random valid models against ONNX's reference evaluator,
mutated models that must fail clearly or compute the right thing, damaged artifacts (tests/fuzzgen.py).

    python tools/fuzz.py --minutes 10              # what `make fuzz` runs
    python tools/fuzz.py --kind mutant --seed 48   # one case, in this process, with its traceback

Cases run in batches, each batch in its own Python process with a time limit and a memory limit, so a
crash (a signal), a hang or a memory blow-up is a finding like a wrong answer: the batch is then run again
one case per process to name the seed. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests")
sys.path.insert(0, TESTS)

from fuzzgen import KINDS, Finding, run_case  # noqa: E402

CASE_SECONDS = 60  # a case slower than this is a hang
MEMORY_BYTES = 12 << 30  # address space of a worker: a memory bomb fails here, not in the machine

_WORKER = """
import json, sys
sys.path.insert(0, {tests!r})
from fuzzgen import Finding, run_case
for kind, seed in json.loads(sys.argv[1]):
    try:
        msg = run_case(kind, seed)
        print(json.dumps(["ok", kind, seed, msg]), flush=True)
    except Finding as e:
        print(json.dumps(["finding", kind, seed, str(e)]), flush=True)
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))


def run_batch(cases: list[tuple[str, int]], env: dict) -> tuple[list[list], list[tuple[str, int, str]]]:
    """Run ``cases`` in one worker; returns (results, cases lost to a crash or hang with why)."""
    code = _WORKER.format(tests=TESTS)
    try:
        p = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                           env=env, timeout=CASE_SECONDS * len(cases), preexec_fn=_limit_memory)  # fmt: skip
        out, err, status = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out, err, status = e.stdout or "", e.stderr or "", None
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    results = [json.loads(line) for line in out.splitlines() if line.startswith("[")]
    done = {(r[1], r[2]) for r in results}
    lost = [c for c in cases if c not in done]
    if not lost:
        return results, []
    if status == 0:  # finished without reporting: an exception escaped run_case
        why = f"uncaught error: {err.strip().splitlines()[-1] if err.strip() else '?'}"
    elif status is None:
        why = f"no answer within {CASE_SECONDS} s per case (hang)"
    else:
        why = f"worker died with status {status} ({err.strip().splitlines()[-1] if err.strip() else 'no message'})"
    if len(cases) == 1:
        return results, [(*cases[0], why)]
    bad = []
    for c in lost:  # one per process, to name the culprit
        r, b = run_batch([c], env)
        results += r
        bad += b
    return results, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz (default 10)")
    ap.add_argument("--kind", choices=KINDS, default=None, help="only this kind of case")
    ap.add_argument("--seed", type=int, default=None, help="run one case (with --kind) in this process")
    ap.add_argument("--batch", type=int, default=25, help="cases per worker process (default 25)")
    ap.add_argument("--start", type=int, default=None, help="first seed (default: random, printed)")
    args = ap.parse_args(argv)
    if args.seed is not None:
        kind = args.kind or "valid"
        try:
            print(run_case(kind, args.seed))
        except Finding as e:
            print(f"FINDING: {e}")
            return 1
        return 0
    start = args.start if args.start is not None else random.randrange(2**31)
    kinds = [args.kind] if args.kind else list(KINDS)
    print(f"fuzzing {', '.join(kinds)} for {args.minutes:g} min from seed {start} (rerun with --start {start})")
    deadline = time.time() + 60 * args.minutes
    counts = {k: 0 for k in kinds}
    findings: list[tuple[str, int, str]] = []
    seed = start
    with tempfile.TemporaryDirectory(prefix="tf-fuzz-") as cache:
        env = {**os.environ, "TENSORFORGE_CACHE_DIR": cache, "TENSORFORGE_CACHE_SIZE": "256M",
               "TENSORFORGE_NUM_THREADS": "2", "TENSORFORGE_PROGRESS": "0"}  # fmt: skip
        while time.time() < deadline:
            cases = [(kinds[(seed + i) % len(kinds)], seed + i) for i in range(args.batch)]
            seed += args.batch
            results, lost = run_batch(cases, env)
            for status, kind, s, msg in results:
                counts[kind] += 1
                if status == "finding":
                    findings.append((kind, s, msg))
                    print(f"FINDING {kind} seed {s}: {msg}", flush=True)
            for kind, s, why in lost:
                counts[kind] += 1
                findings.append((kind, s, why))
                print(f"FINDING {kind} seed {s}: {why} (reproduce: python tools/fuzz.py --kind {kind} --seed {s})",
                      flush=True)  # fmt: skip
            print(f"  {sum(counts.values())} cases ({', '.join(f'{k} {n}' for k, n in counts.items())}), "
                  f"{len(findings)} finding(s)", flush=True)  # fmt: skip
    print(f"done: {sum(counts.values())} cases, {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
