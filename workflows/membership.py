"""Segment membership for workflow code: `await is_member("vip", contact_key)` from any workflow.

Each helper schedules segmentflow's activity by name, with default timeouts and a retry policy (a
database outage is retried; an unknown segment or contact fails at once as a non-retryable
`ApplicationError` of type `SegmentNotFound` / `ContactNotFound`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.models import (
        CHECK_CONTACT_IN_SEGMENT,
        LIST_CONTACT_SEGMENTS,
        CheckContactInSegmentInput,
        CheckContactInSegmentResult,
        ListContactSegmentsInput,
        ListContactSegmentsResult,
    )

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "check_contact_in_segment",
    "is_member",
    "list_contact_segments",
]

DEFAULT_TIMEOUT = timedelta(seconds=10)
DEFAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=["SegmentNotFound", "ContactNotFound", "InvalidInput"],
)


async def check_contact_in_segment(
    contact_key: str,
    *,
    segment_key: str | None = None,
    segment_id: uuid.UUID | None = None,
    context_kind: str | None = None,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta = DEFAULT_TIMEOUT,
    retry_policy: RetryPolicy = DEFAULT_RETRY,
) -> CheckContactInSegmentResult:
    """The Check Contact In Segment step: `isMember`, plus when the membership was last computed."""
    result: CheckContactInSegmentResult = await workflow.execute_activity(
        CHECK_CONTACT_IN_SEGMENT,
        CheckContactInSegmentInput(
            segment_key=segment_key, segment_id=segment_id, contact_key=contact_key, context_kind=context_kind
        ),
        result_type=CheckContactInSegmentResult,
        task_queue=task_queue,
        start_to_close_timeout=start_to_close_timeout,
        retry_policy=retry_policy,
    )
    return result


async def is_member(
    segment_key: str, contact_key: str, *, context_kind: str | None = None, task_queue: str | None = None
) -> bool:
    """Is the contact in the segment? For branching: `if await is_member("vip", contact): ...`."""
    result = await check_contact_in_segment(
        contact_key, segment_key=segment_key, context_kind=context_kind, task_queue=task_queue
    )
    return result.is_member


async def list_contact_segments(
    contact_key: str, *, context_kind: str | None = None, task_queue: str | None = None
) -> list[str]:
    """Sorted keys of every segment the contact belongs to."""
    result: ListContactSegmentsResult = await workflow.execute_activity(
        LIST_CONTACT_SEGMENTS,
        ListContactSegmentsInput(contact_key=contact_key, context_kind=context_kind),
        result_type=ListContactSegmentsResult,
        task_queue=task_queue,
        start_to_close_timeout=DEFAULT_TIMEOUT,
        retry_policy=DEFAULT_RETRY,
    )
    return result.segments
