"""tfg.training_step on a Keras 3 model: the trainable variables become named parameters (captured as
arguments of the traced function, so tf2onnx cannot fold them), the step trains like model.fit and writes
the weights back with set_weights."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")
pytest.importorskip("sklearn")

import tensorforge as tfg  # noqa: E402
from tensorforge.compiler.tensorflow_api import KerasTrainingStep  # noqa: E402
from tensorforge.train.datasets import digits  # noqa: E402

pytestmark = pytest.mark.tensorflow


def _mlp(seed):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential([keras.Input((64,)), L.Dense(64, activation="relu"), L.Dense(10, activation="softmax")],
                            name="digits_mlp")  # fmt: skip


def test_variables_are_named_parameters_even_zero_biases():
    m = _mlp(0)  # Dense biases start at zero: tf2onnx would fold a constant zero bias away
    step = tfg.training_step(m, loss="cross_entropy", optimizer=tfg.optim.SGD(lr=0.1))
    assert isinstance(step, KerasTrainingStep)
    assert len(step.params) == 4 and any("bias" in p for p in step.params), step.params
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(step.predict(x), m(x, training=False).numpy(), rtol=1e-5, atol=1e-6)


def test_keras_mlp_trains_like_model_fit():
    ds = digits()
    keras_model, ours = _mlp(1), _mlp(1)
    ours.set_weights(keras_model.get_weights())
    keras_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy",
                        metrics=["accuracy"])  # fmt: skip
    keras_model.fit(ds.x_train, ds.y_train, epochs=8, batch_size=32, verbose=0, shuffle=True)
    want = float(keras_model.evaluate(ds.x_test, ds.y_test, verbose=0)[1])

    step = tfg.training_step(ours, loss="cross_entropy", optimizer=tfg.optim.SGD(lr=0.1))
    before = [w.copy() for w in ours.get_weights()]
    step.fit(ds.x_train, ds.y_train, epochs=8, batch_size=32, log=lambda s: None)
    got = float((ours.predict(ds.x_test, verbose=0).argmax(1) == ds.y_test).mean())  # the Keras model itself
    assert want > 0.9 and got > 0.9 and abs(got - want) <= 0.03, (got, want)
    assert all(not np.allclose(a, b) for a, b in zip(before, ours.get_weights()))  # every weight written back
    np.testing.assert_allclose(ours.predict(ds.x_test, verbose=0), step.predict(ds.x_test), rtol=1e-4, atol=1e-5)
