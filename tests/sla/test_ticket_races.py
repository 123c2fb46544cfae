"""`segmentflow.TicketSla` when a signal and a timer land in one workflow task: time skips to just before
the timer, the worker is held back (stopped), the signal is sent (a pending task locks skipping, so time
runs in real time) and the timer fires meanwhile; the restarted worker's next task carries both."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from segmentflow.workflows.sla import TicketSla
from segmentflow.workflows.sla_models import TicketChange, TicketSlaState
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import Ticket
from tests.sla.test_ticket_sla import _events, _eventually, _setup, _start
from tests.temporal.conftest import plugin_client


async def _to_just_before(env: WorkflowEnvironment, handle: WorkflowHandle[Any, TicketSlaState]) -> datetime:
    """Skip to 3 s before the next warning; returns that warning time."""
    state = await handle.query(TicketSla.state)
    warn_at = state.metrics["first_reply"].warn_at
    assert warn_at is not None
    await env.sleep(warn_at - await env.get_current_time() - timedelta(seconds=3))
    return warn_at


async def _until_past(env: WorkflowEnvironment, moment: datetime) -> None:
    await _eventually(env.get_current_time, lambda now: now > moment + timedelta(seconds=1))


async def test_solved_with_a_due_timer_in_one_task_records_nothing_and_stores_solved(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue, max_cached_workflows=0):  # no sticky queue
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0")
        warn_at = await _to_just_before(skipping_env, handle)
    # No worker: the signal and the warning timer (48 minutes for vip) both wait for the next task.
    await handle.signal(TicketSla.change, TicketChange(status="solved"))
    await _until_past(skipping_env, warn_at)
    async with Worker(client, task_queue=task_queue):
        final = await asyncio.wait_for(handle.result(), 30)
    assert final.status == "solved" and final.events == []
    assert _events(engine, ticket_id) == []
    with Session(engine) as session:
        row = session.get(Ticket, ticket_id)
        assert row is not None and row.status == "solved"


async def test_a_priority_change_with_a_due_timer_in_one_task_fires_on_the_new_policy_only(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue, max_cached_workflows=0):  # no sticky queue
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u1")  # standard: PT8H
        warn_at = await _to_just_before(skipping_env, handle)
    # Standard sets no target for urgent: after the change the ticket has no SLA, and nothing fires.
    await handle.signal(TicketSla.change, TicketChange(priority="urgent"))
    await _until_past(skipping_env, warn_at)
    async with Worker(client, task_queue=task_queue):
        state = await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.priority == "urgent")
        assert state.events == []
        assert _events(engine, ticket_id) == []
        await handle.signal(TicketSla.change, TicketChange(status="solved"))
        await asyncio.wait_for(handle.result(), 30)
