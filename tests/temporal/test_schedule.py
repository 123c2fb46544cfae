"""The recompute Schedule: created once, updated idempotently, a pause survives a restart."""

from __future__ import annotations

import uuid
from datetime import timedelta

from segmentflow.plugins import ensure_recompute_schedule
from sqlalchemy.engine import Engine
from temporalio.client import ScheduleActionStartWorkflow, ScheduleIntervalSpec
from temporalio.testing import WorkflowEnvironment

from tests.temporal.conftest import plugin_client


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
