"""Payloads of the outbound-sequence activity and runner workflow: frozen pydantic models, camelCase on the
wire. Pure (pydantic only), so workflow code imports it freely."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field
from segmentflow.workflows.models import Payload
from temporalio.common import SearchAttributeKey

__all__ = [
    "PROCESS_SEQUENCE",
    "RUN_SEQUENCE",
    "SA_SEQUENCE_KEY",
    "ProcessSequenceInput",
    "ProcessSequenceResult",
    "RunSequenceInput",
    "RunSequenceResult",
    "SequenceCounts",
    "runner_workflow_id",
]

PROCESS_SEQUENCE = "segmentflow.ProcessSequence"
RUN_SEQUENCE = "segmentflow.RunSequence"
#: Search attribute of `RunSequence` (Keyword; register it on the namespace before turning it on).
SA_SEQUENCE_KEY = SearchAttributeKey.for_keyword("SegmentflowSequenceKey")


def runner_workflow_id(sequence_key: str) -> str:
    """The one runner workflow of a sequence."""
    return f"segmentflow-sequence-{sequence_key}"


class SequenceCounts(Payload):
    entered: int = 0
    exited: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    deferred: int = 0
    completed: int = 0

    def plus(self, other: SequenceCounts) -> SequenceCounts:
        return SequenceCounts(
            **{k: getattr(self, k) + getattr(other, k) for k in SequenceCounts.model_fields}
        )


class ProcessSequenceInput(Payload):
    """One round of a sequence: read its change feed, then send to due enrollments in batches of
    `batchSize` (at most `maxBatches`). `now` is the workflow's clock (the activity never uses an earlier
    time), so waits follow workflow time on a time-skipping server too."""

    sequence_key: str
    now: datetime
    batch_size: int = Field(default=500, ge=1)
    max_batches: int = Field(default=100, ge=1)
    #: Provider calls in flight at once (before any rate limit).
    concurrency: int = Field(default=64, ge=1)
    #: No batch starts after this long: a long (rate-limited) round ends with `more` and the runner
    #: schedules the next one, so no round nears its start-to-close timeout.
    round_time: timedelta = timedelta(minutes=5)
    #: A claimed send's enrollment is not claimed again for this long by another round; a batch's
    #: provider calls are cut at half of it. After a crash the retried attempt of the same round takes
    #: its predecessor's enrollments back at once; only another round waits for the lease to run out.
    lease: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))


class ProcessSequenceResult(Payload):
    #: The sequence's status: the runner stops unless it is "active".
    status: str
    counts: SequenceCounts
    next_due_at: datetime | None
    #: True when the round stopped at `maxBatches` with enrollments still due.
    more: bool


class RunSequenceInput(Payload):
    """Run one sequence until it is paused. The runner sleeps until its next due enrollment, or at most
    `pollInterval` (to enroll contacts who entered the segment); signal `wake` to cut a sleep short."""

    sequence_key: str
    batch_size: int = Field(default=500, ge=1)
    max_batches: int = Field(default=100, ge=1)
    concurrency: int = Field(default=64, ge=1)
    round_time: timedelta = timedelta(minutes=5)
    #: See `ProcessSequenceInput.lease`.
    lease: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))
    poll_interval: timedelta = timedelta(seconds=30)
    #: The round heartbeats in the background (every quarter of this, at most every 5 s) whatever it is
    #: doing, so this bounds how long a dead worker's round goes unnoticed: with the retried attempt
    #: taking back its predecessor's leases at once, sending resumes about this long after a kill.
    heartbeat_timeout: timedelta = Field(default=timedelta(seconds=10), gt=timedelta(0))
    #: Rounds per workflow run before continuing as new (bounds each run's history).
    rounds_per_run: int = Field(default=200, ge=1)
    #: Set the `SegmentflowSequenceKey` search attribute (registered on the namespace) for the Web UI.
    search_attributes: bool = False
    counts: SequenceCounts = SequenceCounts()


class RunSequenceResult(Payload):
    status: str
    counts: SequenceCounts
