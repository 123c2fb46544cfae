"""SLA policies, tickets and SLA events in SQL, around the pure selection in `segmentflow.policies.sla`.
Never commits: the caller (an activity, the CLI, the API) owns the transaction.

A ticket's contact is in the segments the precomputed tables say (computed on first use, as
`check_membership` does); a contact that is not stored, or a ticket without one, is in no segment.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, col, select

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import (
    SlaPolicy,
    SlaWatch,
    change_table,
    sla_event_table,
    sla_policy_table,
    sla_watch_table,
    ticket_table,
)
from segmentflow.policies.calendar import business_time_between
from segmentflow.policies.sla import (
    Due,
    Metric,
    Policy,
    Selection,
    SlaPolicyError,
    TicketFacts,
    due_times,
    select_and_schedule,
)
from segmentflow.services.membership import contact_segment_set as membership_segment_set
from segmentflow.services.messages import existing_segment_keys
from segmentflow.services.reports import list_changes
from segmentflow.services.sla_timers import PlannedTimers, replace_timers, ticket_event_marks
from segmentflow.workflows.sla_models import SelectSlaPolicyResult, SlaTarget, SlaTicket

__all__ = [
    "PlannedTicket",
    "SlaEventRow",
    "TicketSignals",
    "advance_watch_cursor",
    "contact_segment_set",
    "event_counts_by_segment",
    "import_policies",
    "last_change_seq",
    "list_events",
    "list_policies",
    "open_ticket_workflows",
    "plan_ticket",
    "record_event",
    "record_webhook_failure",
    "select_for_contact",
    "selection_result",
    "ticket_facts",
    "tickets_to_signal",
    "watch_cursor",
]


def import_policies(*, session: Session, policies: Sequence[Policy], now: datetime) -> int:
    """Replace the stored policies with `policies`, in their order (the file is the whole ordered set, so a
    policy left out of it is removed). Returns how many are stored. A policy naming a segment that is not
    stored is refused (`SlaPolicyError` naming the policy and the key) before anything is written."""
    segments = existing_segment_keys(session=session)
    for index, policy in enumerate(policies):
        unknown = sorted(policy.segment_keys - segments)
        if unknown:
            raise SlaPolicyError(f"unknown segment {', '.join(unknown)}", index=index, key=policy.key)
    session.execute(sa.delete(sla_policy_table))
    if policies:
        session.execute(
            sa.insert(sla_policy_table),
            [
                {"key": p.key, "position": i, "definition": p.to_json(), "updated_at": now}
                for i, p in enumerate(policies)
            ],
        )
    return len(policies)


#: The last stored policy set read, by its canonical JSON: each plan and selection reads the rows, but a
#: set validated once is not validated again (an import or an edit changes the JSON, so it never goes
#: stale). One entry: the stored set changes rarely.
_PARSED: dict[str, list[Policy]] = {}


def list_policies(*, session: Session) -> list[Policy]:
    """The stored policies in precedence order."""
    rows = list(session.exec(select(SlaPolicy).order_by(col(SlaPolicy.position))))
    version = json.dumps([row.definition for row in rows], sort_keys=True, separators=(",", ":"))
    parsed = _PARSED.get(version)
    if parsed is None:
        parsed = [row.definition_model() for row in rows]
        _PARSED.clear()
        _PARSED[version] = parsed
    return list(parsed)


def contact_segment_set(*, session: Session, contact_key: str | None) -> frozenset[str]:
    """The segments the contact is in; empty for no contact or one that is not stored."""
    if contact_key is None:
        return frozenset()
    return membership_segment_set(session=session, contact_key=contact_key)


def ticket_facts(ticket: SlaTicket) -> TicketFacts:
    return TicketFacts(
        priority=ticket.priority,
        channel=ticket.channel,
        tags=frozenset(ticket.tags),
        created_at=ticket.created_at,
    )


def selection_result(selection: Selection) -> SelectSlaPolicyResult:
    """The public shape of a selection (`segmentflow.SelectSlaPolicy`, `sla select`, `POST /sla/select`)."""
    return SelectSlaPolicyResult(
        policy=None if selection.policy is None else selection.policy.key,
        targets={
            metric: SlaTarget(due_at=due.due_at, business_minutes=due.business_minutes)
            for metric, due in selection.targets.items()
        },
    )


def select_for_contact(*, session: Session, contact_key: str | None, ticket: TicketFacts) -> Selection:
    """`segmentflow.SelectSlaPolicy`: the stored policies against the contact's stored segments."""
    segments = contact_segment_set(session=session, contact_key=contact_key)
    return select_and_schedule(list_policies(session=session), ticket, segments)


