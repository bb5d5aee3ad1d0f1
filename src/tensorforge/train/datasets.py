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


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
            drop_last: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Mini-batches in a (re)shuffled order; the last partial batch is dropped unless ``drop_last=False``
    (each batch size compiles its own step)."""
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    stop = len(x) - len(x) % batch_size if drop_last else len(x)
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield np.ascontiguousarray(x[idx]), np.ascontiguousarray(y[idx])
