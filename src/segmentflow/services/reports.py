"""Reads over the precomputed tables beyond single lookups: a segment's members by cursor, the change feed
by sequence number, and members, entries and exits per segment over a time window. Never commits."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import change_table, contact_table, membership_table, segment_table, send_table
from segmentflow.services.membership import member_counts
from segmentflow.services.segments import list_segments

__all__ = [
    "Change",
    "Member",
    "SegmentActivity",
    "SegmentTrend",
    "SegmentTrendCache",
    "SendRow",
    "list_changes",
    "list_members",
    "list_segment_changes",
    "list_sends",
    "segment_activity",
    "segment_trends",
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


#: A change-feed row as `Change` holds it.
_CHANGE_COLUMNS = (
    change_table.c.seq,
    change_table.c.segment_id,
    change_table.c.segment_key,
    change_table.c.contact_key,
    change_table.c.change,
    change_table.c.at,
)


def list_changes(*, session: Session, after: int, limit: int) -> list[Change]:
    """Up to `limit` change-feed rows with seq > `after`, in seq order."""
    query = (
        sa.select(*_CHANGE_COLUMNS)
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
        sa.select(*_CHANGE_COLUMNS)
        .where(change_table.c.segment_id == segment_id)
        .order_by(change_table.c.seq.desc())
        .limit(limit)
    )
    return [Change(*row) for row in session.execute(query)]


@dataclass(frozen=True, slots=True)
class SegmentTrend:
    """A segment's activity over the last 24 hours and its member count at the end of each recent day."""

    activity: SegmentActivity
    #: Members at the end of each of the last days (UTC; oldest first, the last one the count now).
    daily_members: list[int]


def segment_trends(*, session: Session, now: datetime, days: int = 30) -> list[SegmentTrend]:
    """For every stored segment, in key order: members now, entries and exits in the last 24 hours, and
    the member count at the end of each of the last `days` UTC days, walked back from now through the
    change feed. One pass over the feed's recent rows (grouped by segment, change, day and whether within
    the last 24 hours) and one over the memberships."""
    since = now - timedelta(hours=24)
    start = min(since, (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0))
    labels = [(now - timedelta(days=days - 1 - i)).date().isoformat() for i in range(days)]
    day = sa.func.date(change_table.c.at)
    recent = sa.case((change_table.c.at >= since, 1), else_=0)
    query = (
        sa.select(change_table.c.segment_id, change_table.c.change, day, recent, sa.func.count())
        .where(change_table.c.at >= start)
        .group_by(change_table.c.segment_id, change_table.c.change, day, recent)
    )
    net: dict[uuid.UUID, dict[str, int]] = {}
    moves: dict[tuple[uuid.UUID, str], int] = {}
    for segment_id, change, on, is_recent, n in session.execute(query):
        per_day = net.setdefault(segment_id, {})
        label = str(on)[:10]
        per_day[label] = per_day.get(label, 0) + (int(n) if change == "entered" else -int(n))
        if is_recent:
            moves[segment_id, change] = moves.get((segment_id, change), 0) + int(n)
    counts = member_counts(session=session)
    out = []
    for record in list_segments(session=session):
        members = counts.get(record.id, 0)
        activity = SegmentActivity(
            segment_id=record.id,
            key=record.key,
            name=record.name,
            members=members,
            entered=moves.get((record.id, "entered"), 0),
            exited=moves.get((record.id, "exited"), 0),
        )
        current, per_day, series = members, net.get(record.id, {}), [0] * days
        for i in range(days - 1, -1, -1):
            series[i] = current
            current -= per_day.get(labels[i], 0)
        out.append(SegmentTrend(activity, series))
    return out


class SegmentTrendCache:
    """Keeps the last `segment_trends` until the change feed or the segments change, or the minute turns
    (the 24-hour window slides): the aggregates read the whole recent feed, the stamp one index lookup and
    one small aggregate. Safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[Any, ...] | None = None
        self._trends: list[SegmentTrend] = []

    def get(self, *, session: Session, now: datetime, days: int = 30) -> list[SegmentTrend]:
        feed = sa.select(sa.func.max(change_table.c.seq)).scalar_subquery()
        row = session.execute(
            sa.select(
                feed,
                sa.func.count(),
                sa.func.max(segment_table.c.updated_at),
                sa.func.sum(segment_table.c.version),
            ).select_from(segment_table)
        ).one()
        stamp = (*row, now.replace(second=0, microsecond=0), days)
        with self._lock:
            if stamp == self._stamp:
                return self._trends
        trends = segment_trends(session=session, now=now, days=days)
        with self._lock:
            self._stamp, self._trends = stamp, trends
        return trends


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
