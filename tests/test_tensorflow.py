"""TensorFlow/Keras through tf2onnx: Keras 3 models, tf.functions and SavedModels match TensorFlow's outputs.
Skipped when tensorflow-cpu and tf2onnx are not installed (`pip install 'tensorforge[tensorflow]'`)."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

import tensorforge as tfg  # noqa: E402
from tensorforge.errors import TensorforgeError  # noqa: E402

pytestmark = pytest.mark.tensorflow


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype("f"), rng.standard_normal(n).astype("f"),
                               rng.standard_normal(n).astype("f"), rng.uniform(0.5, 1.5, n).astype("f")])  # fmt: skip


def _mlp():
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(5, activation="softmax")],
                            name="mlp")  # fmt: skip


def _cnn():
    L = keras.layers
    return keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                             L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization(), L.Activation("relu6"),
                             L.MaxPooling2D(), L.Conv2D(12, 1), L.AveragePooling2D(2), L.Flatten(),
                             L.Dense(10)], name="cnn")  # fmt: skip


@pytest.mark.parametrize("build,shape", [(_mlp, (20,)), (_cnn, (16, 16, 3))], ids=["mlp", "cnn"])
def test_keras_models_match_tensorflow(build, shape, rng):
    keras.utils.set_random_seed(int(rng.integers(1 << 30)))
    m = build()
    _randomize_bn(m, rng)
    cm = tfg.from_tensorflow(m)
    for batch in (3, 1):  # the batch stays symbolic
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        np.testing.assert_allclose(cm(x), m(x, training=False).numpy(), rtol=1e-4, atol=1e-5)


def test_functional_model_with_two_inputs_and_tf_function(rng):
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="gelu")(a), b])
    m = keras.Model([a, b], keras.layers.Dense(3)(h), name="two")
    xa, xb = rng.standard_normal((2, 6)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)
    want = m([xa, xb], training=False).numpy()
    np.testing.assert_allclose(tfg.from_tensorflow(m)(xa, xb), want, rtol=1e-4, atol=1e-5)
    fn = tf.function(lambda x: tf.nn.softmax(tf.matmul(x, tf.ones((6, 3))) * 0.5),
                     input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])  # fmt: skip
    np.testing.assert_allclose(tfg.from_tensorflow(fn)(xa), fn(xa).numpy(), rtol=1e-5, atol=1e-6)


def test_saved_model_directory(tmp_path, rng):
    keras.utils.set_random_seed(1)
    m = _cnn()
    _randomize_bn(m, rng)
    tf.saved_model.save(m, str(tmp_path / "sm"))
    cm = tfg.from_tensorflow(str(tmp_path / "sm"))
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(cm(x), m(x, training=False).numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(TensorforgeError, match="no signature 'nope'"):
        tfg.from_tensorflow(str(tmp_path / "sm"), signature="nope")


def test_unbuilt_model_is_a_clear_error():
    m = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(TensorforgeError, match="cannot tell the inputs"):
        tfg.from_tensorflow(m)
