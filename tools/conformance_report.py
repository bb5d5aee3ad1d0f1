"""docs/CONFORMANCE.md from the saved results of ``tools/conformance.py``.

Each test is attributed to the operator it tests (the single node's op; for multi-node graphs such as
function expansions, the op whose snake-case name the test name starts with) and checked against the
scope of the target: tests of string, sequence, optional and training-only ops are out of scope and
listed with the reason.
"""

from __future__ import annotations

import datetime
import functools
import os
import re
from collections import Counter, defaultdict

TRAINING_OPS = {"Gradient", "Adagrad", "Adam", "Momentum"}
TRAINING_TESTS = [
    (r"^test_training_dropout", "Dropout in training mode (random mask)"),
    (r"^test_batchnorm_.*training_mode", "BatchNormalization in training mode (batch statistics)"),
]
CATEGORY_TITLES = {
    "NodeModel": "node tests",
    "RealModel": "model tests: real (light) CNNs",
    "SimpleModel": "model tests: simple",
    "PyTorchConvertedModel": "model tests: pytorch-converted",
    "PyTorchOperatorModel": "model tests: pytorch-operator",
}


def _data_dir() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


@functools.cache
def _model_index() -> dict[str, object]:
    """test name (without _cpu) -> model (a ModelProto, or the path of its model file)."""
    import warnings

    from onnx.backend.test.loader import load_model_tests

    out: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in load_model_tests(kind="node"):  # generated in memory from onnx.backend.test.case
            if t.model is not None:
                out[t.name] = t.model
            elif t.model_dir:
                out[t.name] = os.path.join(t.model_dir, "model.onnx")
    root = _data_dir()
    for kind in ("simple", "pytorch-converted", "pytorch-operator"):
        d = os.path.join(root, kind)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            p = os.path.join(d, name, "model.onnx")
            if os.path.exists(p):
                out[name] = p
    light = os.path.join(root, "light")
    if os.path.isdir(light):
        for f in os.listdir(light):
            m = re.fullmatch(r"light_(.*)\.onnx", f)
            if m:
                out["test_" + m.group(1)] = os.path.join(light, f)
    return out


@functools.cache
def _schema_names() -> list[tuple[str, str]]:
    import onnx.defs

    names = {(s.name, s.domain) for s in onnx.defs.get_all_schemas_with_history()}
    out = []
    for n, dom in names:
        label = n if dom in ("", "ai.onnx") else f"{dom}.{n}"
        out.append((re.sub(r"[^a-z0-9]", "", (dom.replace(".", "") if dom not in ("", "ai.onnx") else "") + n.lower()),
                    label))  # fmt: skip
    return sorted(out, key=lambda t: -len(t[0]))


@functools.cache
def test_info(test: str) -> dict:
    """{'op', 'scope' (None = in scope, else the reason)} for a test name like test_abs_cpu."""
    import onnx

    base = test.removesuffix("_cpu")
    path = _model_index().get(base)
    info = {"op": "?", "scope": None}
    for rx, why in TRAINING_TESTS:
        if re.search(rx, base):
            info["scope"] = why
    if path is None:
        return info
    m = path if isinstance(path, onnx.ModelProto) else onnx.load(path, load_external_data=False)
    g = m.graph
    ops = [(n.op_type, n.domain) for n in g.node]
    if len(ops) == 1:
        op, dom = ops[0]
        info["op"] = op if dom in ("", "ai.onnx") else f"{dom}.{op}"
    elif "_expanded" in base and re.sub(r"_expanded(_ver\d+)?", "", base) in _model_index():
        # a function op expanded into primitives: attribute it to the op of the unexpanded test
        info["op"] = test_info(re.sub(r"_expanded(_ver\d+)?", "", base) + "_cpu")["op"]
    else:
        key = re.sub(r"[^a-z0-9]", "", base.removeprefix("test_").lower())
        for k, label in _schema_names():
            if key.startswith(k):
                info["op"] = label
                break
    if info["scope"] is None:
        info["scope"] = _out_of_scope(g, ops)
    return info