@dataclass(frozen=True, slots=True)
class PlannedTicket:
    """The policy and due times; with table timers, also what fired (`timers`) and the ticket's events in
    firing order (`events`: metric, kind, due time)."""

    policy: Policy | None
    targets: Mapping[Metric, Due]
    timers: PlannedTimers | None = None
    events: list[tuple[str, str, datetime]] | None = None


def _paused_time(policy: Policy, start: datetime, pauses: Iterable[tuple[datetime, datetime]]) -> timedelta:
    """Business time of the pauses after `start` (a clock started during a pause counts from its end)."""
    total = timedelta(0)
    for begin, end in pauses:
        total += business_time_between(policy.business_calendar, max(begin, start), end)
    return total


def plan_ticket(
    *,
    session: Session,
    ticket_id: str,
    workflow_id: str,
    contact_key: str | None,
    ticket: TicketFacts,
    status: str,
    starts: Mapping[Metric, datetime],
    pauses: Sequence[tuple[datetime, datetime]],
    now: datetime,
    timers: bool = False,
    webhook_url: str | None = None,
) -> PlannedTicket:
    """Select the ticket's policy again (its facts or its contact's segments may have changed), compute the
    due and warning times of the running clocks (`starts`; each moved on by the business time it spent in
    `pauses`), and store the ticket's current state; with `timers`, also replace its pending timers in
    `sla_timer` (`segmentflow.services.sla_timers.replace_timers`)."""
    segments = contact_segment_set(session=session, contact_key=contact_key)
    selection = select_and_schedule(list_policies(session=session), ticket, segments)
    policy = selection.policy
    targets: dict[Metric, Due] = {}
    if policy is not None:
        paused = {metric: _paused_time(policy, start, pauses) for metric, start in starts.items()}
        targets = due_times(policy, ticket.priority, starts, paused)
    row = {
        "id": ticket_id,
        "contact_key": contact_key,
        "workflow_id": workflow_id,
        "priority": ticket.priority,
        "channel": ticket.channel,
        "tags": sorted(ticket.tags),
        "status": status,
        "policy_key": None if policy is None else policy.key,
        "created_at": ticket.created_at,
        "updated_at": now,
    }
    stmt = insert_on_conflict(session, ticket_table).values(row)
    update = {k: stmt.excluded[k] for k in row if k not in ("id", "created_at")}
    session.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=update))
    if not timers:
        return PlannedTicket(policy, targets)
    planned = replace_timers(
        session=session,
        ticket_id=ticket_id,
        contact_key=contact_key,
        policy_key=None if policy is None else policy.key,
        status=status,
        targets=targets,
        starts=starts,
        webhook_url=webhook_url,
        now=now,
    )
    return PlannedTicket(policy, targets, planned, ticket_event_marks(session=session, ticket_id=ticket_id))


def record_event(
    *,
    session: Session,
    ticket_id: str,
    contact_key: str | None,
    policy_key: str,
    metric: str,
    kind: str,
    due_at: datetime,
    fired_at: datetime,
) -> list[str]:
    """Store a warning or breach once per (ticket, metric, kind, due time): a retry changes nothing. Returns
    the contact's segments it was recorded with."""
    segments = sorted(contact_segment_set(session=session, contact_key=contact_key))
    stmt = insert_on_conflict(session, sla_event_table).values(
        ticket_id=ticket_id,
        contact_key=contact_key,
        segments=segments,
        policy_key=policy_key,
        metric=metric,
        kind=kind,
        due_at=due_at,
        fired_at=fired_at,
    )
    session.execute(stmt.on_conflict_do_nothing(index_elements=["ticket_id", "metric", "kind", "due_at"]))
    return segments


def record_webhook_failure(
    *, session: Session, ticket_id: str, metric: str, kind: str, due_at: datetime, reason: str
) -> None:
    """Keep on the SLA event why its webhook failed for good (never retried): an egress refusal, a
    redirect, a 4xx."""
    t = sla_event_table.c
    session.execute(
        sla_event_table.update()
        .where(t.ticket_id == ticket_id, t.metric == metric, t.kind == kind, t.due_at == due_at)
        .values(webhook_error=reason[:2000])
    )


@dataclass(frozen=True, slots=True)
class SlaEventRow:
    ticket_id: str
    contact_key: str | None
    segments: list[str]
    policy_key: str
    metric: str
    kind: str
    due_at: datetime
    fired_at: datetime
    webhook_error: str | None = None


