"""Exceptions raised by tensorforge.

Every error that a user can provoke with a model or an input is a ``TensorforgeError``. Messages name
the model, the node, the op and the expected versus actual values, so that a failure can be traced back
to the model without a debugger.
"""

from __future__ import annotations


class TensorforgeError(Exception):
    """Base class of every error tensorforge raises on purpose."""


class ModelLoadError(TensorforgeError):
    """The model file or proto could not be read (missing, truncated, malformed)."""


class UnsupportedError(TensorforgeError):
    """The model uses ops, attributes or dtypes tensorforge does not implement.

    ``problems`` lists every unsupported node at once, so that a user sees the whole list before
    compiling rather than one failure per attempt.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ShapeError(TensorforgeError):
    """A node's inputs have shapes or dtypes its op does not accept."""


class InvalidAttributeError(ShapeError):
    """A node's attribute has the wrong type, or a value its op does not accept (``group=0``, a string
    where an int belongs). A ShapeError because the model is invalid, not merely unsupported; unlike
    other ShapeErrors it is never deferred until symbolic dims are known: no shape can make it right."""


class NotConstantError(ShapeError):
    """A value that must be known at compile time (a shape, axes, pads) is computed at run time.

    ``input_index`` is the node input that must be constant (set by the op's type rule)."""

    input_index: int | None = None


class InputError(TensorforgeError):
    """A compiled model was called with missing, extra, or mismatched inputs."""


class DataError(InputError):
    """The generated code rejected a value computed from the inputs: an index, a length or a position
    outside its valid range (a run-time check, ``lower/checks.py``). The inputs had the right names, dtypes
    and shapes, so this is found only while running; nothing after the failing check ran, and the outputs of
    the call are not returned. An ``InputError``: the data given caused it."""


class MemoryLimitError(TensorforgeError):
    """A tensor (or a compiled model's tensors together) could never be allocated: larger than this
    machine's memory. Raised from types before any memory is taken, instead of a MemoryError or an OOM kill."""


class TargetError(TensorforgeError):
    """Unknown or unsupported code-generation target."""


class CompileError(TensorforgeError):
    """Lowering or code generation failed for a node (a bug or an unhandled case)."""


class TrainingError(TensorforgeError):
    """A training step could not run (bad labels, non-finite loss, ...)."""


def node_context(model: str | None, node_name: str | None, op: str | None) -> str:
    """A short 'model M, node N (Op)' prefix used at the start of error messages."""
    parts = []
    if model:
        parts.append(f"model '{model}'")
    if node_name is not None or op is not None:
        label = f"node '{node_name}'" if node_name else "node"
        if op:
            label += f" ({op})"
        parts.append(label)
    return ", ".join(parts) if parts else "graph"
