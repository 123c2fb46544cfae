"""SLA timers in SQL: a ticket's pending warnings and breaches (`sla_timer`), fired in batches, and the
webhook outbox of the events they record. Never commits: the activity owns the transaction.

A plan replaces the ticket's timers in its own transaction (`replace_timers`): none while the ticket is
pending or solved, or for a metric that is fulfilled or has no target; a warning or breach already fired
for the current due time (or for an earlier due time of the same clock, when the new moment has passed too)
is not set again. `fire_due` claims the due timers of some slots in `fire_at` order (`FOR UPDATE SKIP
LOCKED` on PostgreSQL; SQLite has one writer), deletes them and records their `sla_event` rows (unique per
ticket, metric, kind and due time) in that one transaction: a crashed round rolls back and its timers are
due again, two firers never record one timer twice. Webhooks go through an outbox on `sla_event`: a try is
claimed with a lease (`claim_webhooks`, due again once the lease runs out, so a crashed try is retaken) and
settled as sent, failed for good, or due again after a backoff (`settle_webhook`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import sla_event_table, sla_firer_table, sla_timer_table
from segmentflow.policies.sla import Due, Metric
from segmentflow.services.membership import contact_segment_set

__all__ = [
    "MAX_WEBHOOK_ATTEMPTS",
    "SLOTS",
    "FiredTimer",
    "Outgoing",
    "PlannedTimers",
    "claim_webhooks",
    "fire_due",
    "firer_slots",
    "firers_to_wake",
    "firers_woken",
    "next_fire_at",
    "next_webhook_at",
    "replace_timers",
    "settle_webhook",
    "store_firer",
    "ticket_event_marks",
    "timer_slot",
    "webhook_backoff",
]

log = logging.getLogger(__name__)

#: Timers are spread over this many slots by ticket id; firer `shard` of `shards` fires the slots with
#: `slot % shards == shard`, so the firer count can change without rewriting a row.
SLOTS = 16
#: A webhook is tried this many times (backoff 2 s doubling to 5 min: about an hour), as `PostSlaWebhook`.
MAX_WEBHOOK_ATTEMPTS = 20


def timer_slot(ticket_id: str) -> int:
    return zlib.crc32(ticket_id.encode()) % SLOTS


def firer_slots(shard: int, shards: int) -> list[int]:
    return [slot for slot in range(SLOTS) if slot % shards == shard]


@dataclass(frozen=True, slots=True)
class PlannedTimers:
    """Per running metric: whether its warning and breach have fired (for the current due time, or for
    an earlier one of the same clock whose new moment has passed too); the earliest timer written."""

    marks: Mapping[Metric, tuple[bool, bool]]
    earliest: datetime | None


def replace_timers(
    *,
    session: Session,
    ticket_id: str,
    contact_key: str | None,
    policy_key: str | None,
    status: str,
    targets: Mapping[Metric, Due],
    starts: Mapping[Metric, datetime],
    webhook_url: str | None,
    now: datetime,
) -> PlannedTimers:
    """Replace the ticket's pending timers with those of this plan (see the module docstring)."""
    t, e = sla_timer_table.c, sla_event_table.c
    session.execute(sa.delete(sla_timer_table).where(t.ticket_id == ticket_id))
    fired = session.execute(
        sa.select(e.metric, e.kind, e.due_at, e.fired_at).where(e.ticket_id == ticket_id)
    ).all()
    marks: dict[Metric, tuple[bool, bool]] = {}
    rows: list[dict[str, object]] = []
    for metric, due in targets.items():
        start = starts.get(metric)
        if start is None:
            continue

        def given(
            kind: str, moment: datetime, metric: str = metric, due: Due = due, start: datetime = start
        ) -> bool:
            return any(
                m == metric and k == kind and (at == due.due_at or (when >= start and moment <= now))
                for m, k, at, when in fired
            )

        warned, breached = given("warning", due.warn_at), given("breach", due.due_at)
        marks[metric] = (warned, breached)
        if status != "open" or policy_key is None or breached:
            continue
        kinds = (("breach", due.due_at),) if warned else (("warning", due.warn_at), ("breach", due.due_at))
        for kind, fire_at in kinds:
            rows.append(
                {
                    "ticket_id": ticket_id,
                    "metric": metric,
                    "kind": kind,
                    "due_at": due.due_at,
                    "fire_at": fire_at,
                    "slot": timer_slot(ticket_id),
                    "policy_key": policy_key,
                    "contact_key": contact_key,
                    "webhook_url": webhook_url,
                }
            )
    if rows:
        session.execute(sa.insert(sla_timer_table), rows)
    fire_ats = [at for row in rows if isinstance(at := row["fire_at"], datetime)]
    return PlannedTimers(marks, min(fire_ats, default=None))


