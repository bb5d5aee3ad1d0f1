"""AOT export: the C library computes what the JIT computes (from its example program, from a hand-written C
program, from Python through ``tfg.load``); two libraries link into one program; hostile names stay data;
sessions on separate threads; weights files; errors as status codes and messages."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

import tensorforge as tfg
from aot_helpers import CC, build_example, needs_cc, run_example
from tensorforge.errors import DataError, TensorforgeError
from tensorforge.examples import bert_encoder, mlp, small_cnn

pytestmark = needs_cc

MODELS = {
    "mlp": (lambda: mlp(batch=2), [((2, 784), np.float32)]),
    "cnn": (lambda: small_cnn(batch=2), [((2, 3, 16, 16), np.float32)]),
    "transformer": (lambda: bert_encoder(batch=1, seq=16, hidden=64, heads=4, layers=1), [((1, 16, 64), np.float32)]),
}  # fmt: skip


def inputs_for(specs, rng):
    return [rng.standard_normal(shape).astype(dt) for shape, dt in specs]


@pytest.mark.parametrize("kind", list(MODELS))
def test_example_program_and_load_match_the_jit(kind, tmp_path, rng):
    build, specs = MODELS[kind]
    m = tfg.compile(build())
    files = m.export(str(tmp_path), kind)
    for f in ("example.c", "Makefile", "README.md", f"{kind}.s", f"{kind}.json", f"lib{kind}.a"):
        assert (tmp_path / f).exists(), f
    xs = inputs_for(specs, rng)
    want = m(*xs)
    want = list(want) if isinstance(want, tuple) else [want]
    loaded = tfg.load(str(tmp_path))
    got = loaded(*xs)
    for g, w in zip(got if isinstance(got, tuple) else [got], want):
        np.testing.assert_array_equal(g, w)  # bit for bit: the same code
    assert loaded.input_names == m.input_names and loaded.output_names == m.output_names
    build_example(tmp_path)
    for threads in ("1", "2"):
        outs = run_example(tmp_path, xs, "-t", threads)
        assert len(outs) == len(want)
        for g, w in zip(outs, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)
    assert "median" in subprocess.run(["./example", "-r", "3"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert files["static"].endswith(f"lib{kind}.a")


def test_load_checks_the_border(tmp_path, rng):
    m = tfg.compile(small_cnn(batch=2))
    m.export(str(tmp_path), "cnn")
    e = tfg.load(str(tmp_path))
    with pytest.raises(TensorforgeError, match=r"input 'x' has shape \[1, 3, 16, 16\], expected \[2, 3, 16, 16\]"):
        e(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(TensorforgeError, match="dtype"):
        e(np.zeros((2, 3, 16, 16), np.complex64))
    e.close()
    with pytest.raises(TensorforgeError, match="closed"):
        e(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    manifest = json.loads((tmp_path / "cnn.json").read_text())
    manifest["target"]["triple"] = "aarch64-unknown-linux-gnu"
    (tmp_path / "cnn.json").write_text(json.dumps(manifest))
    with pytest.raises(TensorforgeError, match="library for aarch64"):
        tfg.load(str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TensorforgeError, match="no exported tensorforge library"):
        tfg.load(str(tmp_path / "empty"))


TWO_MODELS = r"""
#include <stdio.h>
#include <string.h>
#include "mlp.h"
#include "cnn.h"
static float xm[MLP_INPUT_X_NUMEL], ym[MLP_OUTPUT_PROBS_NUMEL];
static float xc[CNN_INPUT_X_NUMEL], yc[CNN_OUTPUT_LOGITS_NUMEL];
static int load(const char *p, void *b, size_t n) {
    FILE *f = fopen(p, "rb");
    int ok = f && fread(b, n, 1, f) == 1;
    if (f) fclose(f);
    return ok;
}
static int save(const char *p, void *b, size_t n) {
    FILE *f = fopen(p, "wb");
    int ok = f && fwrite(b, n, 1, f) == 1;
    if (f) fclose(f);
    return ok;
}
int main(void) {
    mlp_session *a; cnn_session *b;
    if (!load("xm.bin", xm, sizeof xm) || !load("xc.bin", xc, sizeof xc)) return 2;
    if (mlp_session_create(&a, NULL) != MLP_OK || cnn_session_create(&b, NULL) != CNN_OK) return 3;
    const void *im[] = {xm}, *ic[] = {xc};
    void *om[] = {ym}, *oc[] = {yc};
    for (int r = 0; r < 3; r++)  /* interleaved: each library keeps its own weights and pool */
        if (mlp_run(a, im, om) != MLP_OK || cnn_run(b, ic, oc) != CNN_OK) return 4;
    if (!save("ym.bin", ym, sizeof ym) || !save("yc.bin", yc, sizeof yc)) return 5;
    mlp_session_destroy(a); cnn_session_destroy(b);
    return 0;
}
"""


@pytest.mark.parametrize("link", ["shared", "static"])
def test_two_models_link_into_one_program(link, tmp_path, rng):
    mm, mc = tfg.compile(mlp(batch=1)), tfg.compile(small_cnn(batch=1))
    mm.export(str(tmp_path / "a"), "mlp")
    mc.export(str(tmp_path / "b"), "cnn")
    xm = rng.standard_normal((1, 784)).astype(np.float32)
    xc = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    xm.tofile(tmp_path / "xm.bin")
    xc.tofile(tmp_path / "xc.bin")
    (tmp_path / "main.c").write_text(TWO_MODELS)
    libs = (["a/libmlp.a", "b/libcnn.a"] if link == "static" else
            ["-La", "-Lb", "-lmlp", "-lcnn", "-Wl,-rpath,$ORIGIN/a:$ORIGIN/b"])  # fmt: skip
    cmd = [CC, "-Wall", "-Werror", "main.c", "-o", "main", "-Ia", "-Ib", *libs, "-lpthread", "-lm"]
    subprocess.run(cmd, cwd=tmp_path, check=True)
    subprocess.run(["./main"], cwd=tmp_path, check=True)
    np.testing.assert_array_equal(np.fromfile(tmp_path / "ym.bin", np.float32).reshape(1, 10), mm(xm))
    np.testing.assert_array_equal(np.fromfile(tmp_path / "yc.bin", np.float32).reshape(1, 10), mc(xc))
    nm = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "a/libmlp.so")], capture_output=True, text=True,
                        check=True).stdout  # fmt: skip
    names = [line.split()[-1] for line in nm.splitlines() if line.strip()]
    assert "mlp_run" in names and all(n.startswith("mlp_") for n in names), names


HOSTILE_IN = 'x */ int injected; /* "\\ ??/'
HOSTILE_NODE = 'look%s%n\nup "q" \\'


def _hostile_model():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info(HOSTILE_IN, TensorProto.FLOAT, [10, 4])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [6])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [6, 4]) for n in ("a-b", "a.b")]
    nodes = [helper.make_node("Gather", [HOSTILE_IN, "i"], ["g"], name=HOSTILE_NODE),
             helper.make_node("Relu", ["g"], ["a-b"]), helper.make_node("Neg", ["g"], ["a.b"])]  # fmt: skip
    g = helper.make_graph(nodes, "evil */ model", [x, i], outs)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_hostile_names_stay_data(tmp_path, rng):
    m = tfg.compile(_hostile_model())
    m.export(str(tmp_path), "evil")
    hdr = (tmp_path / "evil.h").read_text()
    assert "EVIL_OUTPUT_A_B_INDEX 0" in hdr and "EVIL_OUTPUT_A_B_2_INDEX 1" in hdr
    (tmp_path / "uses.c").write_text('#include "evil.h"\nint main(void) { return injected; }\n')
    r = subprocess.run([CC, "-c", "uses.c"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "injected" in r.stderr  # the name declared nothing
    e = tfg.load(str(tmp_path))
    assert e.input_names == [HOSTILE_IN, "i"] and e.output_names == ["a-b", "a.b"]
    x = rng.standard_normal((10, 4)).astype(np.float32)
    ind = rng.integers(-10, 10, 6)
    a, b = e(x, ind)
    np.testing.assert_array_equal(a, np.maximum(x[ind], 0))
    ind[3] = 12
    with pytest.raises(DataError) as c_err:
        e(x, ind)
    with pytest.raises(DataError) as py_err:
        m(x, ind)
    # the same words (the node's name as text, '%s%n' and all); C adds the flat position
    assert str(c_err.value).split(" at ")[0] == str(py_err.value).split(" at ")[0]
    assert HOSTILE_NODE in str(c_err.value) and "index 12 at " in str(c_err.value)


THREADS = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "mlp.h"
static float x[MLP_INPUT_X_NUMEL], want[MLP_OUTPUT_PROBS_NUMEL];
static int bad[4];
static void *work(void *arg) {
    int id = (int)(long)arg;
    mlp_session *s;
    float y[MLP_OUTPUT_PROBS_NUMEL];
    if (mlp_session_create(&s, NULL) != MLP_OK) { bad[id] = -1; return NULL; }
    mlp_session_set_num_threads(s, 1 + id % 2);
    const void *in[] = {x};
    void *out[] = {y};
    for (int r = 0; r < 1000; r++) {
        memset(y, 0, sizeof y);
        if (mlp_run(s, in, out) != MLP_OK || memcmp(y, want, sizeof y)) bad[id]++;
    }
    mlp_session_destroy(s);
    return NULL;
}
int main(void) {
    FILE *f = fopen("x.bin", "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    mlp_session *s;
    const void *in[] = {x};
    void *out[] = {want};
    if (mlp_session_create(&s, NULL) != MLP_OK || mlp_run(s, in, out) != MLP_OK) return 3;
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
    printf("%d %d %d %d\n", bad[0], bad[1], bad[2], bad[3]);
    return bad[0] || bad[1] || bad[2] || bad[3];
}
"""


