"""`segmentflow.RunSequence`: one runner workflow per sequence, never one per contact.

Each round is one heartbeating activity that reads the segment's change feed (enrolling entrants, exiting
leavers) and sends to every due enrollment in batches (re-reading membership right before each batch of
sends). Between rounds the runner sleeps until the next enrollment is due, or at most `pollInterval`, or
until signalled `wake`; it stops when the sequence is no longer active and continues-as-new every
`roundsPerRun` rounds.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.sequence_models import (
        PROCESS_SEQUENCE,
        RUN_SEQUENCE,
        SA_SEQUENCE_KEY,
        ProcessSequenceInput,
        ProcessSequenceResult,
        RunSequenceInput,
        RunSequenceResult,
    )

__all__ = ["RunSequence"]

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["SequenceNotFound", "InvalidInput"],
)


@workflow.defn(name=RUN_SEQUENCE)
class RunSequence:
    def __init__(self) -> None:
        self._woken = False

    @workflow.signal(name="wake")
    def wake(self) -> None:
        """Run a round now (new members, a pause): sent by `segmentflow sequences launch/pause`."""
        self._woken = True

    @workflow.run
    async def run(self, params: RunSequenceInput) -> RunSequenceResult:
        if params.search_attributes:  # each run: a continued run is found by the key too
            workflow.upsert_search_attributes([SA_SEQUENCE_KEY.value_set(params.sequence_key)])
        counts = params.counts
        for _ in range(params.rounds_per_run):
            self._woken = False
            result: ProcessSequenceResult = await workflow.execute_activity(
                PROCESS_SEQUENCE,
                ProcessSequenceInput(
                    sequence_key=params.sequence_key,
                    now=workflow.now(),
                    batch_size=params.batch_size,
                    max_batches=params.max_batches,
                    concurrency=params.concurrency,
                    round_time=params.round_time,
                    lease=params.lease,
                ),
                result_type=ProcessSequenceResult,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=params.heartbeat_timeout,
                retry_policy=_RETRY,
            )
            counts = counts.plus(result.counts)
            if result.status != "active":
                return RunSequenceResult(status=result.status, counts=counts)
            if result.more or self._woken:
                continue
            delay = params.poll_interval
            if result.next_due_at is not None:
                delay = min(delay, max(result.next_due_at - workflow.now(), timedelta(0)))
            if delay > timedelta(0):
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._woken, timeout=delay)
        workflow.continue_as_new(params.model_copy(update={"counts": counts}))
