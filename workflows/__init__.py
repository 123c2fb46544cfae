"""segmentflow.workflows: deterministic orchestration and the workflow-side membership helpers.

Imports only pydantic payloads and temporalio: no SQL, HTTP or template libraries enter the sandbox.

The names below load lazily (PEP 562): the sandbox imports a workflow's module afresh for each workflow
instance, parent package included, so importing `segmentflow.workflows.sla` must not execute every other
workflow module as well (bench/sandbox.py measures it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segmentflow.workflows.membership import check_contact_in_segment, is_member, list_contact_segments
    from segmentflow.workflows.messages import HandleMessage, resolve_message
    from segmentflow.workflows.models import (
        CheckContactInSegmentInput,
        CheckContactInSegmentResult,
        ListContactSegmentsInput,
        ListContactSegmentsResult,
        RecomputeMembershipsInput,
        RecomputeMembershipsResult,
    )
    from segmentflow.workflows.recompute import RecomputeMemberships
    from segmentflow.workflows.sequence_models import RunSequenceInput, RunSequenceResult
    from segmentflow.workflows.sequences import RunSequence
    from segmentflow.workflows.sla import TicketSla, WatchSlaMembershipChanges

    #: Every workflow class segmentflow registers on a worker.
    WORKFLOWS: list[type]

__all__ = [
    "WORKFLOWS",
    "CheckContactInSegmentInput",
    "CheckContactInSegmentResult",
    "HandleMessage",
    "ListContactSegmentsInput",
    "ListContactSegmentsResult",
    "RecomputeMemberships",
    "RecomputeMembershipsInput",
    "RecomputeMembershipsResult",
    "RunSequence",
    "RunSequenceInput",
    "RunSequenceResult",
    "TicketSla",
    "WatchSlaMembershipChanges",
    "check_contact_in_segment",
    "is_member",
    "list_contact_segments",
    "resolve_message",
]

_HOME = {
    "check_contact_in_segment": "membership",
    "is_member": "membership",
    "list_contact_segments": "membership",
    "HandleMessage": "messages",
    "resolve_message": "messages",
    "CheckContactInSegmentInput": "models",
    "CheckContactInSegmentResult": "models",
    "ListContactSegmentsInput": "models",
    "ListContactSegmentsResult": "models",
    "RecomputeMembershipsInput": "models",
    "RecomputeMembershipsResult": "models",
    "RecomputeMemberships": "recompute",
    "RunSequenceInput": "sequence_models",
    "RunSequenceResult": "sequence_models",
    "RunSequence": "sequences",
    "TicketSla": "sla",
    "WatchSlaMembershipChanges": "sla",
}


def __getattr__(name: str) -> Any:
    if name == "WORKFLOWS":
        value: Any = [
            __getattr__(n)
            for n in (
                "RecomputeMemberships",
                "HandleMessage",
                "RunSequence",
                "TicketSla",
                "WatchSlaMembershipChanges",
            )
        ]
    elif name in _HOME:
        # `__import__`, not importlib: the workflow sandbox intercepts this one.
        module = __import__(f"segmentflow.workflows.{_HOME[name]}", fromlist=[name])
        value = getattr(module, name)
    else:
        raise AttributeError(f"module 'segmentflow.workflows' has no attribute {name!r}")
    globals()[name] = value
    return value
