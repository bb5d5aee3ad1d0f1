"""The border between callers and compiled code: arrays (or shapes) checked against a model's inputs.

Native code is only ever entered with exactly the dtypes and shapes it was compiled for, so every way
into a model — a compiled model, a dynamic-shape model, a training step, ``input_shapes`` given to the
compiler — checks its inputs here, with one wording: the model, the input, what was expected and what
was given. An input's shape may have symbolic dims (strings): the first input that has one binds it, and
every later use must agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from ..errors import InputError
from .dtype import DType

Dim = int | str


class InputSpec(NamedTuple):
    name: str
    dtype: DType
    shape: tuple[Dim, ...]


def check_shape(model: str, spec: InputSpec, shape: Sequence[int], dims: dict[str, int] | None = None) -> None:
    """``shape`` fits ``spec.shape``: same rank, equal fixed dims, symbolic dims consistent with ``dims``
    (which is filled with the dims bound here)."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise InputError(f"model '{model}': input '{spec.name}' is given shape {list(shape)}; dims must be >= 0")
    if len(shape) != len(spec.shape):
        raise InputError(f"model '{model}': input '{spec.name}' has shape {list(shape)}, expected rank "
                         f"{len(spec.shape)} ({list(spec.shape)})")  # fmt: skip
    dims = {} if dims is None else dims
    for want, got in zip(spec.shape, shape):
        if isinstance(want, int):
            if want != got:
                raise InputError(f"model '{model}': input '{spec.name}' has shape {list(shape)}, expected "
                                 f"{list(spec.shape)}")  # fmt: skip
        elif dims.setdefault(want, got) != got:
            raise InputError(f"model '{model}': dim '{want}' is {dims[want]} in one input and {got} in input "
                             f"'{spec.name}'")  # fmt: skip


def check_array(model: str, spec: InputSpec, x, dims: dict[str, int] | None = None) -> np.ndarray:
    """``x`` as a C-contiguous numpy array of ``spec``'s dtype and shape (Python scalars and lists are
    converted; a wrong dtype is an error, never silently converted)."""
    if not isinstance(x, np.ndarray):
        if isinstance(x, int | float | bool | list | tuple | np.generic):
            x = np.asarray(x)
        else:
            raise InputError(f"model '{model}': input '{spec.name}' must be a numpy array, got {type(x).__name__}")
    if x.dtype != spec.dtype.np:
        raise InputError(f"model '{model}': input '{spec.name}' has dtype {x.dtype}, expected {spec.dtype.np} "
                         f"(convert with x.astype(np.{spec.dtype.np.name}))")  # fmt: skip
    check_shape(model, spec, x.shape, dims)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)  # (keeps 0-d arrays 0-d)


def bind_args(model: str, names: Sequence[str], args: Sequence, kwargs: Mapping) -> list:
    """The inputs in declaration order from positional arguments or from names (a mapping or keywords)."""
    if args and kwargs:
        raise InputError(f"model '{model}': pass inputs either positionally or by name, not both")
    names = list(names)
    if kwargs:
        extra = [k for k in kwargs if k not in names]
        if extra:
            raise InputError(f"model '{model}': unknown input(s) {extra}; inputs are {names}")
        missing = [n for n in names if n not in kwargs]
        if missing:
            raise InputError(f"model '{model}': missing input(s) {missing}; inputs are {names}")
        return [kwargs[n] for n in names]
    if len(args) != len(names):
        if len(args) < len(names):
            raise InputError(f"model '{model}': missing input(s) {names[len(args):]}; expected {len(names)} "
                             f"input(s) {names}, got {len(args)}")  # fmt: skip
        raise InputError(f"model '{model}': expected {len(names)} input(s) {names}, got {len(args)}")
    return list(args)


def check_feeds(model: str, feeds) -> Mapping:
    """``run``'s argument: a mapping of input names to arrays (a list would fail deep inside, on ``.get``)."""
    if not isinstance(feeds, Mapping):
        raise InputError(f"model '{model}': run() takes a dict {{input name: array}}, got {type(feeds).__name__}; "
                         "to pass arrays in input order, call the model itself: model(x, ...)")  # fmt: skip
    return feeds


def check_inputs(model: str, specs: Sequence[InputSpec], args: Sequence, kwargs: Mapping
                 ) -> tuple[list[np.ndarray], dict[str, int]]:  # fmt: skip
    """Bind and check every input; returns the arrays and the symbolic dims they bound."""
    dims: dict[str, int] = {}
    xs = bind_args(model, [s.name for s in specs], args, kwargs)
    return [check_array(model, s, x, dims) for s, x in zip(specs, xs)], dims


__all__ = ["InputSpec", "bind_args", "check_array", "check_feeds", "check_inputs", "check_shape"]