def _out_of_scope(g, ops) -> str | None:
    import onnx

    for op, dom in ops:
        if dom == "ai.onnx.preview.training" or op in TRAINING_OPS:
            return f"training-only op ({op})"
    vals = [*g.input, *g.output, *g.value_info]
    for v in vals:
        kind = v.type.WhichOneof("value")
        if kind in ("sequence_type", "optional_type", "map_type"):
            return "sequence/optional/map values"
        if kind == "tensor_type" and v.type.tensor_type.elem_type == onnx.TensorProto.STRING:
            return "string tensors"
    for init in g.initializer:
        if init.data_type == onnx.TensorProto.STRING:
            return "string tensors"
    seq_ops = {"SequenceConstruct", "SequenceAt", "SequenceEmpty", "SequenceInsert", "SequenceErase",
               "SequenceLength", "SequenceMap", "SplitToSequence", "ConcatFromSequence", "Optional",
               "OptionalGetElement", "OptionalHasElement"}  # fmt: skip
    for op, _ in ops:
        if op in seq_ops:
            return "sequence/optional/map values"
        if op.startswith("String") or op in ("RegexFullMatch",):
            return "string tensors"
    return None


def ci_subset(ours: dict[str, dict]) -> list[str]:
    """Per operator the first (by name) in-scope node test tensorforge passes, plus every passing model
    test: a fast CI run that touches every supported op and every shipped model."""
    picked: dict[str, str] = {}
    models = []
    for n in sorted(ours):
        r = ours[n]
        info = test_info(n)
        if r["status"] != "pass" or info["scope"] is not None:
            continue
        if r["category"] != "NodeModel":
            models.append(n)
        elif info["op"] not in picked:
            picked[info["op"]] = n
    return sorted(picked.values()) + models


