"""Resize (every mode and coordinate transformation) and Upsample against the ONNX reference evaluator,
on random inputs with odd sizes, up and down, float and uint8."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import check_model, one_node_model, rand

# half_pixel_symmetric is checked by the ONNX conformance tests' stored outputs: the reference evaluator
# disagrees with them (and with ONNX Runtime) for downsampling
CTMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ctm", CTMS)
@pytest.mark.parametrize("scales", [(1, 1, 2.0, 1.5), (1, 1, 0.6, 0.5)], ids=["up", "down"])
def test_resize_scales(mode, ctm, scales, rng):
    x = rand(rng, (1, 2, 5, 7))
    consts = {"roi": np.array([], np.float32), "s": np.array(scales, np.float32)}
    check_model(one_node_model("Resize", {"x": x}, {"mode": mode, "coordinate_transformation_mode": ctm},
                               consts=consts), {"x": x}, rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("attrs", [{"mode": "nearest", "nearest_mode": "ceil"}, {"mode": "nearest", "nearest_mode":
                                   "round_prefer_ceil"}, {"mode": "nearest", "nearest_mode": "floor"},
                                   {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5},
                                   {"mode": "linear", "antialias": 1}, {"mode": "cubic", "antialias": 1},
                                   {"mode": "nearest", "keep_aspect_ratio_policy": "not_larger"},
                                   {"mode": "linear", "keep_aspect_ratio_policy": "not_smaller"}], ids=str)  # fmt: skip
@pytest.mark.parametrize("sizes", [(9, 4), (3, 11)])
def test_resize_sizes(attrs, sizes, rng):
    x = rand(rng, (2, 3, 6, 7))
    consts = {"sz": np.array(sizes, np.int64)}
    attrs = {**attrs, "axes": [2, 3]}
    model = one_node_model("Resize", {"x": x}, attrs, consts=consts, input_order=["x", "", "", "sz"], opset=19)
    check_model(model, {"x": x}, rtol=1e-4, atol=1e-5)


def test_resize_tf_crop_and_resize(rng):
    x = rand(rng, (1, 1, 6, 8))
    consts = {"roi": np.array([0.1, -0.2, 0.9, 1.1], np.float32), "sz": np.array([5, 9], np.int64)}
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 7.0,
             "axes": [2, 3]}  # fmt: skip
    model = one_node_model("Resize", {"x": x}, attrs, consts=consts, input_order=["x", "roi", "", "sz"], opset=19)
    check_model(model, {"x": x}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_uint8_and_float16(mode, rng):
    x = rand(rng, (1, 3, 4, 5), np.uint8, low=0, high=255)
    consts = {"roi": np.array([], np.float32), "s": np.array([1, 1, 1.7, 2.3], np.float32)}
    check_model(one_node_model("Resize", {"x": x}, {"mode": mode}, consts=consts), {"x": x})
    h = rand(rng, (1, 2, 4, 6), np.float16)
    check_model(one_node_model("Resize", {"h": h}, {"mode": mode}, consts=consts), {"h": h}, rtol=2e-3, atol=2e-3)


def test_upsample_legacy(rng):
    """Opset-9 Upsample (nearest, integer scales) is np.repeat along each axis."""
    import tensorforge as tfg

    x = rand(rng, (1, 2, 3, 4))
    m = tfg.compile(one_node_model("Upsample", {"x": x}, {"mode": "nearest"},
                                   consts={"s": np.array([1, 1, 2, 3], np.float32)}, opset=9))  # fmt: skip
    np.testing.assert_array_equal(m(x), np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample(mode, padding, align, rng):
    x = rand(rng, (2, 3, 5, 7))
    grid = rand(rng, (2, 4, 6, 2), low=-1.4, high=1.4)  # some samples fall outside the image
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    check_model(one_node_model("GridSample", {"x": x, "g": grid}, attrs, opset=20), {"x": x, "g": grid}, rtol=1e-4,
                atol=1e-5)  # fmt: skip


def test_grid_sample_volumetric(rng):
    x = rand(rng, (1, 2, 3, 4, 5))
    grid = rand(rng, (1, 2, 3, 4, 3), low=-1.2, high=1.2)
    check_model(one_node_model("GridSample", {"x": x, "g": grid}, {"mode": "linear"}, opset=20), {"x": x, "g": grid},
                rtol=1e-4, atol=1e-5)  # fmt: skip
