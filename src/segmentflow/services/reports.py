"""Reads over the precomputed tables beyond single lookups: a segment's members by cursor, the change feed
by sequence number, and members, entries and exits per segment over a time window. Never commits."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import (
    change_table,
    contact_table,
    membership_table,
    segment_change_day_table,
    segment_change_hour_table,
    segment_change_rollup_table,
    segment_table,
    send_table,
)
from segmentflow.services.membership import member_counts, take_feed_lock
from segmentflow.services.segments import list_segments

__all__ = [
    "Change",
    "Member",
    "SegmentActivity",
    "SegmentTrend",
    "SegmentTrendCache",
    "SendRow",
    "fold_change_feed",
    "list_changes",
    "list_members",
    "list_segment_changes",
    "list_sends",
    "segment_activity",
    "segment_trends",
    "segment_trends_from_feed",
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


#: Hour rows older than this (before the newest `now` that folded) are pruned: only the last 24 hours
#: are read from them.
_HOURS_KEPT = timedelta(days=2)


def _hour_of(session: Session) -> sa.ColumnElement[Any]:
    """The start of the UTC hour of a feed row's `at`, in SQL (read back as a naive timestamp or text)."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.date_trunc("hour", sa.func.timezone("UTC", change_table.c.at))
    return sa.func.strftime("%Y-%m-%d %H:00:00", change_table.c.at)


def fold_change_feed(*, session: Session, now: datetime | None) -> int:
    """Fold the change-feed rows written since the last fold into the per-day and per-hour rollup of
    entries and exits (`segment_change_day`, `segment_change_hour`); returns how many rows were folded.
    Serialised with the feed's writers (`take_feed_lock`, so no lower seq commits later), and claimed by a
    compare-and-set on the rollup's seq, so two folds never count a row twice. A first look without the
    lock returns at once when nothing is new. `now` None prunes no hour rows (a caller without a clock of
    its own, such as the segment report). Never commits."""
    state = segment_change_rollup_table
    top_q = sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0))
    done = session.scalar(sa.select(state.c.seq).where(state.c.id == 1))
    if done is not None and int(session.scalar(top_q) or 0) <= done:
        return 0
    take_feed_lock(session)
    session.execute(insert_on_conflict(session, state).on_conflict_do_nothing(), [{"id": 1, "seq": 0}])
    done = int(session.scalar(sa.select(state.c.seq).where(state.c.id == 1)) or 0)
    top = int(session.scalar(top_q) or 0)
    if top <= done:
        return 0
    claimed = session.execute(
        state.update().where(state.c.id == 1, state.c.seq == done).values(seq=top)
    ).rowcount  # type: ignore[attr-defined]
    if claimed != 1:  # another fold got there first
        return 0
    day, hour = sa.func.date(change_table.c.at), _hour_of(session)
    query = (
        sa.select(change_table.c.segment_id, change_table.c.change, day, hour, sa.func.count())
        .where(change_table.c.seq > done, change_table.c.seq <= top)
        .group_by(change_table.c.segment_id, change_table.c.change, day, hour)
    )
    days: dict[tuple[uuid.UUID, str], list[int]] = {}
    hours: dict[tuple[uuid.UUID, datetime], list[int]] = {}
    folded = 0
    for segment_id, change, on, at_hour, n in session.execute(query):
        label = str(on)[:10]
        start = datetime.fromisoformat(str(at_hour)).replace(tzinfo=UTC)
        slot = 0 if change == "entered" else 1
        days.setdefault((segment_id, label), [0, 0])[slot] += int(n)
        hours.setdefault((segment_id, start), [0, 0])[slot] += int(n)
        folded += int(n)
    for table, rows, column in (
        (segment_change_day_table, days, "day"),
        (segment_change_hour_table, hours, "hour"),
    ):
        if not rows:
            continue
        statement = insert_on_conflict(session, table)
        statement = statement.on_conflict_do_update(
            index_elements=["segment_id", column],
            set_={
                "entered": table.c.entered + statement.excluded.entered,
                "exited": table.c.exited + statement.excluded.exited,
            },
        )
        values = [
            {"segment_id": sid, column: at, "entered": e, "exited": x} for (sid, at), (e, x) in rows.items()
        ]
        for first in range(0, len(values), 1000):
            session.execute(statement, values[first : first + 1000])
    if now is not None:
        hour_table = segment_change_hour_table
        session.execute(hour_table.delete().where(hour_table.c.hour < now - _HOURS_KEPT))
    return folded


