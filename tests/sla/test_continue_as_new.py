"""`segmentflow.TicketSla` continues as new past its history cap, handing its state on: policy, clocks
(fulfilled, warned), pauses and the events fired survive, and the timers of the next run fire once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from segmentflow.workflows.sla import TicketSla
from segmentflow.workflows.sla_models import (
    SlaTicket,
    TicketChange,
    TicketReply,
    TicketSlaInput,
    ticket_workflow_id,
)
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.sla.conftest import WebhookServer
from tests.sla.test_ticket_sla import SLACK, _events, _eventually, _setup
from tests.temporal.conftest import plugin_client


async def test_continue_as_new_keeps_the_state_and_fires_each_timer_once(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    ticket_id = f"t-{uuid.uuid4().hex[:8]}"
    created = await skipping_env.get_current_time()
    async with Worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            TicketSla.run,
            TicketSlaInput(
                ticket_id=ticket_id,
                contact_key="u0",  # vip: first reply 1 h, next reply 30 min, resolution 8 h
                ticket=SlaTicket(priority="normal", channel="email", created_at=created),
                history_cap=30,
            ),
            id=ticket_workflow_id(ticket_id),
            task_queue=task_queue,
        )
        first_run = handle.result_run_id
        await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "vip")
        await skipping_env.sleep(timedelta(minutes=50))  # first_reply warns at 48 min
        await _eventually(lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 1)
        await handle.execute_update(TicketSla.reply, TicketReply(by="agent"))
        for tags in (["a"], ["b"], ["c"], ["d"], ["e"], ["f"]):
            await handle.execute_update(TicketSla.change, TicketChange(tags=tags))
        await handle.execute_update(TicketSla.change, TicketChange(status="pending"))
        await handle.execute_update(TicketSla.change, TicketChange(status="open"))

        async def run_id() -> str | None:
            return (await handle.describe()).run_id

        await _eventually(run_id, lambda r: r != first_run)
        state = await _eventually(
            lambda: handle.query(TicketSla.state), lambda s: s.metrics["resolution"].due_at is not None
        )
        first = state.metrics["first_reply"]
        assert state.policy == "vip" and state.status == "open" and not state.paused
        assert first.warned and first.fulfilled_at is not None and not first.breached
        assert state.events == ["first_reply:warning"]
        # The resolution clock runs on in the new run: it warns (6h24m) and breaches (8h) once each.
        await skipping_env.sleep(timedelta(hours=8))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 3
        )
        assert [(e.metric, e.kind) for e in events] == [
            ("first_reply", "warning"),
            ("resolution", "warning"),
            ("resolution", "breach"),
        ]
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        final = await handle.result()
        assert final.events == ["first_reply:warning", "resolution:warning", "resolution:breach"]
        assert final.status == "solved"


async def test_a_full_history_waiting_on_a_failing_webhook_still_fires_on_time(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, webhook: WebhookServer
) -> None:
    webhook.status = 500  # the warning's notification is retried for about an hour
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    ticket_id = f"t-{uuid.uuid4().hex[:8]}"
    created = await skipping_env.get_current_time()
    async with Worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            TicketSla.run,
            TicketSlaInput(
                ticket_id=ticket_id,
                contact_key="u0",
                ticket=SlaTicket(priority="normal", created_at=created),
                webhook_url=webhook.url,
                history_cap=10,  # full from the start: continues as new whenever no notification is in flight
            ),
            id=ticket_workflow_id(ticket_id),
            task_queue=task_queue,
        )
        await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "vip")
        due = created + timedelta(hours=1)
        await skipping_env.sleep(timedelta(minutes=61))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [e.kind for e in events] == ["warning", "breach"]
        assert due <= events[1].fired_at < due + SLACK
        await handle.terminate()
