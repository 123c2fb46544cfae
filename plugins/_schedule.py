"""Client-side operations: the periodic recompute Schedule, one-off recompute runs, and the schedule's
status (including the runs it skipped)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from segmentflow.workflows.models import (
    RECOMPUTE_MEMBERSHIPS,
    RecomputeMembershipsInput,
    RecomputeMembershipsResult,
)
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
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
from temporalio.service import RPCError, RPCStatusCode

__all__ = [
    "DEFAULT_RECOMPUTE_TIMEOUT",
    "RECOMPUTE_SCHEDULE_ID",
    "RecomputeScheduleStatus",
    "ScheduledRun",
    "ensure_recompute_schedule",
    "recompute_schedule",
    "recompute_schedule_status",
    "start_recompute",
]

RECOMPUTE_SCHEDULE_ID = "segmentflow-recompute"
#: How long one scheduled run may take, continue-as-new included, before the server ends it.
DEFAULT_RECOMPUTE_TIMEOUT = timedelta(hours=1)
#: The server refuses a shorter catch-up window.
_MIN_CATCHUP = timedelta(seconds=10)


def recompute_schedule(
    *,
    task_queue: str,
    every: timedelta,
    params: RecomputeMembershipsInput | None = None,
    timeout: timedelta = DEFAULT_RECOMPUTE_TIMEOUT,
    workflow_id: str = f"{RECOMPUTE_SCHEDULE_ID}-run",
) -> Schedule:
    """Run `segmentflow.RecomputeMemberships` every `every`.

    - A run still going when the next is due is not doubled (overlap SKIP); the skipped ticks are counted
      (`recompute_schedule_status`, `segmentflow recompute --status`).
    - A run that has not finished after `timeout` is ended by the server (execution timeout), so one stuck
      run cannot hold back every later one; a range that keeps failing fails its run sooner (bounded
      retries, `RecomputeRangeFailed` naming the range).
    - Ticks missed while the schedule could not run (a server outage) are caught up for one interval
      only: one catch-up run, not a year's worth.

    Each run's workflow id is `workflow_id` followed by its scheduled time (the server adds it)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECOMPUTE_MEMBERSHIPS,
            params or RecomputeMembershipsInput(),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=timeout,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(every, _MIN_CATCHUP)),
    )


async def ensure_recompute_schedule(
    client: Client,
    *,
    task_queue: str,
    every: timedelta,
    schedule_id: str = RECOMPUTE_SCHEDULE_ID,
    params: RecomputeMembershipsInput | None = None,
    timeout: timedelta = DEFAULT_RECOMPUTE_TIMEOUT,
) -> Literal["created", "updated"]:
    """Create the recompute Schedule, or bring an existing one up to date; a paused schedule stays paused
    (an operator's pause outlives worker restarts)."""
    wanted = recompute_schedule(
        task_queue=task_queue, every=every, params=params, timeout=timeout, workflow_id=f"{schedule_id}-run"
    )
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


async def _describe(client: Client, schedule_id: str) -> ScheduleDescription | None:
    try:
        return await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


#: A run of the schedule: its workflow id (the scheduled time to the second appended) and the run id it
#: started with (two runs triggered within one second share the workflow id).
_Run = tuple[str, str]


def _running(description: ScheduleDescription) -> list[_Run]:
    return [
        (a.workflow_id, a.first_execution_run_id)
        for a in description.info.running_actions
        if isinstance(a, ScheduleActionExecutionStartWorkflow)
    ]


def _started_runs(description: ScheduleDescription) -> list[_Run]:
    """The schedule's recent runs, oldest first."""
    return [
        (result.action.workflow_id, result.action.first_execution_run_id)
        for result in description.info.recent_actions
        if isinstance(result.action, ScheduleActionExecutionStartWorkflow)
    ]


def _run_going_or_new(description: ScheduleDescription, known: Collection[_Run] | None) -> _Run | None:
    """The schedule's run going now, else (given the runs `known` before) a run started since; None:
    neither."""
    running = _running(description)
    if running:
        return running[-1]
    if known is not None:
        for run in reversed(_started_runs(description)):
            if run not in known:
                return run
    return None


