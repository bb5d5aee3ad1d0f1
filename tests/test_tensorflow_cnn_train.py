"""tfg.training_step on a Keras CNN (Conv2D, DepthwiseConv2D, BatchNormalization, pooling, Dense): batch norm
trains on batch statistics (one ONNX BatchNormalization per layer, its moving mean and variance running
statistics updated with the layer's momentum), the trained weights and moving statistics go back into the
Keras model, and the model reaches model.fit's accuracy."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

import tensorforge as tfg  # noqa: E402

pytestmark = pytest.mark.tensorflow


def _cnn(seed, shape=(8, 8, 1), classes=10):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    layers = [keras.Input(shape), L.Conv2D(16, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(),
              L.DepthwiseConv2D(3, padding="same"), L.BatchNormalization(), L.ReLU(), L.MaxPooling2D(),
              L.Conv2D(32, 1, activation="relu"), L.Flatten(), L.Dense(classes)]  # fmt: skip
    return keras.Sequential(layers, name="keras_cnn")


def test_batch_norm_trains_on_batch_statistics_and_writes_back(rng):
    """One step: the moving statistics move as Keras's own training call moves them (Keras divides the variance
    by n, the step by n - 1: within 1/(n - 1) of the update), every weight changes, and the step's predictions
    equal the Keras model's after write_back."""
    x = rng.standard_normal((16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    ours, ref = _cnn(0), _cnn(0)
    step = tfg.training_step(ours, loss="cross_entropy", optimizer=tfg.optim.SGD(lr=0.05))
    np.testing.assert_allclose(step.predict(x), ours(x, training=False).numpy(), rtol=1e-4, atol=1e-5)
    before = [w.copy() for w in ours.get_weights()]
    step(x, y)
    step.write_back()
    ref(x, training=True)  # Keras's forward in training mode updates the moving statistics only
    names = [w.path for w in ours.weights]
    for name, got, want, old in zip(names, ours.get_weights(), ref.get_weights(), before):
        assert not np.allclose(got, old), f"{name} was not written back"
        if "moving" in name:
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.predict(x, verbose=0), step.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_keras_cnn_reaches_model_fit_accuracy():
    """Digits as 8x8 images, 6 epochs of SGD momentum: the Keras model trained by tensorforge (evaluated by Keras
    itself, with the written-back moving statistics) within 3 points of model.fit."""
    pytest.importorskip("sklearn")
    from tensorforge.train.datasets import digits

    ds = digits()
    xtr, xte = ds.x_train.reshape(-1, 8, 8, 1), ds.x_test.reshape(-1, 8, 8, 1)
    theirs, ours = _cnn(1), _cnn(1)
    theirs.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])  # fmt: skip
    theirs.fit(xtr, ds.y_train, epochs=6, batch_size=32, verbose=0, shuffle=True)
    want = float(theirs.evaluate(xte, ds.y_test, verbose=0)[1])
    step = tfg.training_step(ours, loss="cross_entropy", optimizer=tfg.optim.SGD(lr=0.05, momentum=0.9))
    step.fit(xtr, ds.y_train, epochs=6, batch_size=32, log=lambda s: None)
    got = float((ours.predict(xte, verbose=0).argmax(1) == ds.y_test).mean())
    assert want > 0.9 and got > 0.9 and abs(got - want) <= 0.03, (got, want)
