"""`segmentflow.TicketSla` when a signal and a timer land in one workflow task: time skips to just before
the timer, the worker is held back (stopped), the signal is sent (a pending task locks skipping, so time
runs in real time) and the timer fires meanwhile; the restarted worker's next task carries both."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from segmentflow.workflows.sla import TicketSla
from segmentflow.workflows.sla_models import TicketChange, TicketSlaState
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import Ticket, sla_policy_table
from segmentflow.policies.sla import parse_policies
from segmentflow.services.sla import import_policies
from tests.sla.conftest import WebhookServer
from tests.sla.test_ticket_sla import POLICIES, _events, _eventually, _setup, _start
from tests.temporal.conftest import plugin_client

URGENT = {
    "key": "urgent",
    "conditions": {"priority": ["urgent"]},
    "targets": {"urgent": {"first_reply": "PT15M"}},
    "calendar": "24/7",
}


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
        # The race of a timer and a signal in one workflow task exists with per-ticket timers only (with
        # table timers a solve removes the timers in the plan's transaction: test_sla_timers.py).
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0", timers="workflow")
        warn_at = await _to_just_before(skipping_env, handle)
    # No worker: the signal and the warning timer (48 minutes for vip) both wait for the next task.
    await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
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
        # Per-ticket timers: see above.
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u1", timers="workflow")  # 8 h
        warn_at = await _to_just_before(skipping_env, handle)
    # Standard sets no target for urgent: after the change the ticket has no SLA, and nothing fires.
    await handle.signal(TicketSla.change_signal, TicketChange(priority="urgent"))
    await _until_past(skipping_env, warn_at)
    async with Worker(client, task_queue=task_queue):
        state = await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.priority == "urgent")
        assert state.events == []
        assert _events(engine, ticket_id) == []
        await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
        await asyncio.wait_for(handle.result(), 30)


async def test_a_ticket_reopened_while_its_last_webhooks_are_retried_is_timed_on(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, webhook: WebhookServer
) -> None:
    """Per-ticket timers (`timers="workflow"`): a solved run drains its own notifications first."""
    webhook.status = 500  # the warning's notification is retried for a while
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0", webhook.url, "workflow")
        await skipping_env.sleep(timedelta(minutes=50))  # vip warns at 48 min
        await _eventually(lambda: asyncio.sleep(0, webhook.requests), lambda r: len(r) >= 1)
        await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
        await _eventually(lambda: asyncio.to_thread(_status, engine, ticket_id), lambda s: s == "solved")
        await handle.signal(TicketSla.change_signal, TicketChange(status="open"))  # reopened during the drain
        webhook.status = 200
        await _eventually(lambda: asyncio.to_thread(_status, engine, ticket_id), lambda s: s == "open")
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
        assert (await asyncio.wait_for(handle.result(), 30)).status == "solved"


async def test_a_later_due_time_after_a_breach_breaches_again(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies([URGENT, *POLICIES]), now=datetime.now(UTC))
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u1")  # standard: 8 h
        await handle.signal(TicketSla.change_signal, TicketChange(priority="urgent"))  # urgent: 15 min
        await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "urgent")
        await skipping_env.sleep(timedelta(minutes=16))
        await _eventually(lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2)
        await handle.signal(
            TicketSla.change_signal, TicketChange(priority="normal")
        )  # back to 8 h: not due yet
        state = await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "standard")
        assert not state.metrics["first_reply"].breached and not state.metrics["first_reply"].warned
        await skipping_env.sleep(timedelta(hours=8))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 4
        )
        assert [(e.policy_key, e.kind) for e in events] == [
            ("urgent", "warning"),
            ("urgent", "breach"),
            ("standard", "warning"),
            ("standard", "breach"),
        ]
        await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
        await asyncio.wait_for(handle.result(), 30)


async def test_a_plan_refused_for_good_keeps_the_last_plan_and_plans_again_on_the_next_change(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u1")  # standard
        before = await handle.query(TicketSla.state)
        with engine.begin() as conn:  # a stored policy that no longer loads (edited by hand)
            conn.execute(
                sa.update(sla_policy_table)
                .where(sla_policy_table.c.key == "standard")
                .values(definition={"key": "standard", "targets": {"normal": {"first_reply": "P1Y"}}})
            )
        await handle.signal(TicketSla.change_signal, TicketChange(tags=["x"]))
        await _eventually(lambda: asyncio.to_thread(_tags, engine, ticket_id), lambda t: t is not None)
        await asyncio.sleep(0.5)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        state = await handle.query(TicketSla.state)
        assert state.policy == "standard" and state.metrics == before.metrics  # the last plan holds
        _setup(engine)  # the policies load again
        await handle.signal(TicketSla.change_signal, TicketChange(tags=["y"]))
        await _eventually(lambda: asyncio.to_thread(_tags, engine, ticket_id), lambda t: t == ["y"])
        await handle.signal(TicketSla.change_signal, TicketChange(status="solved"))
        assert (await asyncio.wait_for(handle.result(), 30)).status == "solved"


def _status(engine: Engine, ticket_id: str) -> str | None:
    with Session(engine) as session:
        row = session.get(Ticket, ticket_id)
        return None if row is None else row.status


def _tags(engine: Engine, ticket_id: str) -> list[str] | None:
    with Session(engine) as session:
        row = session.get(Ticket, ticket_id)
        return None if row is None else list(row.tags)