def test_sessions_on_four_threads(tmp_path, rng):
    m = tfg.compile(mlp(batch=4))
    m.export(str(tmp_path), "mlp")
    x = rng.standard_normal((4, 784)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.c").write_text(THREADS)
    subprocess.run([CC, "-O1", "main.c", "-o", "main", "-I.", "-L.", "-lmlp", "-Wl,-rpath,$ORIGIN", "-lpthread"],
                   cwd=tmp_path, check=True)  # fmt: skip
    r = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split() == ["0"] * 4, r


def test_weights_file(tmp_path, rng):
    m = tfg.compile(small_cnn(batch=1))
    m.export(str(tmp_path / "f"), "cnn", weights="file")
    m.export(str(tmp_path / "g"), "cnn", weights="file")  # the same model: the same weights file
    other = tfg.compile(small_cnn(batch=1, seed=3))
    other.export(str(tmp_path / "o"), "cnn", weights="file")
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(tfg.load(str(tmp_path / "f"))(x), m(x))
    out = tmp_path / "f"
    build_example(out)
    (got,) = run_example(out, [x], "-w", "cnn.weights")
    np.testing.assert_array_equal(got, m(x))
    (got,) = run_example(out, [x], "-w", "../g/cnn.weights")
    np.testing.assert_array_equal(got, m(x))
    for args, msg in [((), "exported without embedded weights"), (("-w", "../o/cnn.weights"), "is not this library's"),
                      (("-w", "missing.weights"), "cannot open the weights file")]:  # fmt: skip
        r = subprocess.run(["./example", *args], cwd=out, capture_output=True, text=True)
        assert r.returncode == 1 and msg in r.stderr, r


INDEX_ERRORS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "emb.h"
int main(void) {
    static float x[EMB_INPUT_X_NUMEL], y[EMB_OUTPUT_Y_NUMEL];
    static int64_t i[EMB_INPUT_I_NUMEL];
    FILE *f = fopen("x.bin", "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    f = fopen("i.bin", "rb");
    if (!f || fread(i, sizeof i, 1, f) != 1) return 2;
    fclose(f);
    emb_session *s;
    if (emb_session_create(&s, NULL) != EMB_OK) return 3;
    const void *in[] = {x, i};
    void *out[] = {y};
    if (emb_run(s, in, out) != EMB_OK || emb_session_error(s)[0]) return 4;
    f = fopen("y.bin", "wb");
    fwrite(y, sizeof y, 1, f);
    fclose(f);
    i[4] = 10;
    if (emb_run(s, in, out) != EMB_ERROR_INDEX) return 5;
    printf("%s\n", emb_session_error(s));
    i[4] = 0;
    i[1] = -11;
    if (emb_run(s, in, out) != EMB_ERROR_INDEX) return 6;
    printf("%s\n", emb_session_error(s));
    i[1] = 0;
    if (emb_run(s, in, out) != EMB_OK || emb_session_error(s)[0]) return 7;
    const void *none[] = {x, NULL};
    if (emb_run(s, none, out) != EMB_ERROR_ARGUMENT) return 8;
    printf("%s\n%s\n", emb_session_error(s), emb_status_string(EMB_ERROR_INDEX));
    if (emb_session_set_num_threads(s, 0) != EMB_ERROR_ARGUMENT) return 9;
    if (emb_run(NULL, in, out) != EMB_ERROR_ARGUMENT) return 10;
    emb_session_destroy(s);
    return 0;
}
"""


def test_index_errors_from_c(tmp_path, rng):
    """An out-of-range index is a status code and a message naming the node, as the Python runtime says it; a
    valid call clears it; a NULL tensor pointer is refused before native code runs."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 4])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 4])
    g = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["y"], name="lookup")], "emb", [x, i], [y])
    m = tfg.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    m.export(str(tmp_path), "emb")
    xs = rng.standard_normal((10, 4)).astype(np.float32)
    ind = rng.integers(-10, 10, 6)
    xs.tofile(tmp_path / "x.bin")
    ind.tofile(tmp_path / "i.bin")
    (tmp_path / "main.c").write_text(INDEX_ERRORS)
    subprocess.run([CC, "main.c", "-o", "main", "-I.", "-L.", "-lemb", "-Wl,-rpath,$ORIGIN"], cwd=tmp_path, check=True)
    r = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r
    np.testing.assert_array_equal(np.fromfile(tmp_path / "y.bin", np.float32).reshape(6, 4), xs[ind])
    first, second, null, status = r.stdout.splitlines()
    assert first == ("model 'emb', node 'lookup' (Gather): index 10 at indices [6] (flat position 4) is out of range "
                     "[-10, 9] (axis 0 of the data has 10 entries)")  # fmt: skip
    assert second.startswith("model 'emb', node 'lookup' (Gather): index -11 at indices [6] (flat position 1)")
    assert null == "model emb: input 1 ('i') is NULL" and "out of range" in status


