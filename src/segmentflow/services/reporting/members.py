"""The report's member counts from the daily rollup of entries and exits (`segment_change_day`, kept by
`services.reports.fold_change_feed`): the same answer as `attribution.members_at` without its pass over
every membership stretch.

A segment's members at `t` are its members now less its net change (entries less exits) after `t`: the
rollup gives the whole UTC days after `t`'s day (its day's row less the feed rows of that day up to `t`),
the raw feed the rows folded in by no one yet. The distinct contacts in any segment (`""`) are the ones in
a segment now, adjusted contact by contact with the feed rows after the earliest instant. This holds as
long as the feed tells each (segment, contact) pair's story in order, as the recompute writes it: an entry
at the membership's `since`, an exit when it ends, and the clock not running backwards for a pair. The
fold writes (the rollup), so this never runs in a read-only transaction; never commits.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, time
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import (
    change_table,
    membership_table,
    segment_change_day_table,
    segment_change_rollup_table,
    segment_table,
)
from segmentflow.services.reports import fold_change_feed

__all__ = ["members_from_rollup"]


def bucket_of(column: Any, instants: list[datetime], lo: int = 0, hi: int | None = None) -> Any:
    """The index of the first of the sorted `instants` at or after a non-NULL `column` (`len(instants)`
    after them all), as a balanced CASE: about log2(instants) comparisons a row rather than one per
    instant (`attribution.bucket_of`, which also handles NULL)."""
    hi = len(instants) if hi is None else hi
    if lo == hi:
        return sa.literal(lo)
    mid = (lo + hi) // 2
    at_mid = sa.literal(instants[mid], type_=change_table.c.at.type)
    return sa.case(
        (column <= at_mid, bucket_of(column, instants, lo, mid)),
        else_=bucket_of(column, instants, mid + 1, hi),
    )


def _net(column: Any) -> Any:
    return sa.case((column == "entered", 1), else_=-1)


def members_from_rollup(session: Session, instants: list[datetime]) -> dict[tuple[str, int], int]:
    """Members per segment key (and `""`: distinct contacts in any segment) at each of `instants`, by
    position: `attribution.members_at`'s answer, keys included (a deleted segment's key is there when
    the feed has an exit from it after the earliest instant). Reads at most segments x days rollup rows,
    the feed rows of the instants' own days up to each instant and those after the earliest instant."""
    fold_change_feed(session=session, now=None)
    ordered = sorted({instant.astimezone(UTC) for instant in instants})
    n, first = len(ordered), ordered[0]
    typed = change_table.c.at.type
    feed, day_t, state = change_table, segment_change_day_table, segment_change_rollup_table
    folded = sa.select(sa.func.coalesce(sa.func.max(state.c.seq), 0)).where(state.c.id == 1).scalar_subquery()
    bucket = bucket_of(feed.c.at, ordered)
    # Each instant's day up to the instant: those feed rows come off the day's rollup row.
    latest: dict[Any, datetime] = {}
    for instant in ordered:
        latest[instant.date()] = instant
    # A midnight's day up to it is the rows at that very instant: one IN list (an index probe each) rather
    # than a range per day, which the planner would test on every feed row.
    midnights = [end for day, end in latest.items() if end == datetime.combine(day, time(), UTC)]
    ranges = [
        sa.and_(
            feed.c.at >= sa.literal(datetime.combine(day, time(), UTC), type_=typed),
            feed.c.at <= sa.literal(end, type_=typed),
        )
        for day, end in latest.items()
        if end not in midnights
    ]
    if midnights:
        ranges.append(feed.c.at.in_([sa.literal(end, type_=typed) for end in midnights]))
    partial = sa.or_(*ranges)
    # One statement, one snapshot: the memberships, the rollup and the feed rows past it agree.
    parts = sa.union_all(
        sa.select(
            sa.literal("m").label("kind"),
            membership_table.c.segment_id,
            sa.literal("").label("label"),
            sa.func.count().label("n"),
        ).group_by(membership_table.c.segment_id),
        sa.select(sa.literal("d"), day_t.c.segment_id, day_t.c.day, (day_t.c.entered - day_t.c.exited)).where(
            day_t.c.day >= first.date().isoformat()
        ),
        sa.select(
            sa.literal("t"), feed.c.segment_id, sa.cast(bucket, sa.String), sa.func.sum(_net(feed.c.change))
        )
        .where(feed.c.seq > folded, feed.c.at > sa.literal(first, type_=typed))
        .group_by(feed.c.segment_id, bucket),
        sa.select(
            sa.literal("p"), feed.c.segment_id, sa.cast(bucket, sa.String), sa.func.sum(_net(feed.c.change))
        )
        .where(feed.c.seq <= folded, partial)
        .group_by(feed.c.segment_id, bucket),
    )
    now: dict[uuid.UUID, int] = defaultdict(int)
    by_day: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    tail: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    early: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    for kind, segment_id, label, count in session.execute(parts):
        sid = segment_id if isinstance(segment_id, uuid.UUID) else uuid.UUID(str(segment_id))
        if kind == "m":
            now[sid] += int(count)
        elif kind == "d":
            by_day[sid][str(label)[:10]] = int(count)
        elif kind == "t":
            tail[sid][int(label)] = int(count)
        else:
            early[sid][int(label)] = int(count)

    keys = _segment_keys(session, {*now, *by_day, *tail, *early}, first)
    labels = [instant.date().isoformat() for instant in ordered]
    at_position = {instant: k for k, instant in enumerate(ordered)}
    counts: dict[str, list[int]] = {}
    for sid, key in keys.items():
        days, late, part = by_day.get(sid, {}), tail.get(sid, {}), early.get(sid, {})
        per_instant = counts.setdefault(key, [0] * n)
        for k in range(n):
            after = sum(net for label, net in days.items() if label >= labels[k])
            after -= sum(net for b, net in part.items() if b <= k and labels[b] == labels[k])
            after += sum(net for b, net in late.items() if b > k)
            per_instant[k] += now.get(sid, 0) - after
    anyone = _anyone(session, ordered)

    out: dict[tuple[str, int], int] = {}
    for i, instant in enumerate(instants):
        k = at_position[instant.astimezone(UTC)]
        for key, per_instant in counts.items():
            out[key, i] = per_instant[k]
        out["", i] = anyone[k]
    return out


