"""Pure. Evaluation entry points over compiled segments: membership of one context, or all of them."""

from __future__ import annotations

from collections.abc import Mapping

from segmentflow.rules.compile import CompiledSegment, Explanation
from segmentflow.rules.context import Context

__all__ = ["explain", "matches", "matching", "memberships"]


def matches(segment: CompiledSegment, context: Context) -> bool:
    """Is `context` in `segment`? Never raises on context data."""
    return segment.matches(context)


def explain(segment: CompiledSegment, context: Context) -> Explanation:
    """Which target list or rule decided `context`'s membership of `segment`."""
    return segment.explain(context)


def matching(segments: Mapping[str, CompiledSegment], context: Context) -> list[str]:
    """Keys of the segments in `segments` that `context` belongs to, in the mapping's order. Each segment
    is evaluated at most once, also when others reach it through `segmentMatch`."""
    by_kind = context.by_kind
    memo: dict[str, bool] = {}
    out = []
    for key, seg in segments.items():
        result = memo.get(key)
        if result is None:
            result = memo[key] = seg.evaluate(by_kind, memo)
        if result:
            out.append(key)
    return out


def memberships(segments: Mapping[str, CompiledSegment], context: Context) -> list[str]:
    """Sorted keys of every segment in `segments` that `context` belongs to."""
    return sorted(matching(segments, context))
