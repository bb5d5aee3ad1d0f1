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
