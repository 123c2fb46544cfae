"""Client-side operations: the periodic recompute Schedule and one-off recompute runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from segmentflow.workflows.models import (
    RECOMPUTE_MEMBERSHIPS,
    RecomputeMembershipsInput,
    RecomputeMembershipsResult,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy

__all__ = ["RECOMPUTE_SCHEDULE_ID", "ensure_recompute_schedule", "recompute_schedule", "start_recompute"]

RECOMPUTE_SCHEDULE_ID = "segmentflow-recompute"


def recompute_schedule(
    *, task_queue: str, every: timedelta, params: RecomputeMembershipsInput | None = None
) -> Schedule:
    """Run `segmentflow.RecomputeMemberships` every `every`; a run still going when the next is due is not
    doubled (overlap SKIP)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECOMPUTE_MEMBERSHIPS,
            params or RecomputeMembershipsInput(),
            id=f"{RECOMPUTE_SCHEDULE_ID}-run",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_recompute_schedule(
    client: Client,
    *,
    task_queue: str,
    every: timedelta,
    schedule_id: str = RECOMPUTE_SCHEDULE_ID,
    params: RecomputeMembershipsInput | None = None,
) -> Literal["created", "updated"]:
    """Create the recompute Schedule, or bring an existing one up to date; a paused schedule stays paused
    (an operator's pause outlives worker restarts)."""
    wanted = recompute_schedule(task_queue=task_queue, every=every, params=params)
    try:
        await client.create_schedule(schedule_id, wanted)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def keep_state(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        wanted.state = ScheduleState(note=state.note, paused=state.paused)
        return ScheduleUpdate(schedule=wanted)

    await client.get_schedule_handle(schedule_id).update(keep_state)
    return "updated"


async def start_recompute(
    client: Client,
    *,
    task_queue: str,
    segment_keys: Sequence[str] | None = None,
    params: RecomputeMembershipsInput | None = None,
) -> WorkflowHandle[object, RecomputeMembershipsResult]:
    """Recompute now: every segment, or `segment_keys` and their dependents. A run already going for the
    same segments is joined rather than doubled."""
    keys = sorted(segment_keys) if segment_keys is not None else None
    params = (params or RecomputeMembershipsInput()).model_copy(update={"segment_keys": keys})
    suffix = "all" if keys is None else "segments-" + ",".join(keys)
    return await client.start_workflow(
        RECOMPUTE_MEMBERSHIPS,
        params,
        id=f"segmentflow-recompute-{suffix}",
        task_queue=task_queue,
        result_type=RecomputeMembershipsResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
