"""`segmentflow.RecomputeMemberships`: a full (or per-segment) recompute fanned out over contact ranges.

Never one workflow per contact: the workflow plans id ranges, runs up to `parallelism` range activities at
once (any worker on the task queue may take one, so more workers finish sooner), and continues-as-new
with the remaining ranges before its history grows large. Each range activity resumes from its durable
cursor, so a worker crash costs at most one page of repeated work and changes nothing twice; a range
heartbeats in the background, so a dead worker's range is retried within its heartbeat timeout (10 s).

A range is tried at most `rangeAttempts` times: a poison range then fails the whole run with a
non-retryable `RecomputeRangeFailed` naming the range and the last error, instead of keeping the run (and
so, under the schedule's overlap policy, every later run) open forever.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.models import (
        FINISH_RECOMPUTE,
        PLAN_RECOMPUTE,
        RECOMPUTE_MEMBERSHIPS,
        RECOMPUTE_RANGE,
        ContactRange,
        FinishRecomputeInput,
        PlanRecomputeInput,
        PlanRecomputeResult,
        RecomputeMembershipsInput,
        RecomputeMembershipsResult,
        RecomputeRangeInput,
        RecomputeRangeResult,
    )

__all__ = ["RANGE_FAILED", "RecomputeMemberships"]

#: `ApplicationError.type` of a run failed by a range that kept failing.
RANGE_FAILED = "RecomputeRangeFailed"

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["SegmentNotFound", "InvalidInput"],
)


def _range_failed(contact_range: ContactRange, attempts: int, exc: ActivityError) -> ApplicationError:
    cause = exc.cause
    detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    first, last = contact_range.first_id, contact_range.last_id
    return ApplicationError(
        f"recompute range {contact_range.index} (contact ids {first}..{last}) failed"
        f" (at most {attempts} attempts): {detail}",
        {"range": contact_range.model_dump(by_alias=True)},
        type=RANGE_FAILED,
        non_retryable=True,
    )


@workflow.defn(name=RECOMPUTE_MEMBERSHIPS)
class RecomputeMemberships:
    @workflow.run
    async def run(self, params: RecomputeMembershipsInput) -> RecomputeMembershipsResult:
        token = params.run_token or str(workflow.uuid4())
        pending = params.pending
        segment_keys = params.planned_segment_keys
        if pending is None:
            plan = await workflow.execute_activity(
                PLAN_RECOMPUTE,
                PlanRecomputeInput(segment_keys=params.segment_keys, range_size=params.range_size),
                result_type=PlanRecomputeResult,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=_RETRY,
            )
            pending, segment_keys = plan.ranges, plan.segment_keys

        counts, done, workers = params.counts, params.ranges_done, set(params.workers)
        now_batch, later = pending[: params.ranges_per_run], pending[params.ranges_per_run :]
        gate = asyncio.Semaphore(params.parallelism)
        range_retry = RetryPolicy(
            initial_interval=_RETRY.initial_interval,
            maximum_interval=_RETRY.maximum_interval,
            maximum_attempts=params.range_attempts,
            non_retryable_error_types=_RETRY.non_retryable_error_types,
        )

        async def run_range(contact_range: ContactRange) -> RecomputeRangeResult:
            async with gate:
                try:
                    result: RecomputeRangeResult = await workflow.execute_activity(
                        RECOMPUTE_RANGE,
                        RecomputeRangeInput(
                            run_token=token,
                            range=contact_range,
                            page_size=params.page_size,
                            segment_keys=segment_keys,
                        ),
                        result_type=RecomputeRangeResult,
                        start_to_close_timeout=timedelta(hours=2),
                        heartbeat_timeout=params.range_heartbeat_timeout,
                        retry_policy=range_retry,
                    )
                except ActivityError as exc:
                    raise _range_failed(contact_range, params.range_attempts, exc) from None
                return result

        for result in await asyncio.gather(*(run_range(r) for r in now_batch)):
            counts = counts.plus(result.counts)
            workers.add(result.worker)
        done += len(now_batch)

        if later:
            workflow.continue_as_new(
                params.model_copy(
                    update={
                        "run_token": token,
                        "pending": later,
                        "planned_segment_keys": segment_keys,
                        "counts": counts,
                        "ranges_done": done,
                        "workers": sorted(workers),
                    }
                )
            )
        await workflow.execute_activity(
            FINISH_RECOMPUTE,
            FinishRecomputeInput(run_token=token),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=_RETRY,
        )
        return RecomputeMembershipsResult(
            contacts=counts.contacts,
            entered=counts.entered,
            exited=counts.exited,
            ranges=done,
            workers=sorted(workers),
        )
