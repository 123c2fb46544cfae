"""Reads over the precomputed tables beyond single lookups: a segment's members by cursor, the change feed
by sequence number, and members, entries and exits per segment over a time window. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import change_table, contact_table, membership_table, send_table
from segmentflow.services.membership import member_counts
from segmentflow.services.segments import list_segments

__all__ = [
    "Change",
    "Member",
    "SegmentActivity",
    "SendRow",
    "daily_member_counts",
    "list_changes",
    "list_members",
    "list_segment_changes",
    "list_sends",
    "segment_activity",
]


@dataclass(frozen=True, slots=True)
class Member:
    contact_id: int
    key: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    segment_id: uuid.UUID
    segment_key: str
    contact_key: str
    change: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SegmentActivity:
    segment_id: uuid.UUID
    key: str
    name: str
    members: int
    entered: int
    exited: int


def list_members(*, session: Session, segment_id: uuid.UUID, after: int, limit: int) -> list[Member]:
    """Up to `limit` members of a segment with contact id > `after`, in contact id order."""
    query = (
        sa.select(contact_table.c.id, contact_table.c.key, membership_table.c.since)
        .join(membership_table, membership_table.c.contact_id == contact_table.c.id)
        .where(membership_table.c.segment_id == segment_id, contact_table.c.id > after)
        .order_by(contact_table.c.id)
        .limit(limit)
    )
    return [Member(cid, key, since) for cid, key, since in session.execute(query)]


def list_changes(*, session: Session, after: int, limit: int) -> list[Change]:
    """Up to `limit` change-feed rows with seq > `after`, in seq order."""
    query = (
        sa.select(
            change_table.c.seq,
            change_table.c.segment_id,
            change_table.c.segment_key,
            change_table.c.contact_key,
            change_table.c.change,
            change_table.c.at,
        )
        .where(change_table.c.seq > after)
        .order_by(change_table.c.seq)
        .limit(limit)
    )
    return [Change(*row) for row in session.execute(query)]


def segment_activity(*, session: Session, since: datetime, until: datetime) -> list[SegmentActivity]:
    """For every stored segment, in key order: members now, entries and exits in [since, until)."""
    moves: dict[tuple[uuid.UUID, str], int] = {}
    query = (
        sa.select(change_table.c.segment_id, change_table.c.change, sa.func.count())
        .where(change_table.c.at >= since, change_table.c.at < until)
        .group_by(change_table.c.segment_id, change_table.c.change)
    )
    for segment_id, change, n in session.execute(query):
        moves[segment_id, change] = int(n)
    counts = member_counts(session=session)
    return [
        SegmentActivity(
            segment_id=r.id,
            key=r.key,
            name=r.name,
            members=counts.get(r.id, 0),
            entered=moves.get((r.id, "entered"), 0),
            exited=moves.get((r.id, "exited"), 0),
        )
        for r in list_segments(session=session)
    ]


def list_segment_changes(*, session: Session, segment_id: uuid.UUID, limit: int) -> list[Change]:
    """A segment's newest `limit` entries and exits, newest first."""
    query = (
        sa.select(
            change_table.c.seq,
            change_table.c.segment_id,
            change_table.c.segment_key,
            change_table.c.contact_key,
            change_table.c.change,
            change_table.c.at,
        )
        .where(change_table.c.segment_id == segment_id)
        .order_by(change_table.c.seq.desc())
        .limit(limit)
    )
    return [Change(*row) for row in session.execute(query)]


def daily_member_counts(*, session: Session, now: datetime, days: int) -> dict[uuid.UUID, list[int]]:
    """Members of each segment at the end of each of the last `days` days (UTC; oldest first, today's
    the count now), walked back from the current counts through the change feed's entries and exits."""
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = sa.func.date(change_table.c.at)
    net: dict[uuid.UUID, dict[str, int]] = {}
    query = (
        sa.select(change_table.c.segment_id, day, change_table.c.change, sa.func.count())
        .where(change_table.c.at >= start)
        .group_by(change_table.c.segment_id, day, change_table.c.change)
    )
    for segment_id, on, change, n in session.execute(query):
        per_day = net.setdefault(segment_id, {})
        per_day[str(on)[:10]] = per_day.get(str(on)[:10], 0) + (int(n) if change == "entered" else -int(n))
    labels = [(start + timedelta(days=i)).date().isoformat() for i in range(days)]
    counts = member_counts(session=session)
    out: dict[uuid.UUID, list[int]] = {}
    for segment_id in counts.keys() | net.keys():
        current, per_day, series = counts.get(segment_id, 0), net.get(segment_id, {}), [0] * days
        for i in range(days - 1, -1, -1):
            series[i] = current
            current -= per_day.get(labels[i], 0)
        out[segment_id] = series
    return out


@dataclass(frozen=True, slots=True)
class SendRow:
    step: int
    contact_id: int
    channel: str
    status: str
    attempts: int
    response_status: int | None
    created_at: datetime
    sent_at: datetime | None


def list_sends(*, session: Session, sequence_id: uuid.UUID, limit: int) -> list[SendRow]:
    """A sequence's newest `limit` sends, newest first."""
    t = send_table.c
    query = (
        sa.select(
            t.step, t.contact_id, t.channel, t.status, t.attempts, t.response_status, t.created_at, t.sent_at
        )
        .where(t.sequence_id == sequence_id)
        .order_by(t.id.desc())
        .limit(limit)
    )
    return [SendRow(*row) for row in session.execute(query)]
