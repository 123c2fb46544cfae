"""`TicketSla`'s `change` and `reply` Updates: the caller gets the planned state or the refusal back, a
field a newer client added is ignored rather than dropping the message, a reply is timed at `at` (clamped
to now), a ticket not yet started is started by the update (update-with-start), and a `RecordSlaEvent`
refused for good is logged without failing the ticket (or, with table timers, blocking the firer)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from segmentflow.plugins import change_ticket_sla, reply_ticket_sla
from segmentflow.workflows.sla import TicketSla
from segmentflow.workflows.sla_models import SlaTicket, TicketChange, TicketReply, TicketSlaState
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import sla_policy_table, sla_timer_table
from tests.sla.conftest import WebhookServer
from tests.sla.test_ticket_sla import SLACK, _events, _eventually, _setup, _start
from tests.temporal.conftest import plugin_client


def _reasons(error: BaseException) -> str:
    """The failure and its causes (a payload that does not decode: "Failed decoding arguments", caused by
    pydantic's error naming the field)."""
    messages: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        messages.append(str(cause))
        cause = getattr(cause, "cause", None) or cause.__cause__
    return " <- ".join(messages)


async def test_a_change_answers_with_the_new_due_times(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, _, _ = await _start(skipping_env, client, task_queue, "u1")  # standard: 8 h first reply
        before = (await handle.query(TicketSla.state)).metrics["first_reply"].due_at
        state = await handle.execute_update(TicketSla.change, TicketChange(status="pending"))
        assert state.paused and state.status == "pending"
        state = await handle.execute_update(TicketSla.change, TicketChange(status="open"))
        assert not state.paused and state.metrics["first_reply"].due_at is not None
        assert before is not None and abs(state.metrics["first_reply"].due_at - before) < SLACK
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        assert (await handle.result()).status == "solved"


async def test_a_field_a_newer_client_added_is_ignored_not_dropped(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, _, _ = await _start(skipping_env, client, task_queue, "u1")
        state = await handle.execute_update(
            "change", {"tags": ["billing"], "assignee": "ana"}, result_type=TicketSlaState
        )
        assert state.status == "open"
        # The deprecated signal (an older client, or a run begun before the Update) is applied too.
        await handle.signal("change", {"priority": "urgent", "assignee": "ana"})
        await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.priority == "urgent")
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"tags": [f"t{i}" for i in range(201)]}, "tags"),
        ({"priority": "sometime"}, "priority"),
        ({"assignee": "ana"}, "names nothing to change"),
    ],
)
async def test_a_bad_change_is_refused_to_the_caller_and_changes_nothing(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, change: dict[str, object], says: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, _, _ = await _start(skipping_env, client, task_queue, "u1")
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update("change", change, result_type=TicketSlaState)
        assert says in _reasons(caught.value)
        state = await handle.query(TicketSla.state)
        assert state.priority == "normal" and state.status == "open"
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()


async def test_a_reply_is_timed_when_the_agent_wrote_it_clamped_to_now(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, created = await _start(skipping_env, client, task_queue, "u0")  # vip: 1 h
        await skipping_env.sleep(timedelta(minutes=70))  # handled after the due time...
        written = created + timedelta(minutes=40)  # ...of a reply written in time
        state = await handle.execute_update(TicketSla.reply, TicketReply(by="agent", at=written))
        first = state.metrics["first_reply"]
        assert first.fulfilled_at == written
        # A customer's message "from the future" starts next_reply now, not then.
        now = await skipping_env.get_current_time()
        later = now + timedelta(days=1)
        state = await handle.execute_update(TicketSla.reply, TicketReply(by="customer", at=later))
        started = state.metrics["next_reply"].started_at
        assert started is not None and now - SLACK < started < now + SLACK
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(
                TicketSla.reply, TicketReply(by="agent", at=created - timedelta(hours=1))
            )
        assert "before the ticket was created" in _reasons(caught.value)
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        final = await handle.result()
    # The breach fired before the late-handled reply (its timer ran first), but the fulfilment is true.
    assert final.metrics["first_reply"].fulfilled_at == written
    assert [(e.metric, e.kind) for e in _events(engine, ticket_id)][:1] == [("first_reply", "warning")]


async def test_a_change_to_a_ticket_not_yet_started_starts_it(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(dev_env, engine)
    ticket_id = f"t-{uuid.uuid4().hex[:8]}"
    ticket = SlaTicket(priority="normal", channel="email", created_at=await dev_env.get_current_time())
    async with Worker(client, task_queue=task_queue):
        state = await reply_ticket_sla(
            client,
            TicketReply(by="agent"),
            task_queue=task_queue,
            ticket_id=ticket_id,
            ticket=ticket,
            contact_key="u0",
        )
        assert state.metrics["first_reply"].fulfilled_at is not None
        state = await change_ticket_sla(
            client, TicketChange(status="solved"), task_queue=task_queue, ticket_id=ticket_id, ticket=ticket
        )
        assert state.status == "solved" and state.policy == "vip"  # the running ticket, joined
        final = await client.get_workflow_handle_for(
            TicketSla.run, f"segmentflow-ticket-sla-{ticket_id}"
        ).result()
        assert final.status == "solved"


async def test_an_sla_event_the_database_refuses_is_logged_and_the_ticket_timed_on(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("a trigger raising a data exception: PostgreSQL's DataError is the final refusal")
    _setup(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION refuse_sla_event() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused' USING ERRCODE = '22000'; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER refuse_sla_event BEFORE INSERT ON sla_event "
                "FOR EACH ROW EXECUTE FUNCTION refuse_sla_event()"
            )
        )
    try:
        client = await plugin_client(skipping_env, engine)
        async with Worker(client, task_queue=task_queue):
            handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0")
            planned = (await handle.query(TicketSla.state)).metrics["first_reply"]
            await skipping_env.sleep(timedelta(minutes=50))  # vip warns at 48 min: refused, logged
            # The firer moves on past the refused warning (its timer is gone; nothing is recorded).
            await _eventually(
                lambda: asyncio.to_thread(_pending_timers, engine, ticket_id),
                lambda kinds: ("first_reply", "warning") not in kinds,
            )
            assert _events(engine, ticket_id) == [] and planned.due_at is not None
            assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            with engine.begin() as conn:
                conn.execute(sa.text("DROP TRIGGER refuse_sla_event ON sla_event"))
            await skipping_env.sleep(timedelta(minutes=15))  # the breach at 60 min is recorded
            events = await _eventually(lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: e)
            assert [(e.metric, e.kind) for e in events] == [("first_reply", "breach")]
            await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
            await handle.result()
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS refuse_sla_event ON sla_event"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS refuse_sla_event()"))


async def test_reopening_while_the_last_webhooks_are_retried_answers_at_once(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, webhook: WebhookServer
) -> None:
    """Per-ticket timers (`timers="workflow"`): a solved run drains its own notifications first."""
    webhook.status = 500  # the warning's notification keeps being retried (for about an hour)
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, _, _ = await _start(skipping_env, client, task_queue, "u0", webhook.url, "workflow")
        await skipping_env.sleep(timedelta(minutes=50))  # vip warns at 48 min
        await _eventually(lambda: asyncio.sleep(0, webhook.requests), lambda r: len(r) >= 1)
        solved = await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        assert solved.status == "solved"
        # The run now waits for the notification; a reopening is planned and answered meanwhile.
        reopened = await asyncio.wait_for(
            handle.execute_update(TicketSla.change, TicketChange(status="open")), 10
        )
        assert reopened.status == "open" and reopened.metrics["resolution"].due_at is not None
        assert all(status == 500 for status, _, _ in webhook.requests)  # still being retried
        webhook.status = 200
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        assert (await asyncio.wait_for(handle.result(), 30)).status == "solved"


async def test_a_change_whose_plan_is_refused_tells_the_caller(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, _, _ = await _start(skipping_env, client, task_queue, "u1")  # standard
        before = await handle.query(TicketSla.state)
        with engine.begin() as conn:  # a stored policy that no longer loads (edited by hand)
            conn.execute(
                sa.update(sla_policy_table)
                .where(sla_policy_table.c.key == "standard")
                .values(definition={"key": "standard", "targets": {"normal": {"first_reply": "P1Y"}}})
            )
        with pytest.raises(WorkflowUpdateFailedError) as caught:
            await handle.execute_update(TicketSla.change, TicketChange(tags=["x"]))
        assert "PlanRefused" in _reasons(caught.value) or "plan was refused" in _reasons(caught.value)
        state = await handle.query(TicketSla.state)
        assert (
            state.metrics == before.metrics
            and (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        )
        _setup(engine)  # the policies load again: the next change plans
        state = await handle.execute_update(TicketSla.change, TicketChange(tags=["y"]))
        assert state.policy == "standard"
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()


def _pending_timers(engine: Engine, ticket_id: str) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        t = sla_timer_table.c
        return {(m, k) for m, k in conn.execute(sa.select(t.metric, t.kind).where(t.ticket_id == ticket_id))}