def write_report(results: dict[str, dict[str, dict]], path: str) -> str:
    import onnx

    ours = results.get("tensorforge", {})
    ort = results.get("onnxruntime", {})
    names = sorted(set(ours) | set(ort))
    infos = {n: test_info(n) for n in names}

    def cat(n):
        return (ours.get(n) or ort.get(n))["category"]

    def passed(res, n):
        return n in res and res[n]["status"] == "pass"

    lines = ["# ONNX conformance", ""]
    try:
        import onnxruntime

        ort_v = onnxruntime.__version__
    except ImportError:
        ort_v = "not installed"
    lines += [
        f"Generated by `make conformance` ([tools/conformance.py](../tools/conformance.py)) on "
        f"{datetime.date.today().isoformat()}: onnx {onnx.__version__}'s `onnx.backend.test.BackendTest` "
        f"against `tensorforge.compiler.onnx_backend`, and against ONNX Runtime {ort_v} (`onnxruntime.backend`) on the "
        "same tests. Every test runs in its own process with a time limit (a crash or hang fails one "
        "test). CPU tests only (`*_cuda` variants are skipped by the suite for both).",
        "",
        "Out of scope (per the target: tests of string, sequence, optional and training-only ops) are "
        "counted separately and listed at the end with the reason.",
        "",
        "## Summary",
        "",
        "| tests | total | out of scope | in scope | tensorforge pass | ONNX Runtime pass |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups = defaultdict(list)
    for n in names:
        groups[cat(n)].append(n)
    tot = Counter()
    for c in ["NodeModel", "RealModel", "SimpleModel", "PyTorchConvertedModel", "PyTorchOperatorModel"]:
        ns = groups.get(c, [])
        if not ns:
            continue
        ins = [n for n in ns if infos[n]["scope"] is None]
        row = (len(ns), len(ns) - len(ins), len(ins), sum(passed(ours, n) for n in ins),
               sum(passed(ort, n) for n in ins))  # fmt: skip
        tot.update(dict(zip(("a", "b", "c", "d", "e"), row)))
        lines.append(f"| {CATEGORY_TITLES.get(c, c)} | " + " | ".join(str(x) for x in row) + " |")
    lines.append(f"| **all** | **{tot['a']}** | **{tot['b']}** | **{tot['c']}** | **{tot['d']}** | **{tot['e']}** |")
    lines.append("")
    both = sum(passed(ours, n) and passed(ort, n) for n in names if infos[n]["scope"] is None)
    only_ours = [n for n in names if infos[n]["scope"] is None and passed(ours, n) and not passed(ort, n)]
    only_ort = [n for n in names if infos[n]["scope"] is None and passed(ort, n) and not passed(ours, n)]
    lines += [f"In scope, both pass {both}; only tensorforge passes {len(only_ours)}; only ONNX Runtime passes "
              f"{len(only_ort)}.", ""]  # fmt: skip

    # failure classes
    lines += ["## Why tests fail (tensorforge, in scope)", "", "| failure class | tests | example |", "|---|---:|---|"]
    fails = defaultdict(list)
    for n in names:
        r = ours.get(n)
        if r and r["status"] != "pass" and infos[n]["scope"] is None:
            fails[r["class"]].append(n)
    for k, ns in sorted(fails.items(), key=lambda t: -len(t[1])):
        ex = ns[0]
        lines.append(f"| {k} | {len(ns)} | `{ex}`: {_md(ours[ex]['detail'])} |")
    lines.append("")
    unimpl = Counter(ours[n]["detail"] for n in fails.get("op not implemented", []))
    if unimpl:
        lines += ["Ops not implemented (tests): " + ", ".join(f"{op} ({c})" for op, c in sorted(unimpl.items())), ""]

    # per operator
    lines += ["## Per operator (node tests)", "",
              "| operator | tests | in scope | tensorforge | ONNX Runtime |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    per_op = defaultdict(list)
    for n in groups.get("NodeModel", []):
        per_op[infos[n]["op"]].append(n)
    for op in sorted(per_op, key=str.lower):
        ns = per_op[op]
        ins = [n for n in ns if infos[n]["scope"] is None]
        a, b = sum(passed(ours, n) for n in ins), sum(passed(ort, n) for n in ins)
        mark = "" if a >= b else " ⚠"
        lines.append(f"| {op} | {len(ns)} | {len(ins)} | {a}{mark} | {b} |")
    lines.append("")

    # model tests
    lines += ["## Model tests", "", "| test | category | tensorforge | ONNX Runtime |", "|---|---|---|---|"]
    for n in names:
        if cat(n) == "NodeModel":
            continue
        lines.append(f"| {n} | {CATEGORY_TITLES[cat(n)].split(': ')[-1]} | {_status(ours.get(n), infos[n])} | "
                     f"{_status(ort.get(n), infos[n])} |")  # fmt: skip
    lines.append("")

    # failing tests, by class
    lines += ["## Failing tests (tensorforge, in scope)", ""]
    for k, ns in sorted(fails.items(), key=lambda t: -len(t[1])):
        lines += [f"### {k} ({len(ns)})", ""]
        for n in ns:
            lines.append(f"- `{n}`: {_md(ours[n]['detail'])}")
        lines.append("")
    if only_ort:
        lines += ["## In scope, passed by ONNX Runtime but not tensorforge", "", ", ".join(f"`{n}`" for n in only_ort),
                  ""]  # fmt: skip
    if only_ours:
        lines += ["## In scope, passed by tensorforge but not ONNX Runtime", ""]
        for n in only_ours:
            r = ort.get(n)
            why = f"[{r['class']}] {_md(r['detail'])}" if r else "not run"
            lines.append(f"- `{n}`: ONNX Runtime {why}")
        lines.append("")

    # out of scope
    lines += ["## Out of scope", ""]
    oos = defaultdict(list)
    for n in names:
        if infos[n]["scope"] is not None:
            oos[infos[n]["scope"]].append(n)
    for why, ns in sorted(oos.items(), key=lambda t: -len(t[1])):
        lines += [f"- **{why}** ({len(ns)}): " + ", ".join(f"`{n}`" for n in ns)]
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _status(r, info) -> str:
    if r is None:
        return "not run"
    if r["status"] == "pass":
        return f"pass ({r['seconds']:.1f} s)"
    return f"{r['status']}: {r['class']}"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")[:160]
