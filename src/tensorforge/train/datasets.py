"""Small built-in datasets for the training examples, loaded from packages already installed (never
downloaded): ``digits`` is scikit-learn's 8x8 handwritten digits (1797 images, 10 classes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import TensorforgeError


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    image_shape: tuple[int, ...] = ()  # (channels, height, width) when the features are an image

    @property
    def features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    def as_images(self) -> Dataset:
        """The same data shaped (N, channels, height, width), for convolutional models."""
        if not self.image_shape:
            raise TensorforgeError(f"dataset {self.name} is not made of images")
        shape = (-1, *self.image_shape)
        return Dataset(self.name, self.x_train.reshape(shape), self.y_train, self.x_test.reshape(shape), self.y_test,
                       self.classes, self.image_shape)  # fmt: skip


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices with every class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(test_fraction * idx.size))
        test.append(idx[:n])
        train.append(idx[n:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(train: np.ndarray, test: np.ndarray, floor: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance per feature, with the training split's statistics (the deviation floored,
    so that features constant in training — blank border pixels — stay small)."""
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), floor)
    return ((train - mean) / std).astype(np.float32), ((test - mean) / std).astype(np.float32)


def digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """8x8 grey-level digit images as 64 standardized features, with a stratified held-out test split."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TensorforgeError(
            "the digits dataset ships with scikit-learn: pip install 'tensorforge[datasets]'"
        ) from None
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    x_train, x_test = standardize(x[tr], x[te])
    return Dataset("digits", x_train, y[tr], x_test, y[te], 10, (1, 8, 8))


DATASETS: dict[str, Callable[..., Dataset]] = {"digits": digits}


def load(name: str, **kw) -> Dataset:
    if name not in DATASETS:
        raise TensorforgeError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    return DATASETS[name](**kw)


# The portable shuffle: splitmix64 (Steele, Lea and Flood 2014) drives a Fisher-Yates shuffle, so that any
# program (the C training example of ``tensorforge export-train``) draws the same order for the same seed and
# epoch; numpy's generators cannot be reproduced outside numpy.
_GAMMA = 0x9E3779B97F4A7C15
_SEED_MUL = 0xD1B54A32D192ED03
_M64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shuffled_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``range(n)`` that depends only on ``(seed, epoch)`` (64-bit unsigned arithmetic):
    ``state = seed * 0xD1B54A32D192ED03 + epoch``; the k-th draw (k = 1, 2, ...) is splitmix64's output
    ``mix64(state + k * 0x9E3779B97F4A7C15)``; for i = n-1 down to 1, draw k = n-i swaps positions i and
    ``draw % (i + 1)``. docs/C_API_TRAINING.md gives the same in C."""
    if n < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"shuffled_order needs n, seed and epoch >= 0, got {n}, {seed}, {epoch}")
    order = list(range(n))
    if n > 1:
        state = np.uint64((seed * _SEED_MUL + epoch) & _M64)
        k = np.arange(1, n, dtype=np.uint64)
        draws = _mix64(state + k * np.uint64(_GAMMA))  # uint64 arrays wrap around, as in C
        span = np.arange(n, 1, -1, dtype=np.uint64)  # i + 1 for i = n-1 .. 1
        for i, j in zip(range(n - 1, 0, -1), (draws % span).tolist()):
            order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.int64)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
            drop_last: bool = True, order: np.ndarray | None = None
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Mini-batches in the order ``order`` (row indices, e.g. ``shuffled_order``), else shuffled by ``rng``,
    else in sequence; the last partial batch is dropped unless ``drop_last=False`` (each batch size compiles
    its own step)."""
    if order is None:
        order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])
