"""What uses a segment: the segments depending on it through `segmentMatch`, the sequences targeting it,
the SLA policies naming it, and the actions and instructions restricted to it. Reads only; never commits."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from segmentflow.services.messages import list_actions, list_instructions
from segmentflow.services.segments import dependents_of, list_segments
from segmentflow.services.sequences import list_sequences
from segmentflow.services.sla import list_policies

__all__ = ["SegmentUsage", "segment_usage"]


@dataclass(frozen=True, slots=True)
class SegmentUsage:
    dependants: list[str]
    sequences: list[str]
    sla_policies: list[str]
    actions: list[str]
    instructions: list[str]


def segment_usage(*, session: Session, key: str) -> SegmentUsage:
    """Everything that refers to segment `key` (each list sorted; dependants are transitive)."""
    segments = [r.definition_model() for r in list_segments(session=session)]
    policies = [
        p.key
        for p in list_policies(session=session)
        if key in p.conditions.segments_any | p.conditions.segments_all | p.conditions.segments_none
    ]
    return SegmentUsage(
        dependants=sorted(dependents_of(segments, [key]) - {key}),
        sequences=sorted(s.key for s in list_sequences(session=session) if s.segment_key == key),
        sla_policies=policies,
        actions=sorted(a.key for a in list_actions(session=session) if key in a.restricted_to_segments),
        instructions=sorted(
            i.key for i in list_instructions(session=session) if key in i.restricted_to_segments
        ),
    )
