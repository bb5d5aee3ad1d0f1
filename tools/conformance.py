"""`make conformance`: ONNX's backend test suite against tensorforge (and ONNX Runtime, for comparison).

Every test of ``onnx.backend.test.BackendTest`` (node tests, and the model tests that ship inside the
onnx package) runs in its own forked process with a time limit, so that a crash or a hang costs one test,
not the run. The parent imports everything and builds the test list once; each child runs one test
function and reports a JSON line back through a pipe. Results go to ``conformance-work/<backend>.json``
and the summary to ``docs/CONFORMANCE.md`` (see ``conformance_report.py``).

    python tools/conformance.py                       # both backends, all tests, rewrites the doc
    python tools/conformance.py -k 'test_gather' --backend tensorforge --no-doc
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import sys
import time
import traceback
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(ROOT, "conformance-work")
sys.path.insert(0, HERE)

SUBSET = os.path.join(ROOT, "tests", "conformance_subset.txt")
MODEL_TIMEOUT = 600  # seconds, model tests (whole CNNs)
NODE_TIMEOUT = 60  # seconds, node tests


# -------------------------------------------------------------------------------------------------
# what a test is: its category, the operator it tests, whether it is in scope
# -------------------------------------------------------------------------------------------------
def collect(backend_module, pattern: str | None):
    """The BackendTest test cases (CPU only) as {name: (category, TestCase class)}."""
    import onnx.backend.test

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = onnx.backend.test.BackendTest(backend_module, "conformance")
        cases = bt.test_cases
    out = {}
    rx = re.compile(pattern) if pattern else None
    for cls_name, cls in cases.items():
        category = cls_name.removeprefix("OnnxBackend").removesuffix("Test")
        for name in dir(cls):
            if name.startswith("test_") and name.endswith("_cpu") and (rx is None or rx.search(name)):
                out[name] = (category, cls)
    return dict(sorted(out.items()))


# -------------------------------------------------------------------------------------------------
# running one test (in the child)
# -------------------------------------------------------------------------------------------------
def classify(exc: BaseException) -> tuple[str, str]:
    """(failure class, one-line detail) for an exception raised by a test."""
    from tensorforge import errors as E

    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else type(exc).__name__
    if isinstance(exc, E.UnsupportedError):
        text = " ".join([msg, *exc.problems])
        m = re.search(r"op (\w+) is not supported|no code generation for op (\w+)|no lowering for op (\w+)", text)
        if m:
            return "op not implemented", next(g for g in m.groups() if g)
        if re.search(r"element type|dtype|strings", text):
            return "unsupported dtype", first
        if "subgraph" in text or "control flow" in text:
            return "control flow (subgraph attribute)", first
        if re.search(r"is a (sequence|optional|map)_type|only tensors", text):
            return "non-tensor value (sequence/optional/map)", first
        return "unsupported attribute or mode", first
    if isinstance(exc, E.NotConstantError):
        return "value-dependent shape", first
    if isinstance(exc, E.ShapeError):
        return "shape/type rule rejected the model", first
    if isinstance(exc, E.CompileError):
        return "compile error", first
    if isinstance(exc, E.InputError):
        return "input binding error", first
    if isinstance(exc, E.TensorforgeError):
        return f"error: {type(exc).__name__}", first
    if isinstance(exc, AssertionError):
        if "incorrect shape" in msg:
            return "wrong output shape", first
        if "dtype" in msg.lower() and "Items are not equal" in msg:
            return "wrong output dtype", first
        return "wrong result", _mismatch_summary(msg)
    return f"error: {type(exc).__name__}", first


def classify_ort(exc: BaseException) -> tuple[str, str]:
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else type(exc).__name__
    if isinstance(exc, AssertionError):
        return "wrong result", _mismatch_summary(msg)
    if "NOT_IMPLEMENTED" in msg or "Could not find an implementation" in msg:
        return "op not implemented", first
    return f"error: {type(exc).__name__}", first


def _mismatch_summary(msg: str) -> str:
    m = re.search(r"Mismatched elements: [^\n]*", msg)
    return m.group(0) if m else (msg.splitlines() or ["assertion failed"])[0]


def run_one(name: str, cls, backend: str) -> dict:
    inst = cls(name)
    fn = getattr(inst, name)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn()
        status, klass, detail = "pass", "", ""
    except unittest.SkipTest as e:
        status, klass, detail = "skip", "skipped by the suite", str(e)
    except BaseException as e:  # noqa: BLE001 - every failure is a result here
        status = "fail"
        klass, detail = (classify if backend == "tensorforge" else classify_ort)(e)
        if os.environ.get("CONFORMANCE_TRACEBACK"):
            traceback.print_exc()
    return {"status": status, "class": klass, "detail": detail[:300], "seconds": time.perf_counter() - t0}


def backend_module(backend: str):
    if backend == "tensorforge":
        import tensorforge.compiler.onnx_backend as mod
    else:
        import onnxruntime.backend as mod
    return mod


# -------------------------------------------------------------------------------------------------
# the parent: fork one child per test, at most `jobs` at a time, each with a deadline
# -------------------------------------------------------------------------------------------------
def run_all(tests: dict, backend: str, jobs: int, timeout_node: int, timeout_model: int, progress) -> dict:
    results: dict[str, dict] = {}
    pending = list(tests.items())
    running: dict[int, tuple] = {}  # fd -> (pid, name, deadline, chunks, t0)
    while pending or running:
        while pending and len(running) < jobs:
            name, (category, cls) = pending.pop(0)
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                os.close(r)
                code = 0
                try:
                    res = run_one(name, cls, backend)
                    os.write(w, json.dumps(res).encode())
                except BaseException:  # noqa: BLE001
                    code = 3
                finally:
                    os.close(w)
                    os._exit(code)
            os.close(w)
            limit = timeout_node if category == "NodeModel" else timeout_model
            running[r] = (pid, name, time.monotonic() + limit, [], time.monotonic(), limit)
        ready, _, _ = select.select(list(running), [], [], 0.5)
        now = time.monotonic()
        for fd in list(running):
            pid, name, deadline, chunks, t0, limit = running[fd]
            if fd in ready:
                data = os.read(fd, 1 << 16)
                if data:
                    chunks.append(data)
                    continue
                # EOF: the child is done (or died)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                del running[fd]
                res = _child_result(b"".join(chunks), status, now - t0)
            elif now > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                os.close(fd)
                del running[fd]
                res = {"status": "fail", "class": "timeout", "detail": f"no result after {limit} s",
                       "seconds": now - t0}  # fmt: skip
            else:
                continue
            res["category"] = tests[name][0]
            results[name] = res
            progress(name, res)
    return results


def _child_result(data: bytes, status: int, seconds: float) -> dict:
    if data:
        try:
            return json.loads(data)
        except ValueError:
            pass
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status)).name
        return {"status": "fail", "class": "crash", "detail": f"killed by {sig}", "seconds": seconds}
    return {"status": "fail", "class": "crash", "detail": f"exit code {os.WEXITSTATUS(status)}", "seconds": seconds}


class Progress:
    """A one-line progress bar on a terminal, a line per 100 tests otherwise."""

    def __init__(self, total: int, label: str):
        self.total, self.label, self.done, self.passed = total, label, 0, 0
        self.t0 = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, name: str, res: dict) -> None:
        self.done += 1
        self.passed += res["status"] == "pass"
        if self.tty or self.done % 100 == 0 or self.done == self.total:
            width = 30
            fill = int(width * self.done / max(self.total, 1))
            line = (f"{self.label:12s} [{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} "
                    f"pass {self.passed}  {time.monotonic() - self.t0:5.0f}s  {name[:40]}")  # fmt: skip
            sys.stderr.write(("\r" + line.ljust(120)) if self.tty else line + "\n")
            sys.stderr.flush()
        if self.tty and self.done == self.total:
            sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--backend", choices=["tensorforge", "onnxruntime", "both"], default="both",
                    help="which backend(s) to run (default: both)")  # fmt: skip
    ap.add_argument("-k", dest="pattern", help="only tests whose name matches this regular expression")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="tests run at once (default: cores)")
    ap.add_argument("--timeout", type=int, default=NODE_TIMEOUT, help="seconds per node test (default: %(default)s)")
    ap.add_argument("--model-timeout", type=int, default=MODEL_TIMEOUT,
                    help="seconds per model test (default: %(default)s)")  # fmt: skip
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/CONFORMANCE.md")
    ap.add_argument("--reuse", action="append", default=[], choices=["tensorforge", "onnxruntime"],
                    help="reuse this backend's saved results instead of running it")  # fmt: skip
    ap.add_argument("--write-ci-subset", action="store_true",
                    help="rewrite tests/conformance_subset.txt (the tests CI runs) from tensorforge's results")
    args = ap.parse_args(argv)

    os.makedirs(WORK, exist_ok=True)
    # the suite's model tests write their data under ONNX_HOME; keep it out of the user's home
    os.environ.setdefault("ONNX_HOME", os.path.join(WORK, "onnx_home"))
    os.environ.setdefault("TENSORFORGE_CACHE_DIR", os.path.join(WORK, "cache"))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    backends = ["tensorforge", "onnxruntime"] if args.backend == "both" else [args.backend]
    for b in args.reuse:
        if b not in backends:
            backends.append(b)
    all_results = {}
    for b in backends:
        path = os.path.join(WORK, f"{b}.json")
        if b in args.reuse:
            with open(path) as f:
                all_results[b] = json.load(f)
            continue
        tests = collect(backend_module(b), args.pattern)
        res = run_all(tests, b, args.jobs, args.timeout, args.model_timeout, Progress(len(tests), b))
        if args.pattern:
            for name, r in sorted(res.items()):
                if r["status"] == "fail":
                    print(f"  FAIL {name}: [{r['class']}] {r['detail']}")
            print(f"{b}: {sum(r['status'] == 'pass' for r in res.values())} of {len(res)} selected tests pass")
        if args.pattern and os.path.exists(path):  # merge a partial run into the saved results
            with open(path) as f:
                merged = json.load(f)
            merged.update(res)
            res = merged
        with open(path, "w") as f:
            json.dump(res, f, indent=0, sort_keys=True)
        all_results[b] = res
        n_pass = sum(r["status"] == "pass" for r in res.values())
        print(f"{b}: {n_pass} of {len(res)} tests pass", flush=True)
    if args.write_ci_subset and "tensorforge" in all_results:
        from conformance_report import ci_subset

        names = ci_subset(all_results["tensorforge"])
        with open(SUBSET, "w") as f:
            f.write("# The ONNX backend tests CI runs (tests/test_onnx_backend.py): per operator the first node test\n"
                    "# tensorforge passes, and every model test that ships with onnx. Regenerate with\n"
                    "# `python tools/conformance.py --backend tensorforge --write-ci-subset`.\n")
            f.write("\n".join(names) + "\n")
        print(f"wrote {os.path.relpath(SUBSET, ROOT)} ({len(names)} tests)")
    if not args.no_doc and not args.pattern:
        from conformance_report import write_report

        path = write_report(all_results, os.path.join(ROOT, "docs", "CONFORMANCE.md"))
        print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
