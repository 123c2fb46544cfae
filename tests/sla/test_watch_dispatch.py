"""The SLA watcher on the dev server: signals go out many at a time, progress is heartbeated (a retry
carries on after the contacts already done), a ticket the server refuses for good is skipped and counted
while every other ticket still gets its signal, and a dispatch refused for good does not stop the
watcher."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from segmentflow.activities.sla import SIGNAL_CONCURRENCY, SlaActivities
from segmentflow.plugins import PASSTHROUGH_MODULES
from segmentflow.workflows import WatchSlaMembershipChanges
from segmentflow.workflows.sla_models import (
    DISPATCH_SLA_MEMBERSHIP_CHANGES,
    DispatchSlaChangesInput,
    DispatchSlaChangesResult,
    WatchSlaChangesInput,
)
from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from segmentflow.db.tables import change_table, ticket_table
from segmentflow.services.membership import recompute_all
from tests.sla.test_ticket_sla import _setup
from tests.temporal.helpers import load

CONTACTS = SIGNAL_CONCURRENCY + 8  # more than one group of signals


def _ticket(contact: str, workflow_id: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": f"t-{contact}",
        "contact_key": contact,
        "workflow_id": workflow_id,
        "priority": "normal",
        "tags": [],
        "status": "open",
        "created_at": now,
        "updated_at": now,
    }


async def _targets(env: WorkflowEnvironment, n: int) -> list[WorkflowHandle[Any, Any]]:
    """Running workflows standing in for tickets' `TicketSla` (no worker polls their queue: the server
    takes their signals all the same)."""
    queue = f"idle-{uuid.uuid4()}"
    return list(
        await asyncio.gather(
            *(
                env.client.start_workflow("NoWorker", id=f"sla-t-{uuid.uuid4()}", task_queue=queue)
                for _ in range(n)
            )
        )
    )


async def _signals(handle: WorkflowHandle[Any, Any]) -> int:
    count = 0
    async for event in handle.fetch_history_events():
        count += event.HasField("workflow_execution_signaled_event_attributes")
    return count


async def test_dispatch_signals_every_open_ticket_and_skips_one_the_server_refuses(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    _setup(engine)
    people = [{"kind": "user", "key": f"w{i:02d}", "plan": "free"} for i in range(CONTACTS)]
    load(engine, people)
    recompute_all(engine)
    targets = await _targets(dev_env, CONTACTS)
    rows = [_ticket(p["key"], t.id) for p, t in zip(people, targets, strict=True)]
    rows[5]["workflow_id"] = ""  # a value the server refuses for good (no workflow id)
    with engine.begin() as conn:
        conn.execute(sa.insert(ticket_table), rows)
    activities = SlaActivities(engine)
    env = ActivityEnvironment(client=dev_env.client)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0] if details else None)
    params = DispatchSlaChangesInput(watch_id=f"w-{uuid.uuid4()}", after=None, limit=1000)
    try:
        await env.run(activities.dispatch_sla_membership_changes, params)  # places the cursor
        load(engine, [{**p, "plan": "vip"} for p in people])  # every contact enters "vip"
        recompute_all(engine)
        moved = await env.run(activities.dispatch_sla_membership_changes, params)
        assert (moved.changes, moved.signalled, moved.failed) == (CONTACTS, CONTACTS - 1, 1)
        counts = await asyncio.gather(*(_signals(t) for t in targets))
        assert counts == [0 if i == 5 else 1 for i in range(CONTACTS)]
        # Progress after each group of signals: the feed position of its last contact.
        with engine.connect() as conn:
            last = conn.scalar(sa.select(sa.func.max(change_table.c.seq)))
        progress = [b for b in beats if isinstance(b, int)]
        assert len(progress) == 2 and progress[-1] == last
        assert moved.next_after == last
    finally:
        await asyncio.gather(*(t.terminate() for t in targets))


async def test_a_retried_dispatch_carries_on_after_the_heartbeated_contacts(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    _setup(engine)
    people = [{"kind": "user", "key": f"r{i}", "plan": "free"} for i in range(3)]
    load(engine, people)
    recompute_all(engine)
    targets = await _targets(dev_env, 3)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ticket_table), [_ticket(p["key"], t.id) for p, t in zip(people, targets, strict=True)]
        )
    activities = SlaActivities(engine)
    env = ActivityEnvironment(client=dev_env.client)
    params = DispatchSlaChangesInput(watch_id=f"w-{uuid.uuid4()}", after=None, limit=1000)
    try:
        await env.run(activities.dispatch_sla_membership_changes, params)
        for p in people:  # one after the other: each contact's change has its own place in the feed
            load(engine, [{**p, "plan": "vip"}])
            recompute_all(engine)
        with engine.connect() as conn:
            seqs = list(conn.scalars(sa.select(change_table.c.seq).order_by(change_table.c.seq)))
        # The attempt that died had heartbeated the first two contacts as done.
        env.info = dataclasses.replace(env.info, heartbeat_details=[seqs[-2]])
        moved = await env.run(activities.dispatch_sla_membership_changes, params)
        assert (moved.changes, moved.signalled) == (3, 1)
        assert await asyncio.gather(*(_signals(t) for t in targets)) == [0, 0, 1]
    finally:
        await asyncio.gather(*(t.terminate() for t in targets))


async def test_the_watcher_keeps_watching_after_a_dispatch_is_refused_for_good(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    calls: list[int | None] = []

    @activity.defn(name=DISPATCH_SLA_MEMBERSHIP_CHANGES)
    async def dispatch(params: DispatchSlaChangesInput) -> DispatchSlaChangesResult:
        calls.append(params.after)
        if len(calls) == 1:
            raise ApplicationError("a stored policy no longer loads", type="InvalidInput", non_retryable=True)
        return DispatchSlaChangesResult(next_after=7, changes=0, signalled=0)

    # The real watcher with the dispatch replaced by name (no plugin: it registers the real one).
    client = Client(**{**dev_env.client.config(), "data_converter": pydantic_data_converter})
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[WatchSlaMembershipChanges],
        activities=[dispatch],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
        ),
    )
    async with worker:
        handle = await client.start_workflow(
            WatchSlaMembershipChanges.run,
            WatchSlaChangesInput(after=3, poll_interval=timedelta(seconds=1), polls_per_run=3),
            id=f"watch-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        try:
            for _ in range(200):
                if len(calls) >= 3:
                    break
                await asyncio.sleep(0.05)
        finally:
            await handle.terminate()
    # Refused, then tried again from the same place, then on from where that dispatch got to.
    assert calls[:3] == [3, 3, 7]
