"""segmentflow.workflows: deterministic orchestration and the workflow-side membership helpers.

Imports only pydantic payloads and temporalio: no SQL, HTTP or template libraries enter the sandbox.
"""

from segmentflow.workflows.membership import check_contact_in_segment, is_member, list_contact_segments
from segmentflow.workflows.models import (
    CheckContactInSegmentInput,
    CheckContactInSegmentResult,
    ListContactSegmentsInput,
    ListContactSegmentsResult,
    RecomputeMembershipsInput,
    RecomputeMembershipsResult,
)
from segmentflow.workflows.recompute import RecomputeMemberships
from segmentflow.workflows.sla import TicketSla, WatchSlaMembershipChanges

#: Every workflow class segmentflow registers on a worker.
WORKFLOWS: list[type] = [
    RecomputeMemberships,
    TicketSla,
    WatchSlaMembershipChanges,
]

__all__ = [
    "WORKFLOWS",
    "CheckContactInSegmentInput",
    "CheckContactInSegmentResult",
    "ListContactSegmentsInput",
    "ListContactSegmentsResult",
    "RecomputeMemberships",
    "RecomputeMembershipsInput",
    "RecomputeMembershipsResult",
    "check_contact_in_segment",
    "is_member",
    "list_contact_segments",
]
