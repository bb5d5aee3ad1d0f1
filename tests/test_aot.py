"""AOT export: the shared library computes what the JIT computes, from Python (ctypes) and from C."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import tensorforge as tfg
from tensorforge.examples import mlp, small_cnn

pytestmark = pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")


def _run_so(path: str, inputs, out_specs, workspace: bool):
    lib = ctypes.CDLL(path)
    lib.tf_model_workspace_size.restype = ctypes.c_size_t
    lib.tf_model_set_num_threads(2)
    outs = [np.empty(shape, dt.np) for _, dt, shape in out_specs]
    ins = (ctypes.c_void_p * len(inputs))(*[x.ctypes.data for x in inputs])
    ots = (ctypes.c_void_p * len(outs))(*[o.ctypes.data for o in outs])
    ws = np.empty(lib.tf_model_workspace_size(), np.uint8) if workspace else None
    assert lib.tf_model_run(ins, ots, None if ws is None else ctypes.c_void_p(ws.ctypes.data)) == 0
    return outs


@pytest.mark.parametrize("builder,shape", [(mlp, (1, 784)), (small_cnn, (2, 3, 16, 16))], ids=["mlp", "cnn"])
def test_export_matches_jit(builder, shape, tmp_path, rng):
    model = builder(batch=shape[0])
    m = tfg.compile(model)
    files = m.export(str(tmp_path), "net")
    x = rng.standard_normal(shape).astype(np.float32)
    want = m(x)
    for ws in (False, True):
        (got,) = _run_so(files["library"], [x], m.outputs, ws)
        np.testing.assert_array_equal(got, want)
    hdr = open(files["header"]).read()
    assert "int tf_model_run(" in hdr and "TF_MODEL_NUM_INPUTS 1" in hdr


def test_export_from_c_program(tmp_path, rng):
    m = tfg.compile(mlp(batch=1))
    m.export(str(tmp_path), "mlp")
    x = rng.standard_normal((1, 784)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    (tmp_path / "main.c").write_text(r"""
#include <stdio.h>
#include "mlp.h"
int main(void) {
    static float x[TF_INPUT_X_NUMEL], y[TF_OUTPUT_PROBS_NUMEL];
    FILE *f = fopen("x.bin", "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    const void *in[] = {x};
    void *out[] = {y};
    if (tf_model_run(in, out, NULL) != 0) return 3;
    f = fopen("y.bin", "wb");
    fwrite(y, sizeof y, 1, f);
    fclose(f);
    return 0;
}
""")
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "main.c", "-o", "main", "-I.", "-L.", "-lmlp", "-Wl,-rpath,$ORIGIN"], cwd=tmp_path, check=True)
    subprocess.run(["./main"], cwd=tmp_path, check=True)
    y = np.fromfile(tmp_path / "y.bin", np.float32).reshape(1, 10)
    np.testing.assert_array_equal(y, m(x))


def test_export_cli(tmp_path):
    from tensorforge.cli import main

    assert main(["export", "mlp", "-o", str(tmp_path), "--target", "host"]) == 0  # linked by this cc: its arch
    assert (tmp_path / "libmodel.so").exists() and (tmp_path / "model.h").exists()
    assert not list(tmp_path.glob(".tmp-export-*"))


def test_index_errors_from_c(tmp_path, rng):
    """tf_model_run returns TF_MODEL_ERROR_INDEX for an out-of-range index (workspace given or not) and
    tf_model_error_message says where, as the Python runtime does; a valid call clears it."""
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
    (tmp_path / "main.c").write_text(r"""
#include <stdio.h>
#include <stdlib.h>
#include "emb.h"
int main(void) {
    static float x[TF_INPUT_X_NUMEL], y[TF_OUTPUT_Y_NUMEL];
    static int64_t i[TF_INPUT_I_NUMEL];
    char msg[512];
    FILE *f = fopen("x.bin", "rb");
    if (!f || fread(x, sizeof x, 1, f) != 1) return 2;
    fclose(f);
    f = fopen("i.bin", "rb");
    if (!f || fread(i, sizeof i, 1, f) != 1) return 2;
    fclose(f);
    const void *in[] = {x, i};
    void *out[] = {y};
    void *ws = malloc(tf_model_workspace_size());
    if (tf_model_run(in, out, ws) != TF_MODEL_OK || tf_model_error_message(msg, sizeof msg) != 0 || msg[0]) return 3;
    f = fopen("y.bin", "wb");
    fwrite(y, sizeof y, 1, f);
    fclose(f);
    i[4] = 10;
    if (tf_model_run(in, out, NULL) != TF_MODEL_ERROR_INDEX) return 4;
    printf("%d|%s\n", tf_model_error_message(msg, sizeof msg), msg);
    i[4] = 0;
    i[1] = -11;
    if (tf_model_run(in, out, ws) != TF_MODEL_ERROR_INDEX) return 5;
    tf_model_error_message(msg, sizeof msg);
    printf("%s\n", msg);
    i[1] = 0;
    if (tf_model_run(in, out, ws) != TF_MODEL_OK || tf_model_error_message(msg, sizeof msg) != 0) return 6;
    free(ws);
    return 0;
}
""")
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "main.c", "-o", "main", "-I.", "-L.", "-lemb", "-Wl,-rpath,$ORIGIN"], cwd=tmp_path, check=True)
    r = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r
    np.testing.assert_array_equal(np.fromfile(tmp_path / "y.bin", np.float32).reshape(6, 4), xs[ind])
    first, second = r.stdout.splitlines()
    n, text = first.split("|")
    assert text == ("model 'emb', node 'lookup' (Gather): index 10 at indices [6] (flat position 4) is out of range "
                    "[-10, 9] (axis 0 of the data has 10 entries)") and int(n) == len(text)  # fmt: skip
    assert second.startswith("model 'emb', node 'lookup' (Gather): index -11 at indices [6] (flat position 1)")
    hdr = (tmp_path / "emb.h").read_text()
    assert "#define TF_MODEL_ERROR_INDEX 1" in hdr and "int tf_model_error_message(char *buf, size_t size);" in hdr
