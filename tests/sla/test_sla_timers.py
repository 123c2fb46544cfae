"""SLA timers kept in `sla_timer` on SQLite and PostgreSQL: a plan writes, moves and removes a ticket's
timers; two firers claiming at once record each timer exactly once; a round that crashes leaves its timers
due; a claimed webhook try is retaken once its lease runs out; and a firing round finishes while a webhook
endpoint hangs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from segmentflow.activities.sla import SlaActivities
from segmentflow.workflows.sla_models import FireDueSlaTimersInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import ActivityEnvironment

from segmentflow.db.tables import sla_event_table, sla_timer_table
from segmentflow.policies.sla import TicketFacts, parse_policies
from segmentflow.services.sla import import_policies, list_events, plan_ticket
from segmentflow.services.sla_timers import SLOTS, claim_webhooks, fire_due, settle_webhook

NOW = datetime(2026, 11, 27, 10, tzinfo=UTC)
POLICIES: list[dict[str, Any]] = [
    {
        "key": "urgent",
        "conditions": {"priority": ["urgent"]},
        "targets": {"urgent": {"first_reply": "PT15M"}},
        "calendar": "24/7",
    },
    {
        "key": "standard",
        "targets": {"normal": {"first_reply": "PT1H", "resolution": "PT8H"}},
        "calendar": "24/7",
    },
]
ALL_SLOTS = list(range(SLOTS))


@pytest.fixture
def policies(engine: Engine) -> Engine:
    with Session(engine) as session, session.begin():
        import_policies(session=session, policies=parse_policies(POLICIES), now=NOW)
    return engine


def _plan(
    engine: Engine,
    ticket_id: str,
    *,
    status: str = "open",
    priority: str = "normal",
    created: datetime = NOW,
    now: datetime = NOW,
    webhook: str | None = None,
) -> None:
    with Session(engine) as session, session.begin():
        plan_ticket(
            session=session,
            ticket_id=ticket_id,
            workflow_id="",
            contact_key=None,
            ticket=TicketFacts(priority=priority, channel=None, tags=frozenset(), created_at=created),
            status=status,
            starts={"first_reply": created, "resolution": created},
            pauses=[],
            now=now,
            timers=True,
            webhook_url=webhook,
        )


def _timers(engine: Engine, ticket_id: str | None = None) -> list[tuple[str, str, str, datetime]]:
    t = sla_timer_table.c
    query = sa.select(t.ticket_id, t.metric, t.kind, t.fire_at).order_by(t.fire_at, t.metric, t.kind)
    if ticket_id is not None:
        query = query.where(t.ticket_id == ticket_id)
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def _fire_all(engine: Engine, at: datetime, limit: int = 50) -> int:
    fired = 0
    while True:
        with Session(engine) as session, session.begin():
            batch = fire_due(session=session, slots=ALL_SLOTS, now=at, fired_at=at, limit=limit)
        fired += len(batch)
        if not batch:
            return fired


def test_a_plan_writes_moves_and_removes_the_tickets_timers(policies: Engine) -> None:
    _plan(policies, "t-1")
    assert [(m, k, at - NOW) for _, m, k, at in _timers(policies, "t-1")] == [
        ("first_reply", "warning", timedelta(minutes=48)),
        ("first_reply", "breach", timedelta(hours=1)),
        ("resolution", "warning", timedelta(hours=6, minutes=24)),
        ("resolution", "breach", timedelta(hours=8)),
    ]
    _plan(policies, "t-1", status="pending", now=NOW + timedelta(minutes=5))
    assert _timers(policies, "t-1") == []  # paused: nothing fires
    _plan(policies, "t-1", now=NOW + timedelta(minutes=10))
    assert len(_timers(policies, "t-1")) == 4
    # A re-plan that selects a stricter policy (here a priority change; a membership change plans the same
    # way) moves the first reply timers earlier and drops the metric the policy does not target.
    _plan(policies, "t-1", priority="urgent", now=NOW + timedelta(minutes=10))
    assert [(m, k, at - NOW) for _, m, k, at in _timers(policies, "t-1")] == [
        ("first_reply", "warning", timedelta(minutes=12)),
        ("first_reply", "breach", timedelta(minutes=15)),
    ]
    _plan(policies, "t-1", status="solved", now=NOW + timedelta(minutes=11))
    assert _timers(policies, "t-1") == []


def test_a_fired_warning_is_not_set_again_and_a_later_due_time_breaches_again(policies: Engine) -> None:
    _plan(policies, "t-2", priority="urgent")
    assert _fire_all(policies, NOW + timedelta(minutes=16)) == 2  # warning and breach
    later = NOW + timedelta(minutes=17)
    _plan(policies, "t-2", priority="urgent", now=later)
    assert _timers(policies, "t-2") == []  # both fired at this due time
    _plan(policies, "t-2", now=later)  # back to normal: due in 1 h, not yet warned
    assert [(m, k) for _, m, k, _ in _timers(policies, "t-2")][:2] == [
        ("first_reply", "warning"),
        ("first_reply", "breach"),
    ]


def test_two_firers_at_once_record_each_timer_exactly_once(policies: Engine) -> None:
    for i in range(60):
        _plan(policies, f"t-{i}", priority="urgent")  # 2 timers each
    due = NOW + timedelta(minutes=20)
    counts: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def firer() -> None:
        start.wait()
        fired = 0
        try:
            while True:
                try:
                    with Session(policies) as session, session.begin():
                        batch = fire_due(session=session, slots=ALL_SLOTS, now=due, fired_at=due, limit=7)
                except sa.exc.OperationalError:  # SQLite: the other writer held the lock; a round retries
                    continue
                fired += len(batch)
                if not batch:
                    break
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        counts.append(fired)

    threads = [threading.Thread(target=firer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(counts) == 120
    with policies.connect() as conn:
        e = sla_event_table.c
        rows = conn.execute(sa.select(e.ticket_id, e.metric, e.kind)).all()
    assert len(rows) == len(set(rows)) == 120
    assert _timers(policies) == []


def test_a_round_that_crashes_leaves_its_timers_due(policies: Engine) -> None:
    _plan(policies, "t-3", priority="urgent")
    due = NOW + timedelta(minutes=20)
    with pytest.raises(RuntimeError), Session(policies) as session, session.begin():
        assert len(fire_due(session=session, slots=ALL_SLOTS, now=due, fired_at=due, limit=10)) == 2
        raise RuntimeError("the worker died before the commit")
    assert len(_timers(policies, "t-3")) == 2
    assert _fire_all(policies, due) == 2
    with Session(policies) as session:
        assert [(e.kind, e.fired_at) for e in list_events(session=session, ticket_id="t-3")] == [
            ("warning", due),
            ("breach", due),
        ]


def test_a_claimed_webhook_try_is_retaken_once_its_lease_runs_out(policies: Engine) -> None:
    _plan(policies, "t-4", priority="urgent", webhook="https://hooks.example/sla")
    due = NOW + timedelta(minutes=20)
    _fire_all(policies, due)
    lease = timedelta(minutes=2)
    with Session(policies) as session, session.begin():
        claimed = claim_webhooks(session=session, now=due, lease=lease, limit=10)
    assert [(c.kind, c.attempt) for c in claimed] == [("warning", 1), ("breach", 1)]
    # The worker holding them dies: nobody else takes them during the lease...
    with Session(policies) as session, session.begin():
        assert (
            claim_webhooks(session=session, now=due + lease - timedelta(seconds=1), lease=lease, limit=10)
            == []
        )
    # ...and another worker does afterwards; the dead try's late answer then changes nothing.
    with Session(policies) as session, session.begin():
        again = claim_webhooks(session=session, now=due + lease, lease=lease, limit=10)
    assert [(c.kind, c.attempt) for c in again] == [("warning", 2), ("breach", 2)]
    with Session(policies) as session, session.begin():
        for item in claimed:
            settle_webhook(
                session=session, event_id=item.event_id, attempt=1, outcome="sent", reason=None, now=due
            )
        settle_webhook(
            session=session, event_id=again[0].event_id, attempt=2, outcome="sent", reason=None, now=due
        )
        settle_webhook(
            session=session, event_id=again[1].event_id, attempt=2, outcome="retry", reason="503", now=due
        )
    with policies.connect() as conn:
        e = sla_event_table.c
        states = dict(conn.execute(sa.select(e.kind, e.webhook_state)).all())
    assert states == {"warning": "sent", "breach": "pending"}


class _HangingEndpoint:
    """Answers 200 to `/fast`; holds `/slow` until `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.paths: list[str] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.paths.append(self.path)
                if self.path == "/slow":
                    endpoint.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def hanging() -> Iterator[_HangingEndpoint]:
    endpoint = _HangingEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


async def test_a_hanging_webhook_endpoint_never_holds_up_a_firing_round(
    policies: Engine, hanging: _HangingEndpoint
) -> None:
    _plan(policies, "t-slow", priority="urgent", webhook=f"{hanging.url}/slow")
    _plan(policies, "t-fast", priority="urgent", webhook=f"{hanging.url}/fast")
    activities = SlaActivities(policies)
    due = NOW + timedelta(minutes=20)
    params = FireDueSlaTimersInput(
        firer_id="f-test", shard=0, shards=1, now=due, batch=10, poll_interval=timedelta(minutes=1)
    )
    try:
        result = await ActivityEnvironment().run(activities.fire_due_sla_timers, params)
        assert result.fired == 4  # recorded while the slow endpoint may still be holding its request

        def states() -> dict[tuple[str, str], str | None]:
            with policies.connect() as conn:
                e = sla_event_table.c
                rows = conn.execute(sa.select(e.ticket_id, e.kind, e.webhook_state)).all()
            return {(t, k): s for t, k, s in rows}

        for _ in range(400):  # the fast endpoint's notifications go out while the slow one hangs
            if states()[("t-fast", "breach")] == "sent" and states()[("t-fast", "warning")] == "sent":
                break
            await asyncio.sleep(0.05)
        assert not hanging.release.is_set()
        assert states()[("t-fast", "warning")] == states()[("t-fast", "breach")] == "sent"
        assert states()[("t-slow", "warning")] == "pending"
        hanging.release.set()
        for _ in range(400):
            if all(s == "sent" for s in states().values()):
                break
            await asyncio.sleep(0.05)
        assert all(s == "sent" for s in states().values())
    finally:
        await activities.aclose()