async def start_recompute(
    client: Client,
    *,
    task_queue: str,
    segment_keys: Sequence[str] | None = None,
    params: RecomputeMembershipsInput | None = None,
    schedule_id: str = RECOMPUTE_SCHEDULE_ID,
    wait: timedelta = timedelta(seconds=30),
) -> WorkflowHandle[Any, RecomputeMembershipsResult]:
    """Recompute now: every segment, or `segment_keys` and their dependents; a handle to the run.

    Where the recompute Schedule `schedule_id` exists, a manual run never runs beside a scheduled one:
    it is the schedule's own run, the one going (joined) or one triggered now under the schedule's overlap
    policy, so the schedule keeps the two apart. That run recomputes every segment, which covers
    `segment_keys` too. Without a schedule (tests, the demo, a host that schedules its own) the run is
    started directly, and a run already going for the same segments is joined rather than doubled."""
    keys = sorted(segment_keys) if segment_keys is not None else None
    description = await _describe(client, schedule_id)
    if description is not None:
        running = _run_going_or_new(description, None)
        if running is None:
            known = set(_started_runs(description))
            await client.get_schedule_handle(schedule_id).trigger(overlap=ScheduleOverlapPolicy.SKIP)
            deadline = time.monotonic() + wait.total_seconds()
            while running is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the schedule {schedule_id!r} started no recompute within {wait}")
                await asyncio.sleep(0.2)
                latest = await _describe(client, schedule_id)
                running = None if latest is None else _run_going_or_new(latest, known)
        workflow_id, first_run = running
        return client.get_workflow_handle(
            workflow_id, first_execution_run_id=first_run, result_type=RecomputeMembershipsResult
        )
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


@dataclass(frozen=True)
class ScheduledRun:
    workflow_id: str
    scheduled_at: datetime
    started_at: datetime
    #: "RUNNING", "COMPLETED", "FAILED", "TIMED_OUT", ... (None: the run is no longer known).
    status: str | None


@dataclass(frozen=True)
class RecomputeScheduleStatus:
    """What an operator asks of the recompute Schedule: is it running, did its runs end well, and how
    many ticks did it skip (a run still going) or miss (outside the catch-up window)."""

    schedule_id: str
    every: list[timedelta]
    paused: bool
    note: str
    execution_timeout: timedelta | None
    catchup_window: timedelta | None
    skipped_overlap: int
    missed_catchup: int
    runs: int
    running: list[str] = field(default_factory=list)
    recent: list[ScheduledRun] = field(default_factory=list)
    next_runs: list[datetime] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The status as `segmentflow recompute --status` prints it, one fact per line."""
        out = [
            f"schedule: {self.schedule_id}",
            "every: " + ", ".join(str(e) for e in self.every),
            "paused: " + (("yes" + (f" ({self.note})" if self.note else "")) if self.paused else "no"),
            f"execution timeout: {self.execution_timeout or 'none'}",
            f"catch-up window: {self.catchup_window or 'server default'}",
            f"runs started: {self.runs}",
            f"skipped (a run was still going): {self.skipped_overlap}",
            f"missed (outside the catch-up window): {self.missed_catchup}",
            "running: " + (", ".join(self.running) or "none"),
        ]
        for run in self.recent:
            out.append(
                f"recent: {run.workflow_id} scheduled {run.scheduled_at.isoformat()}"
                f" started {run.started_at.isoformat()}: {run.status or 'unknown'}"
            )
        out.extend(f"next: {at.isoformat()}" for at in self.next_runs[:3])
        return out


async def recompute_schedule_status(
    client: Client, *, schedule_id: str = RECOMPUTE_SCHEDULE_ID
) -> RecomputeScheduleStatus | None:
    """The recompute Schedule's status (None: there is no such schedule), with each recent run's end."""
    description = await _describe(client, schedule_id)
    if description is None:
        return None
    schedule, info = description.schedule, description.info
    recent: list[ScheduledRun] = []
    for result in info.recent_actions:
        action = result.action
        if not isinstance(action, ScheduleActionExecutionStartWorkflow):
            continue
        status: str | None
        try:
            described = await client.get_workflow_handle(action.workflow_id).describe()
            status = None if described.status is None else described.status.name
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            status = None
        recent.append(ScheduledRun(action.workflow_id, result.scheduled_at, result.started_at, status))
    start = schedule.action
    return RecomputeScheduleStatus(
        schedule_id=schedule_id,
        every=[i.every for i in schedule.spec.intervals],
        paused=schedule.state.paused,
        note=schedule.state.note or "",
        execution_timeout=start.execution_timeout if isinstance(start, ScheduleActionStartWorkflow) else None,
        catchup_window=schedule.policy.catchup_window,
        skipped_overlap=info.num_actions_skipped_overlap,
        missed_catchup=info.num_actions_missed_catchup_window,
        runs=info.num_actions,
        running=[workflow_id for workflow_id, _ in _running(description)],
        recent=recent,
        next_runs=list(info.next_action_times),
    )
