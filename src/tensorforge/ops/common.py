"""Shape helpers shared by op type rules."""

from __future__ import annotations

from collections.abc import Sequence

from ..ir.graph import Dim
from .registry import InferCtx


def broadcast_shapes(ctx: InferCtx, shapes: Sequence[Sequence[Dim]]) -> tuple[Dim, ...]:
    """numpy-style multidirectional broadcasting, with symbolic dims."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dim: Dim = 1
        for s in shapes:
            j = i - (rank - len(s))
            if j < 0:
                continue
            d = s[j]
            if d == 1:
                continue
            if dim == 1:
                dim = d
            elif d != dim:
                if isinstance(d, int) and isinstance(dim, int):
                    shown = " and ".join(str(list(x)) for x in shapes)
                    ctx.fail(f"shapes {shown} cannot be broadcast (dim {i}: {dim} vs {d})")
                if isinstance(dim, str) and isinstance(d, int):
                    dim = d  # a symbolic dim broadcast against n must be n (or 1)
        out.append(dim)
    return tuple(out)


def norm_axis(ctx: InferCtx, axis: int, rank: int, name: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        ctx.fail(f"{name}={axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def norm_axes(ctx: InferCtx, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    out = tuple(norm_axis(ctx, int(a), rank, "axes") for a in axes)
    if len(set(out)) != len(out):
        ctx.fail(f"axes {list(axes)} repeat an axis")
    return out


def prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n