def _segment_keys(session: Session, ids: set[uuid.UUID], first: datetime) -> dict[uuid.UUID, str]:
    """The key of each segment id: a stored segment's, or a deleted one's from its newest feed row, kept
    only when the feed has an exit from it after `first` (so the report lists the keys the stretches
    would)."""
    stored = {row.id: row.key for row in session.execute(sa.select(segment_table.c.id, segment_table.c.key))}
    out = {sid: stored[sid] for sid in ids if sid in stored}
    gone = [sid for sid in ids if sid not in stored]
    if gone:
        feed = change_table
        query = (
            sa.select(feed.c.segment_id, sa.func.max(feed.c.segment_key))
            .where(
                feed.c.segment_id.in_(gone),
                feed.c.change == "exited",
                feed.c.at > sa.literal(first, type_=feed.c.at.type),
            )
            .group_by(feed.c.segment_id)
        )
        for segment_id, key in session.execute(query):
            out[segment_id if isinstance(segment_id, uuid.UUID) else uuid.UUID(str(segment_id))] = key
    return out


def _anyone(session: Session, ordered: list[datetime]) -> list[int]:
    """Distinct contacts in at least one segment at each of the sorted instants: those in one now, less,
    for each contact with feed rows after the first instant, the change in whether it was in any at each
    instant (its count of segments then is its count now less its net change after). One statement.
    Contacts are told apart by id: a key deleted and stored again has two ids whose lives do not overlap
    (the deletion's exits come first), so at any instant they count as the key would."""
    n, feed = len(ordered), change_table
    current = (
        sa.select(membership_table.c.contact_id, sa.func.count().label("c"))
        .group_by(membership_table.c.contact_id)
        .cte("current")
    )
    bucket = bucket_of(feed.c.at, ordered).label("b")
    moves = (
        sa.select(feed.c.contact_id, bucket, sa.func.sum(_net(feed.c.change)).label("d"))
        .where(feed.c.at > sa.literal(ordered[0], type_=feed.c.at.type))
        .group_by(feed.c.contact_id, sa.literal_column("b"))
        .subquery("moves")
    )
    suffix = sa.func.sum(moves.c.d).over(
        partition_by=moves.c.contact_id, order_by=moves.c.b.desc(), rows=(None, 0)
    )
    walked = (
        sa.select(moves.c.b, moves.c.d, suffix.label("a"), sa.func.coalesce(current.c.c, 0).label("c"))
        .select_from(moves.outerjoin(current, current.c.contact_id == moves.c.contact_id))
        .subquery("walked")
    )
    # In any segment at instant b (count c - (a - d)) against at instant b - 1 (count c - a).
    step = sa.case((walked.c.c - walked.c.a + walked.c.d > 0, 1), else_=0) - sa.case(
        (walked.c.c - walked.c.a > 0, 1), else_=0
    )
    query = sa.union_all(
        sa.select(walked.c.b, sa.func.sum(step)).group_by(walked.c.b),
        sa.select(sa.literal(-1), sa.func.count()).select_from(current),
    )
    steps = {int(b): int(s or 0) for b, s in session.execute(query)}
    total = steps.pop(-1, 0)
    out = [0] * n
    for k in range(n - 1, -1, -1):
        total -= steps.get(k + 1, 0)
        out[k] = total
    return out
