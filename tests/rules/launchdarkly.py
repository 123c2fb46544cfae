"""The oracle: LaunchDarkly's own Python SDK evaluator deciding segment membership for our JSON.

A segment is probed through a flag whose single rule is `segmentMatch [key]`, evaluated by
`ldclient.impl.evaluator.Evaluator` exactly as the SDK does (no big segments configured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ldclient import Context
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.events.types import EventFactory
from ldclient.impl.model import FeatureFlag, Segment

__all__ = ["LaunchDarklyError", "ld_context", "ld_is_member"]

_EVENTS = EventFactory(False)


class LaunchDarklyError(Exception):
    """The SDK reported an evaluation error (its `errorKind`) instead of a value."""


def ld_context(data: Mapping[str, Any]) -> Context:
    ctx = Context.from_dict(dict(data))
    if not ctx.valid:
        raise LaunchDarklyError(f"invalid context: {ctx.error}")
    return ctx


def _probe(segment_key: Any) -> FeatureFlag:
    return FeatureFlag(
        {
            "key": "segment-probe",
            "version": 1,
            "on": True,
            "variations": [False, True],
            "offVariation": 0,
            "fallthrough": {"variation": 0},
            "rules": [
                {
                    "id": "probe",
                    "variation": 1,
                    "clauses": [{"attribute": "", "op": "segmentMatch", "values": [segment_key]}],
                }
            ],
        }
    )


def ld_is_member(segment_key: str, segments: Iterable[Mapping[str, Any]], context: Mapping[str, Any]) -> bool:
    """Is `context` in segment `segment_key` according to the SDK? Raises `LaunchDarklyError` on an
    evaluation error (a `segmentMatch` cycle, a malformed attribute reference)."""
    by_key = {s["key"]: Segment({"version": 1, **s}) for s in segments}
    evaluator = Evaluator(lambda key: None, by_key.get, lambda key: (None, "NOT_CONFIGURED"))
    detail = evaluator.evaluate(_probe(segment_key), ld_context(context), _EVENTS).detail
    assert detail is not None
    if detail.reason["kind"] == "ERROR":
        raise LaunchDarklyError(detail.reason["errorKind"])
    return bool(detail.value)