def test_export_cli(tmp_path):
    from tensorforge.cli import main

    assert main(["export", "mlp", "-o", str(tmp_path), "--target", "host", "--name", "net"]) == 0
    assert (tmp_path / "libnet.so").exists() and (tmp_path / "net.h").exists() and (tmp_path / "example.c").exists()
    assert not list(tmp_path.glob(".tmp-export-*"))
    with pytest.raises(ValueError, match="C identifier"):
        tfg.compile(mlp()).export(str(tmp_path / "x"), "9lives")


def test_cpu_requirements_follow_the_target():
    from tensorforge.codegen.targets import get_target
    from tensorforge.runtime.capi import cpu_requirements

    assert {"avx2", "fma"} <= set(cpu_requirements(get_target("x86_64")))
    assert "avx512f" not in cpu_requirements(get_target("x86_64"))
    assert {"avx512f", "avx512bw", "avx512vl"} <= set(cpu_requirements(get_target("x86_64-avx512")))
    assert cpu_requirements(get_target("aarch64")) == []


def test_c_strings_cannot_escape():
    from tensorforge.runtime.capi import c_string, unique_idents

    for name in ['a"b', "a\\", "x */ y", "??/", "line\nbreak", "é", "%s%n", "\0"]:
        lit = c_string(name)
        body = lit[1:-1]
        assert lit[0] == lit[-1] == '"' and '"' not in body and "?" not in body and "\n" not in body
        assert all(c.isalnum() or c in " _.,:;()[]{}<>=+-*/'#!|~^&@$\\" for c in body)
    assert unique_idents(["a-b", "a.b", "a_b", "1x", ""]) == ["A_B", "A_B_2", "A_B_3", "_1X", "_"]


