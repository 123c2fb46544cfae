"""segmentflow.workflows: deterministic orchestration and the workflow-side membership helpers.

Imports only pydantic payloads and temporalio: no SQL, HTTP or template libraries enter the sandbox.
"""

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
WORKFLOWS: list[type] = [
    RecomputeMemberships,
    HandleMessage,
    RunSequence,
    TicketSla,
    WatchSlaMembershipChanges,
]

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
    "check_contact_in_segment",
    "is_member",
    "list_contact_segments",
    "resolve_message",
]
