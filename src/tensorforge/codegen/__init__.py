"""Code generation: kernel IR -> LLVM IR -> assembly / object code."""

from .targets import Target, get_target, host

__all__ = ["Target", "get_target", "host"]