def ticket_event_marks(*, session: Session, ticket_id: str) -> list[tuple[str, str, datetime]]:
    """(metric, kind, due time) of the ticket's SLA events in the order they fired."""
    e = sla_event_table.c
    query = sa.select(e.metric, e.kind, e.due_at).where(e.ticket_id == ticket_id).order_by(e.fired_at, e.id)
    return [(metric, kind, due_at) for metric, kind, due_at in session.execute(query)]


@dataclass(frozen=True, slots=True)
class FiredTimer:
    ticket_id: str
    metric: str
    kind: str
    due_at: datetime
    fire_at: datetime
    fired_at: datetime


def fire_due(
    *, session: Session, slots: Sequence[int], now: datetime, fired_at: datetime, limit: int
) -> list[FiredTimer]:
    """Claim up to `limit` timers of `slots` due by `now` (earliest first), delete them and record their SLA
    events fired at `fired_at` with the contact's segments, the webhook (if any) pending in the outbox.
    Returns the timers this call deleted (another firer's claim is skipped or, on SQLite, waited for)."""
    t = sla_timer_table.c
    ids = list(
        session.scalars(
            sa.select(t.id)
            .where(t.slot.in_(list(slots)), t.fire_at <= now)
            .order_by(t.fire_at, t.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    claimed = session.execute(
        sa.delete(sla_timer_table)
        .where(t.id.in_(ids))
        .returning(
            t.ticket_id, t.metric, t.kind, t.due_at, t.fire_at, t.policy_key, t.contact_key, t.webhook_url
        )
    ).all()
    segments: dict[str | None, list[str]] = {}
    events: list[dict[str, object]] = []
    for row in claimed:
        if row.contact_key not in segments:
            key = row.contact_key
            found = frozenset() if key is None else contact_segment_set(session=session, contact_key=key)
            segments[key] = sorted(found)
        events.append(
            {
                "ticket_id": row.ticket_id,
                "contact_key": row.contact_key,
                "segments": segments[row.contact_key],
                "policy_key": row.policy_key,
                "metric": row.metric,
                "kind": row.kind,
                "due_at": row.due_at,
                "fired_at": fired_at,
                "webhook_url": row.webhook_url,
                "webhook_state": None if row.webhook_url is None else "pending",
                "webhook_attempts": 0,
                "webhook_next_at": None if row.webhook_url is None else fired_at,
            }
        )
    if events:
        try:
            with session.begin_nested():
                _insert_events(session, events)
        except DBAPIError:
            # A row the database refuses (a trigger, a constraint): record the others one by one; the
            # refused one's moment has passed, so its timer goes (logged), and no ticket blocks the rest.
            for event in events:
                try:
                    with session.begin_nested():
                        _insert_events(session, [event])
                except DBAPIError as exc:
                    log.warning(
                        "SLA event %s:%s of ticket %s refused by the database: %s",
                        event["metric"],
                        event["kind"],
                        event["ticket_id"],
                        exc.orig,
                    )
    return [FiredTimer(r.ticket_id, r.metric, r.kind, r.due_at, r.fire_at, fired_at) for r in claimed]


def _insert_events(session: Session, events: list[dict[str, object]]) -> None:
    stmt = insert_on_conflict(session, sla_event_table).values(events)
    session.execute(stmt.on_conflict_do_nothing(index_elements=["ticket_id", "metric", "kind", "due_at"]))


def next_fire_at(*, session: Session, slots: Sequence[int]) -> datetime | None:
    t = sla_timer_table.c
    found: datetime | None = session.scalar(sa.select(sa.func.min(t.fire_at)).where(t.slot.in_(list(slots))))
    return found


def store_firer(
    *, session: Session, firer_id: str, shard: int, shards: int, wake_at: datetime | None, now: datetime
) -> None:
    """Record when the firer next wakes (a plan writing an earlier timer of its slots wakes it)."""
    row = {"id": firer_id, "shard": shard, "shards": shards, "wake_at": wake_at, "updated_at": now}
    stmt = insert_on_conflict(session, sla_firer_table).values(row)
    update = {k: stmt.excluded[k] for k in ("shard", "shards", "wake_at", "updated_at")}
    session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))


def firers_to_wake(*, session: Session, slot: int, fire_at: datetime) -> tuple[list[str], bool]:
    """The firers of `slot` sleeping past `fire_at`, and whether any firer covers the slot at all."""
    f = sla_firer_table.c
    rows = session.execute(sa.select(f.id, f.shard, f.shards, f.wake_at)).all()
    covering = [r for r in rows if r.shards > 0 and slot % r.shards == r.shard]
    return [r.id for r in covering if r.wake_at is None or r.wake_at > fire_at], bool(covering)


def firers_woken(*, session: Session, firer_ids: Sequence[str], fire_at: datetime) -> None:
    """Once woken, the firers wake by `fire_at` at the latest: the next plan need not wake them again."""
    f = sla_firer_table.c
    session.execute(
        sa.update(sla_firer_table)
        .where(f.id.in_(list(firer_ids)), f.wake_at > fire_at)
        .values(wake_at=fire_at)
    )


# ---- the webhook outbox ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed webhook try of one SLA event."""

    event_id: int
    ticket_id: str
    contact_key: str | None
    segments: list[str]
    policy_key: str
    metric: str
    kind: str
    due_at: datetime
    fired_at: datetime
    url: str
    attempt: int


def claim_webhooks(*, session: Session, now: datetime, lease: timedelta, limit: int) -> list[Outgoing]:
    """Claim up to `limit` pending webhook tries due by `now`: each is due again at `now + lease` (a try
    that crashed is retaken then), its attempt counted."""
    e = sla_event_table.c
    ids = list(
        session.scalars(
            sa.select(e.id)
            .where(e.webhook_state == "pending", e.webhook_next_at <= now)
            .order_by(e.webhook_next_at, e.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    rows = session.execute(
        sa.update(sla_event_table)
        .where(e.id.in_(ids), e.webhook_state == "pending", e.webhook_next_at <= now)
        .values(webhook_next_at=now + lease, webhook_attempts=e.webhook_attempts + 1)
        .returning(
            e.id,
            e.ticket_id,
            e.contact_key,
            e.segments,
            e.policy_key,
            e.metric,
            e.kind,
            e.due_at,
            e.fired_at,
            e.webhook_url,
            e.webhook_attempts,
        )
    ).all()
    return sorted((Outgoing(*row) for row in rows), key=lambda o: (o.fired_at, o.event_id))


def webhook_backoff(attempt: int) -> timedelta:
    """The wait after failed try `attempt` (1-based): 2 s doubling, at most 5 minutes."""
    return min(timedelta(seconds=2 * 2 ** (attempt - 1)), timedelta(minutes=5))


def settle_webhook(
    *,
    session: Session,
    event_id: int,
    attempt: int,
    outcome: Literal["sent", "failed", "retry"],
    reason: str | None,
    now: datetime,
) -> None:
    """Mark a try: sent; failed for good (`reason` kept on the event); or due again after the backoff
    (failed for good after `MAX_WEBHOOK_ATTEMPTS`). A try whose lease another worker took over (the
    attempt count moved on) changes nothing."""
    e = sla_event_table.c
    values: dict[str, object]
    if outcome == "sent":
        values = {"webhook_state": "sent", "webhook_next_at": None}
    elif outcome == "failed" or attempt >= MAX_WEBHOOK_ATTEMPTS:
        error = reason if outcome == "failed" else f"gave up after {attempt} tries: {reason}"
        values = {"webhook_state": "failed", "webhook_next_at": None, "webhook_error": (error or "")[:2000]}
    else:
        values = {"webhook_next_at": now + webhook_backoff(attempt)}
    session.execute(
        sa.update(sla_event_table)
        .where(e.id == event_id, e.webhook_attempts == attempt, e.webhook_state == "pending")
        .values(**values)
    )


def next_webhook_at(*, session: Session) -> datetime | None:
    e = sla_event_table.c
    found: datetime | None = session.scalar(
        sa.select(sa.func.min(e.webhook_next_at)).where(e.webhook_state == "pending")
    )
    return found
