"""Pure. Small server-rendered SVG charts (no script, no inline style: the console's CSP allows neither)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["sparkline"]


def sparkline(values: Sequence[int], *, width: int = 120, height: int = 28) -> str:
    """The points of a polyline for `values`, scaled into a `width` x `height` box (the template draws it,
    so every number goes through autoescaping like everything else)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = width / max(len(values) - 1, 1)
    pad = 2
    points = [
        f"{i * step:.1f},{pad + (height - 2 * pad) * (1 - (v - low) / span):.1f}"
        for i, v in enumerate(values)
    ]
    return " ".join(points)
