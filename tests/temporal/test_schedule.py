"""The recompute Schedule: created once, updated idempotently, a pause survives a restart; each run is
bounded (execution timeout, bounded range retries), a manual run never overlaps a scheduled one, and the
ticks it skipped are counted."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from segmentflow.activities import MembershipActivities
from segmentflow.plugins import (
    PASSTHROUGH_MODULES,
    RECOMPUTE_SCHEDULE_ID,
    ensure_recompute_schedule,
    recompute_schedule_status,
    start_recompute,
)
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from segmentflow.workflows.models import RECOMPUTE_RANGE, RecomputeRangeInput, RecomputeRangeResult
from segmentflow.workflows.recompute import RANGE_FAILED
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    WorkflowFailureError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load


async def test_schedule_creation_twice_is_idempotent_and_keeps_a_pause(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = await plugin_client(dev_env, engine)
    schedule_id = f"segmentflow-recompute-{uuid.uuid4()}"
    first = await ensure_recompute_schedule(
        client, task_queue=task_queue, every=timedelta(minutes=5), schedule_id=schedule_id
    )
    handle = client.get_schedule_handle(schedule_id)
    await handle.pause(note="maintenance")
    second = await ensure_recompute_schedule(
        client, task_queue=task_queue, every=timedelta(minutes=7), schedule_id=schedule_id
    )
    description = await handle.describe()
    try:
        assert (first, second) == ("created", "updated")
        assert description.schedule.state.paused and description.schedule.state.note == "maintenance"
        spec = description.schedule.spec.intervals[0]
        assert isinstance(spec, ScheduleIntervalSpec) and spec.every == timedelta(minutes=7)
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "segmentflow.RecomputeMemberships" and action.task_queue == task_queue
    finally:
        await handle.delete()


async def test_schedule_bounds_each_run_and_catches_up_one_interval_only(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = await plugin_client(dev_env, engine)
    schedule_id = f"segmentflow-recompute-{uuid.uuid4()}"
    await ensure_recompute_schedule(
        client,
        task_queue=task_queue,
        every=timedelta(minutes=5),
        schedule_id=schedule_id,
        timeout=timedelta(minutes=40),
    )
    handle = client.get_schedule_handle(schedule_id)
    try:
        description = await handle.describe()
        action = description.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.execution_timeout == timedelta(minutes=40)
        assert action.id == f"{schedule_id}-run"
        assert description.schedule.policy.catchup_window == timedelta(minutes=5)
        assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    finally:
        await handle.delete()


async def test_manual_recompute_joins_or_triggers_the_scheduled_run_and_skips_are_counted(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(30))
    client = await plugin_client(dev_env, engine)
    schedule_id = f"segmentflow-recompute-{uuid.uuid4()}"
    # An hourly schedule: no tick of its own during the test, only the runs asked for here.
    await ensure_recompute_schedule(
        client, task_queue=task_queue, every=timedelta(hours=1), schedule_id=schedule_id
    )
    handle = client.get_schedule_handle(schedule_id)
    try:
        # No worker yet: the triggered run stays open, so every later ask meets it.
        first = await start_recompute(client, task_queue=task_queue, schedule_id=schedule_id)
        again = await start_recompute(client, task_queue=task_queue, schedule_id=schedule_id)
        some = await start_recompute(
            client, task_queue=task_queue, segment_keys=["vip"], schedule_id=schedule_id
        )
        assert first.id.startswith(f"{schedule_id}-run")
        assert again.id == some.id == first.id
        assert again.first_execution_run_id == some.first_execution_run_id == first.first_execution_run_id
        await handle.trigger()  # a tick while the run is going: skipped, and counted
        await _described(handle, lambda d: d.info.num_actions_skipped_overlap == 1)
        async with Worker(client, task_queue=task_queue):
            result = await first.result()
        assert result.contacts == 31
        status = await recompute_schedule_status(client, schedule_id=schedule_id)
        assert status is not None
        assert (status.runs, status.skipped_overlap, status.running) == (1, 1, [])
        assert [(r.workflow_id, r.status) for r in status.recent] == [(first.id, "COMPLETED")]
        assert "skipped (a run was still going): 1" in status.lines()
        # No run going: a recompute of some segments is a scheduled run too (of every segment).
        some = await start_recompute(
            client, task_queue=task_queue, segment_keys=["vip"], schedule_id=schedule_id
        )
        assert some.id.startswith(f"{schedule_id}-run")
        assert some.first_execution_run_id not in (None, first.first_execution_run_id)
        async with Worker(client, task_queue=task_queue):
            assert (await some.result()).contacts == 31
    finally:
        await handle.delete()


async def test_a_range_that_keeps_failing_fails_the_run_naming_the_range(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(30))
    real = MembershipActivities(engine)
    tries: list[int] = []

    @activity.defn(name=RECOMPUTE_RANGE)
    async def poisoned(params: RecomputeRangeInput) -> RecomputeRangeResult:
        if params.range.index == 1:
            tries.append(activity.info().attempt)
            raise RuntimeError("poisoned contact")
        return await real.recompute_range(params)

    # The real workflow and activities, with the range activity replaced by name (no plugin: it would
    # register the real one under the same name).
    client = Client(**{**dev_env.client.config(), "data_converter": pydantic_data_converter})
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[RecomputeMemberships],
        activities=[real.plan_recompute, poisoned, real.finish_recompute],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
        ),
    )
    async with worker:
        handle = await client.start_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(range_size=10, range_attempts=3),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=60)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    assert cause.type == RANGE_FAILED and cause.non_retryable
    assert "recompute range 1 (contact ids " in cause.message
    assert "poisoned contact" in cause.message
    assert tries == [1, 2, 3]


async def _described(handle: ScheduleHandle, check: Callable[[ScheduleDescription], bool]) -> None:
    """Wait (at most 10 s) for the schedule's description to pass `check`: triggers act asynchronously."""
    for _ in range(100):
        if check(await handle.describe()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the schedule never got there")


async def _status_command(env: WorkflowEnvironment) -> tuple[int, str, str]:
    environment = {**os.environ, "SEGMENTFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "segmentflow.cli",
        "recompute",
        "--status",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_recompute_status_command_prints_the_schedule_and_its_skipped_runs(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    code, _, err = await _status_command(dev_env)
    assert code == 2 and "no recompute schedule" in err
    client = await plugin_client(dev_env, engine)
    await ensure_recompute_schedule(client, task_queue=task_queue, every=timedelta(hours=1))
    handle = client.get_schedule_handle(RECOMPUTE_SCHEDULE_ID)
    try:
        await handle.trigger()  # no worker on the queue: this run stays open...
        await _described(handle, lambda d: bool(d.info.running_actions))
        await handle.trigger()  # ...so this tick is skipped
        await _described(handle, lambda d: d.info.num_actions_skipped_overlap == 1)
        code, out, err = await _status_command(dev_env)
    finally:
        await handle.delete()
    assert code == 0, err
    lines = out.splitlines()
    assert "schedule: segmentflow-recompute" in lines
    assert "every: 1:00:00" in lines
    assert "execution timeout: 1:00:00" in lines
    assert "catch-up window: 1:00:00" in lines
    assert "skipped (a run was still going): 1" in lines
    assert any(line.startswith("running: segmentflow-recompute-run") for line in lines)