def segment_trends(*, session: Session, now: datetime, days: int = 30) -> list[SegmentTrend]:
    """For every stored segment, in key order: members now, entries and exits in the last 24 hours, and
    the member count at the end of each of the last `days` UTC days (oldest first), walked back from
    now. Read from the rollup (`fold_change_feed` folds in what the feed gained since first): at most
    segments x `days` day rows, segments x 25 hour rows, and the feed rows of the part-hour 24 hours
    ago. The same answer as `segment_trends_from_feed`, for a `now` no earlier than the last fold's
    less two days (the console's is the clock)."""
    fold_change_feed(session=session, now=now)
    since = now - timedelta(hours=24)
    labels = [(now - timedelta(days=days - 1 - i)).date().isoformat() for i in range(days)]
    day_t, hour_t = segment_change_day_table, segment_change_hour_table
    net: dict[uuid.UUID, dict[str, int]] = {}
    query = sa.select(day_t.c.segment_id, day_t.c.day, day_t.c.entered, day_t.c.exited).where(
        day_t.c.day >= labels[0], day_t.c.day <= labels[-1]
    )
    for segment_id, label, entered, exited in session.execute(query):
        net.setdefault(segment_id, {})[label] = int(entered) - int(exited)
    # The last 24 hours: whole hours from the hourly rollup, the part-hour at the start from the feed.
    edge = since.replace(minute=0, second=0, microsecond=0)
    if edge < since:
        edge += timedelta(hours=1)
    moves: dict[tuple[uuid.UUID, str], int] = {}
    hourly = (
        sa.select(hour_t.c.segment_id, sa.func.sum(hour_t.c.entered), sa.func.sum(hour_t.c.exited))
        .where(hour_t.c.hour >= edge)
        .group_by(hour_t.c.segment_id)
    )
    for segment_id, entered, exited in session.execute(hourly):
        moves[segment_id, "entered"] = int(entered or 0)
        moves[segment_id, "exited"] = int(exited or 0)
    if since < edge:
        part = (
            sa.select(change_table.c.segment_id, change_table.c.change, sa.func.count())
            .where(change_table.c.at >= since, change_table.c.at < edge)
            .group_by(change_table.c.segment_id, change_table.c.change)
        )
        for segment_id, change, n in session.execute(part):
            moves[segment_id, change] = moves.get((segment_id, change), 0) + int(n)
    return _trends(session, labels, net, moves)


def segment_trends_from_feed(*, session: Session, now: datetime, days: int = 30) -> list[SegmentTrend]:
    """`segment_trends` straight from the change feed: one pass over the feed's recent rows (grouped by
    segment, change, day and whether within the last 24 hours) and one over the memberships. The peer of
    the rollup in tests and `bench/console.py`."""
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
    return _trends(session, labels, net, moves)


def _trends(
    session: Session,
    labels: list[str],
    net: dict[uuid.UUID, dict[str, int]],
    moves: dict[tuple[uuid.UUID, str], int],
) -> list[SegmentTrend]:
    """Each stored segment's trend from its net change per day label and its last 24 hours' moves,
    walked back from its member count now."""
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
        current, per_day, series = members, net.get(record.id, {}), [0] * len(labels)
        for i in range(len(labels) - 1, -1, -1):
            series[i] = current
            current -= per_day.get(labels[i], 0)
        out.append(SegmentTrend(activity, series))
    return out


class SegmentTrendCache:
    """Keeps the last `segment_trends` until the change feed or the segments change, or the minute turns
    (the 24-hour window slides): the stamp is one index lookup and one small aggregate, a recompute folds
    the feed's new rows into the rollup and reads it. Safe to share between threads."""

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