def _int8_cnn(rng):
    """QuantizeLinear -> QLinearConv -> DequantizeLinear: float in and out, an int8 convolution inside."""
    from onnx import TensorProto, helper, numpy_helper

    w = rng.integers(-127, 128, (16, 8, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(a, n) for n, a in [
        ("xs", np.array(0.05, np.float32)), ("xz", np.array(120, np.uint8)), ("w", w),
        ("ws", (rng.random(16) * 0.01 + 0.001).astype(np.float32)), ("wz", np.zeros(16, np.int8)),
        ("ys", np.array(0.2, np.float32)), ("yz", np.array(7, np.uint8))]]  # fmt: skip
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"], pads=[1] * 4),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]  # fmt: skip
    g = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16, 12, 12])], inits)  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


@pytest.mark.parametrize("target", ["host", "x86_64-avx512vnni", "x86_64"])
def test_int8_model_exports(target, tmp_path, rng):
    """An int8 model exports like any other (its integer kernels for the target's ISA); where the code uses AMX
    tiles, the session asks Linux for the tile state before running it."""
    from tensorforge.cli import main
    from tensorforge.codegen.targets import get_target, host

    if target != "host" and not {"+avx512vnni", "+avx512bw", "+avx2"} <= set(host().features.split(",")):
        pytest.skip("this CPU cannot run the AVX-512 VNNI and AVX2 exports")
    model = _int8_cnn(rng)
    path = tmp_path / "q.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "lib"
    args = ["export", str(path), "-o", str(out), "--name", "q8"] + ([] if target == "host" else ["--target", target])
    assert main(args) == 0
    t = host() if target == "host" else get_target(target)
    asm = (out / "q8.s").read_text()
    mnemonic = {"amx": r"tdpb[su][su]d", "vnni512": "vpdpbusd", "vnni256": "vpdpbusd", "avx2": "vpmaddwd"}[t.int8_isa]
    assert re.search(rf"\b{mnemonic}\b", asm), mnemonic
    assert ("ldtilecfg" in asm) == (t.int8_isa == "amx")
    x = rng.standard_normal((2, 8, 12, 12)).astype(np.float32)
    want = tfg.compile(model)(x)
    got = tfg.load(str(out))(x)
    # every ISA path computes the same integers; the float epilogue is the same code
    np.testing.assert_array_equal(got, want)
    build_example(out)
    (g,) = run_example(out, [x])
    np.testing.assert_array_equal(g, want)


def test_export_quantizes_a_float_model(tmp_path, rng):
    """`export --quantize int8 --calibration`: an int8 library straight from a float model, its code the
    target's integer instructions, its outputs those of the quantized model compiled in process."""
    from tensorforge.cli import main
    from tensorforge.codegen.targets import host

    model = small_cnn(batch=2)
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    vi = model.graph.input[0]
    shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    np.savez(tmp_path / "cal.npz", **{vi.name: rng.standard_normal([8, *shape[1:]]).astype(np.float32)})
    out = tmp_path / "lib"
    assert main(["export", str(tmp_path / "m.onnx"), "-o", str(out), "--name", "q", "--quantize", "int8",
                 "--calibration", str(tmp_path / "cal.npz")]) == 0  # fmt: skip
    mnemonic = {"amx": r"tdpb[su][su]d", "vnni512": "vpdpbusd", "vnni256": "vpdpbusd", "avx2": "vpmaddwd"}
    if host().int8_isa in mnemonic:
        assert re.search(mnemonic[host().int8_isa], (out / "q.s").read_text())
    q = tfg.quantize(model, calibration=str(tmp_path / "cal.npz"))
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(tfg.load(str(out))(x), tfg.compile(q)(x))