def list_events(*, session: Session, ticket_id: str | None = None, limit: int = 1000) -> list[SlaEventRow]:
    """SLA events in the order they fired (one ticket's, or all)."""
    t = sla_event_table.c
    query = sa.select(
        t.ticket_id,
        t.contact_key,
        t.segments,
        t.policy_key,
        t.metric,
        t.kind,
        t.due_at,
        t.fired_at,
        t.webhook_error,
    ).order_by(t.fired_at, t.id)
    if ticket_id is not None:
        query = query.where(t.ticket_id == ticket_id)
    return [SlaEventRow(*row) for row in session.execute(query.limit(limit))]


def event_counts_by_segment(
    *, session: Session, since: datetime, until: datetime
) -> dict[str, dict[str, int]]:
    """Warnings and breaches fired in [since, until) per segment the contact was in (`-` for none)."""
    t = sla_event_table.c
    query = sa.select(t.segments, t.kind).where(t.fired_at >= since, t.fired_at < until)
    counts: dict[str, dict[str, int]] = {}
    for segments, kind in session.execute(query):
        for segment in segments or ["-"]:
            per_kind = counts.setdefault(segment, {"warning": 0, "breach": 0})
            per_kind[kind] = per_kind.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def open_ticket_workflows(*, session: Session, contact_keys: Collection[str]) -> list[tuple[str, str, str]]:
    """(ticket id, workflow id, contact key) of the unsolved tickets of these contacts."""
    if not contact_keys:
        return []
    t = ticket_table.c
    out: list[tuple[str, str, str]] = []
    keys = list(contact_keys)
    for start in range(0, len(keys), 500):
        query = (
            sa.select(t.id, t.workflow_id, t.contact_key)
            .where(t.contact_key.in_(keys[start : start + 500]), t.status != "solved")
            .order_by(t.id)
        )
        out.extend((tid, wid, key) for tid, wid, key in session.execute(query))
    return out


@dataclass(frozen=True, slots=True)
class TicketSignals:
    """What the SLA watcher has to signal: the feed position it reaches (`cursor`), how many changes it
    read, and per contact with open tickets, in feed order: (the seq of its last change, its key, its
    tickets' workflow ids)."""

    cursor: int
    changes: int
    contacts: list[tuple[int, str, list[str]]]


def tickets_to_signal(
    *, session: Session, watch_id: str, start: int | None, limit: int, now: datetime
) -> TicketSignals:
    """The open tickets whose contact changed (after the watcher's stored cursor, up to `limit` changes)
    in a segment some stored policy names: other changes cannot move a ticket. A watcher with no stored
    cursor is placed at `start` (None: the feed's end) and has nothing to signal yet."""
    after, known = watch_cursor(session=session, watch_id=watch_id, start=start, now=now)
    if not known:
        return TicketSignals(after, 0, [])
    changes = list_changes(session=session, after=after, limit=limit)
    named = {key for p in list_policies(session=session) for key in p.segment_keys}
    last_seq: dict[str, int] = {}
    for change in changes:
        if change.segment_key in named:
            last_seq[change.contact_key] = change.seq
    tickets: dict[str, list[str]] = {}
    for _ticket_id, workflow_id, contact in open_ticket_workflows(session=session, contact_keys=last_seq):
        tickets.setdefault(contact, []).append(workflow_id)
    ordered = sorted((seq, contact) for contact, seq in last_seq.items() if contact in tickets)
    cursor = changes[-1].seq if changes else after
    return TicketSignals(cursor, len(changes), [(seq, c, tickets[c]) for seq, c in ordered])


def last_change_seq(*, session: Session) -> int:
    """The newest seq of the membership change feed (0 when it is empty)."""
    top = session.scalar(sa.select(sa.func.max(change_table.c.seq)))
    return 0 if top is None else int(top)


def watch_cursor(*, session: Session, watch_id: str, start: int | None, now: datetime) -> tuple[int, bool]:
    """Where the watcher `watch_id` is in the change feed, and whether it was there before. A new watcher
    starts at `start` (None: the feed's current end), stored so a watcher started again resumes there."""
    stored = session.get(SlaWatch, watch_id)
    if stored is not None:
        return int(stored.cursor), True
    cursor = last_change_seq(session=session) if start is None else start
    session.add(SlaWatch(id=watch_id, cursor=cursor, updated_at=now))
    session.flush()
    return cursor, False


def advance_watch_cursor(*, session: Session, watch_id: str, cursor: int, now: datetime) -> None:
    """Move the watcher's stored cursor on to `cursor` (never back)."""
    t = sla_watch_table.c
    session.execute(
        sa.update(sla_watch_table)
        .where(t.id == watch_id, t.cursor < cursor)
        .values(cursor=cursor, updated_at=now)
    )
