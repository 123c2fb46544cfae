"""`segmentflow.TicketSla` on the time-skipping server, with the real plugin, database and a local webhook:
warning then breach at the right moments, a reply stops the clock, pending pauses it, and a contact
upgraded to VIP mid-ticket gets the stricter policy through the change-feed watcher."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import pytest
import sqlalchemy as sa
from segmentflow.plugins import SegmentsPlugin, ensure_sla_watch, start_ticket_sla
from segmentflow.workflows.sla import TicketSla, WatchSlaMembershipChanges
from segmentflow.workflows.sla_models import (
    SlaTicket,
    TicketChange,
    TicketReply,
    TicketSlaInput,
    TicketSlaState,
    WatchSlaChangesInput,
    ticket_workflow_id,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from segmentflow.db.tables import Ticket, sla_timer_table
from segmentflow.policies.sla import parse_policies
from segmentflow.services.membership import recompute_all
from segmentflow.services.sla import SlaEventRow, import_policies, last_change_seq, list_events
from tests.sla.conftest import WebhookServer
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load

T = TypeVar("T")

POLICIES: list[dict[str, Any]] = [
    {
        "key": "vip",
        "conditions": {"segments_any": ["vip"]},
        "targets": {"normal": {"first_reply": "PT1H", "next_reply": "PT30M", "resolution": "PT8H"}},
        "calendar": "24/7",
    },
    {
        "key": "standard",
        "targets": {"normal": {"first_reply": "PT8H", "resolution": "PT48H"}},
        "calendar": "24/7",
    },
]
SLACK = timedelta(minutes=2)  # simulated time may run on a little while the test talks to the server


def _setup(engine: Engine) -> None:
    load(engine, contexts(3))  # u0 is on the vip plan, u1 and u2 are not
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies(POLICIES), now=datetime.now().astimezone())


async def _eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Polls in real time (time skipping is locked meanwhile) until `done`; fails after ~20 s."""
    for _ in range(400):
        value = await probe()
        if done(value):
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached; last value: {value!r}")


def _events(engine: Engine, ticket_id: str) -> list[SlaEventRow]:
    with Session(engine) as session:
        return list_events(session=session, ticket_id=ticket_id)


async def _stop_watcher(handle: WorkflowHandle[Any, Any]) -> None:
    """Terminate a watcher once it sleeps between polls: the time-skipping server keeps time locked for
    an activity whose workflow was terminated while the activity ran, so the test's later sleeps could
    not skip."""

    async def sleeping() -> bool:
        history = await handle.fetch_history()
        events = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        started = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
        completed = [e for e in history.events if e.HasField("activity_task_completed_event_attributes")]
        return bool(events) and len(started) == len(completed)

    await _eventually(sleeping, bool)
    await handle.terminate()


async def _start(
    env: WorkflowEnvironment,
    client: Client,
    queue: str,
    contact: str,
    webhook: str | None = None,
    timers: Literal["table", "workflow"] = "table",
) -> tuple[WorkflowHandle[Any, TicketSlaState], str, datetime]:
    ticket_id = f"t-{uuid.uuid4().hex[:8]}"
    created = await env.get_current_time()
    handle = await client.start_workflow(
        TicketSla.run,
        TicketSlaInput(
            ticket_id=ticket_id,
            contact_key=contact,
            ticket=SlaTicket(priority="normal", channel="email", created_at=created),
            webhook_url=webhook,
            timers=timers,
        ),
        id=ticket_workflow_id(ticket_id),
        task_queue=queue,
    )
    await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy is not None)
    return handle, ticket_id, created


async def test_warning_then_breach_fire_at_their_moments_and_reach_the_webhook(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, webhook: WebhookServer
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, created = await _start(skipping_env, client, task_queue, "u0", webhook.url)
        state = await handle.query(TicketSla.state)
        assert state.policy == "vip"
        first = state.metrics["first_reply"]
        assert first.due_at is not None and abs(first.due_at - (created + timedelta(hours=1))) < SLACK
        assert first.warn_at is not None and first.due_at - first.warn_at == timedelta(minutes=12)

        await skipping_env.sleep(timedelta(minutes=40))
        assert _events(engine, ticket_id) == []  # not yet at 80%

        await skipping_env.sleep(timedelta(minutes=10))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 1
        )
        assert [(e.metric, e.kind, e.policy_key, e.segments) for e in events] == [
            ("first_reply", "warning", "vip", ["eu", "vip", "vip-eu"])
        ]
        assert first.warn_at <= events[0].fired_at < first.warn_at + SLACK

        await skipping_env.sleep(timedelta(minutes=15))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [(e.metric, e.kind) for e in events] == [("first_reply", "warning"), ("first_reply", "breach")]
        assert first.due_at <= events[1].fired_at < first.due_at + SLACK
        assert events[1].due_at == first.due_at

        received = await _eventually(lambda: asyncio.sleep(0, webhook.received), lambda r: len(r) >= 2)
        assert [(r["event"], r["ticketId"], r["metric"], r["policy"]) for r in received] == [
            ("sla.warning", ticket_id, "first_reply", "vip"),
            ("sla.breach", ticket_id, "first_reply", "vip"),
        ]
        assert received[1]["segments"] == ["eu", "vip", "vip-eu"] and received[1]["contactKey"] == "u0"
        # The timers fired from the table, not in the workflow: its state shows them from the next plan on.
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        final = await handle.result()
        assert final.status == "solved" and final.events == ["first_reply:warning", "first_reply:breach"]
        assert final.metrics["first_reply"].breached and not final.metrics["resolution"].warned
    # Determinism: the history (timers, local activities, signals, the webhook task) replays cleanly.
    replayer = Replayer(workflows=[], plugins=[SegmentsPlugin(engine=engine)])  # the plugin brings TicketSla
    await replayer.replay_workflow(await handle.fetch_history())


