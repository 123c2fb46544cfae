"""Pure. Small server-rendered SVG charts (no script, no inline style: the console's CSP allows neither)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["series_lines", "sparkline"]


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


def series_lines(
    values: Sequence[float | None],
    *,
    low: float,
    high: float,
    width: int = 240,
    height: int = 48,
) -> list[str]:
    """The polylines of a series on a fixed scale [`low`, `high`] (values outside are clamped): one
    polyline's points per run of known values, so a day with nothing to show (None: no conversations, no
    survey answer) is a gap rather than a drop to zero. A lone known day is drawn as a short tick."""
    span = (high - low) or 1.0
    step = width / max(len(values) - 1, 1)
    pad = 2

    def point(i: int, v: float) -> tuple[float, float]:
        v = min(max(v, low), high)
        return i * step, pad + (height - 2 * pad) * (1 - (v - low) / span)

    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, v in enumerate(values):
        if v is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(point(i, v))
    if current:
        runs.append(current)
    lines = []
    for run in runs:
        if len(run) == 1:
            x, y = run[0]
            left = min(max(x - 3.0, 0.0), width - 6.0)
            run = [(left, y), (left + 6.0, y)]
        lines.append(" ".join(f"{x:.1f},{y:.1f}" for x, y in run))
    return lines