async def test_an_agent_reply_stops_the_first_reply_clock(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0")
        await skipping_env.sleep(timedelta(minutes=20))
        await handle.execute_update(TicketSla.reply, TicketReply(by="agent"))
        state = await _eventually(
            lambda: handle.query(TicketSla.state), lambda s: s.metrics["first_reply"].fulfilled_at is not None
        )
        await skipping_env.sleep(timedelta(hours=2))  # well past the first-reply due time
        state = await handle.query(TicketSla.state)
        assert not state.metrics["first_reply"].warned and not state.metrics["first_reply"].breached
        assert _events(engine, ticket_id) == []

        # A customer writes again: next_reply (30 minutes for vip) starts and breaches unanswered.
        await handle.execute_update(TicketSla.reply, TicketReply(by="customer"))
        state = await _eventually(
            lambda: handle.query(TicketSla.state), lambda s: s.metrics.get("next_reply") is not None
        )
        await skipping_env.sleep(timedelta(minutes=31))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [(e.metric, e.kind) for e in events] == [("next_reply", "warning"), ("next_reply", "breach")]
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()


async def test_pending_pauses_the_clocks_and_moves_the_due_time_on(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, created = await _start(skipping_env, client, task_queue, "u0")
        await skipping_env.sleep(timedelta(minutes=30))
        await handle.execute_update(TicketSla.change, TicketChange(status="pending"))
        await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.paused)
        await skipping_env.sleep(timedelta(hours=3))  # the unpaused due time passes meanwhile
        assert _events(engine, ticket_id) == []

        before = (await handle.query(TicketSla.state)).metrics["first_reply"].due_at
        await handle.execute_update(TicketSla.change, TicketChange(status="open"))
        state = await _eventually(
            lambda: handle.query(TicketSla.state), lambda s: s.metrics["first_reply"].due_at != before
        )
        assert not state.paused
        due = state.metrics["first_reply"].due_at
        assert due is not None
        # 30 minutes were used before the pause; the other 30 run from the end of the 3-hour pause.
        assert abs(due - (created + timedelta(hours=4))) < SLACK
        resolution = state.metrics["resolution"].due_at
        assert resolution is not None and abs(resolution - (created + timedelta(hours=11))) < SLACK

        await skipping_env.sleep(timedelta(minutes=35))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [(e.metric, e.kind) for e in events] == [("first_reply", "warning"), ("first_reply", "breach")]
        assert events[1].due_at == due
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()


async def test_a_contact_upgraded_to_vip_mid_ticket_gets_the_stricter_policy(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    with Session(engine) as session:
        cursor = last_change_seq(session=session)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, created = await _start(skipping_env, client, task_queue, "u1")
        state = await handle.query(TicketSla.state)
        assert state.policy == "standard"
        assert state.metrics["first_reply"].business_minutes == 8 * 60
        await skipping_env.sleep(timedelta(minutes=10))
        # The watcher polls every 200 ms of workflow time, so time is not skipped while it runs.
        watcher = await client.start_workflow(
            WatchSlaMembershipChanges.run,
            WatchSlaChangesInput(after=cursor, poll_interval=timedelta(milliseconds=200)),
            id=f"sla-watch-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        try:
            upgraded = {**contexts(3)[1], "plan": "vip"}
            await asyncio.to_thread(load, engine, [upgraded])
            await asyncio.to_thread(recompute_all, engine)  # u1 enters "vip": a change-feed row

            state = await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "vip")
            due = state.metrics["first_reply"].due_at
            assert due is not None and abs(due - (created + timedelta(hours=1))) < SLACK
            assert state.metrics["first_reply"].business_minutes == 60
            # The re-plan moved the ticket's first-reply timers in the table earlier, to the vip times.
            with engine.connect() as conn:
                t = sla_timer_table.c
                mine = (t.ticket_id == ticket_id) & (t.metric == "first_reply")
                query = sa.select(t.kind, t.fire_at).where(mine)
                moved = dict(conn.execute(query).all())
            assert moved == {"warning": due - timedelta(minutes=12), "breach": due}
        finally:
            await _stop_watcher(watcher)
        await skipping_env.sleep(timedelta(hours=1))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [(e.policy_key, e.kind) for e in events] == [("vip", "warning"), ("vip", "breach")]
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        assert (await handle.result()).policy == "vip"


@pytest.mark.parametrize("status", [404, 500])
async def test_webhook_failures_never_hold_up_the_timers(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str, webhook: WebhookServer, status: int
) -> None:
    webhook.status = status
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, _ = await _start(skipping_env, client, task_queue, "u0", webhook.url)
        planned = (await handle.query(TicketSla.state)).metrics["first_reply"]
        await skipping_env.sleep(timedelta(minutes=65))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [e.kind for e in events] == ["warning", "breach"]
        # The timers fired on time although every notification failed.
        assert planned.warn_at is not None and planned.due_at is not None
        assert planned.warn_at <= events[0].fired_at < planned.warn_at + SLACK
        assert planned.due_at <= events[1].fired_at < planned.due_at + SLACK
        assert webhook.received == []

        def tries(kind: str) -> int:
            return sum(1 for s, _, body in webhook.requests if body["event"] == f"sla.{kind}" and s == status)

        if status == 404:  # final: each notification tried once
            await _eventually(lambda: asyncio.sleep(0, tries("breach")), lambda n: n >= 1)
            assert (tries("warning"), tries("breach")) == (1, 1)
        else:  # 5xx: retried
            await _eventually(lambda: asyncio.sleep(0, tries("breach")), lambda n: n >= 2)
            assert tries("warning") >= 2
        await handle.terminate()


async def test_a_priority_change_selects_the_policy_again(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    urgent = {
        "key": "urgent",
        "conditions": {"priority": ["urgent"]},
        "targets": {"urgent": {"first_reply": "PT15M"}},
        "calendar": "24/7",
    }
    with Session(engine) as session, session.begin():
        import_policies(
            session=session, policies=parse_policies([urgent, *POLICIES]), now=datetime.now().astimezone()
        )
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        handle, ticket_id, created = await _start(skipping_env, client, task_queue, "u1")
        assert (await handle.query(TicketSla.state)).policy == "standard"
        await handle.execute_update(TicketSla.change, TicketChange(priority="urgent"))
        state = await _eventually(lambda: handle.query(TicketSla.state), lambda s: s.policy == "urgent")
        first = state.metrics["first_reply"]
        assert first.business_minutes == 15 and first.due_at is not None
        assert abs(first.due_at - (created + timedelta(minutes=15))) < SLACK
        assert state.metrics["resolution"].due_at is None  # the urgent policy sets no resolution target
        await skipping_env.sleep(timedelta(minutes=16))
        events = await _eventually(
            lambda: asyncio.to_thread(_events, engine, ticket_id), lambda e: len(e) >= 2
        )
        assert [(e.policy_key, e.kind) for e in events] == [("urgent", "warning"), ("urgent", "breach")]
        with Session(engine) as session:
            row = session.get(Ticket, ticket_id)
            assert row is not None and (row.priority, row.policy_key, row.status) == (
                "urgent",
                "urgent",
                "open",
            )
        await handle.execute_update(TicketSla.change, TicketChange(status="solved"))
        await handle.result()
        with Session(engine) as session:
            row = session.get(Ticket, ticket_id)
            assert row is not None and row.status == "solved"


async def test_client_helpers_join_the_running_workflows(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    _setup(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue):
        created = await skipping_env.get_current_time()
        ticket = SlaTicket(priority="normal", created_at=created)
        first = await start_ticket_sla(client, task_queue=task_queue, ticket_id="t-join", ticket=ticket)
        again = await start_ticket_sla(client, task_queue=task_queue, ticket_id="t-join", ticket=ticket)
        assert first.id == again.id == ticket_workflow_id("t-join")
        assert first.result_run_id == again.result_run_id
        watch_id = f"sla-watch-{uuid.uuid4()}"
        one = await ensure_sla_watch(client, task_queue=task_queue, workflow_id=watch_id)
        two = await ensure_sla_watch(client, task_queue=task_queue, workflow_id=watch_id)
        assert one.result_run_id == two.result_run_id
        await _stop_watcher(one)
        await first.execute_update(TicketSla.change, TicketChange(status="solved"))
        assert (await first.result()).policy == "standard"
