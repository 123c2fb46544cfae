"""The report's member counts from the daily rollup of entries and exits (`segment_change_day`, kept by
`services.reports.fold_change_feed`): the same answer as `attribution.members_at` without its pass over
every membership stretch.

A segment's members at `t` are its net change (entries less exits) up to `t`, the feed being its whole
story from the first entry: the rollup gives the whole UTC days before `t`'s day (those before the first
instant's day as one sum a segment), the feed the rows of `t`'s day up to `t` and the rows folded in by
no one yet; no membership row is read. The distinct contacts in any segment (`""`) come from the
presence rollup (`services.presence`: when each contact came into a segment or left its last, and those
per day): the days before `t`'s day and `t`'s day's rows up to `t`; the few contacts with feed rows past
the rollup (written after the fold) are worked out from their memberships and feed rows instead. This
holds as long as the feed tells each (segment, contact) pair's story in order, as the recompute writes
it: an entry at the membership's `since`, an exit when it ends, and the clock not running backwards for a
pair. The folds write (the rollups), so this never runs in a read-only transaction; never commits.
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
    presence_change_table,
    presence_day_table,
    segment_change_day_table,
    segment_change_rollup_table,
    segment_table,
)
from segmentflow.services.presence import PRESENCE_ROW, fold_presence
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


def members_from_rollup(
    session: Session, instants: list[datetime], *, fold: bool = True
) -> dict[tuple[str, int], int]:
    """Members per segment key (and `""`: distinct contacts in any segment) at each of `instants`, by
    position: `attribution.members_at`'s answer, keys included (a deleted segment's key is there when
    the feed has an exit from it after the earliest instant). Reads about segments x days rollup rows,
    the feed rows of the instants' own days up to each instant and those past the rollup, and for `""`
    the presence rollup's days and its rows of the instants' own days. `fold` False reads the
    rollup as it stands (tests: the feed rows past it are read as a concurrent writer's would be)."""
    if fold:
        fold_change_feed(session=session, now=None)
        fold_presence(session)
    ordered = sorted({instant.astimezone(UTC) for instant in instants})
    n, first = len(ordered), ordered[0]
    typed = change_table.c.at.type
    feed, day_t, state = change_table, segment_change_day_table, segment_change_rollup_table
    folded = sa.select(sa.func.coalesce(sa.func.max(state.c.seq), 0)).where(state.c.id == 1).scalar_subquery()
    # The rollups' seqs as they stand now, as literals beside the subqueries: a fold committing meanwhile
    # only raises them, so the subqueries still decide, but the planner sees how few feed rows are past
    # them (against a subquery it guesses a third of the feed and scans it all, in parallel).
    seqs: dict[int, int] = {int(i): int(q) for i, q in session.execute(sa.select(state.c.id, state.c.seq))}
    past_folded = sa.and_(feed.c.seq > int(seqs.get(1, 0)), feed.c.seq > folded)
    bucket = bucket_of(feed.c.at, ordered)
    # Each instant's day up to the instant: those feed rows come off the day's rollup row.
    latest: dict[Any, datetime] = {}
    for instant in ordered:
        latest[instant.date()] = instant
    # A midnight's day up to it is the rows at that very instant: one IN list (an index probe each) rather
    # than a range per day, which the planner would test on every feed row.
    midnights = [end for day, end in latest.items() if end == datetime.combine(day, time(), UTC)]

    def partial_of(column: Any) -> Any:
        ranges = [
            sa.and_(
                column >= sa.literal(datetime.combine(day, time(), UTC), type_=typed),
                column <= sa.literal(end, type_=typed),
            )
            for day, end in latest.items()
            if end not in midnights
        ]
        if midnights:
            ranges.append(column.in_([sa.literal(end, type_=typed) for end in midnights]))
        return sa.or_(*ranges)

    presence, presence_day = presence_change_table, presence_day_table
    no_segment = sa.cast(sa.null(), feed.c.segment_id.type)
    # Contacts with feed rows past the rollup (written since the fold): their presence is worked out from
    # their memberships and feed rows, as it stands in this statement's snapshot, in place of the rollup's.
    presence_folded = (
        sa.select(sa.func.coalesce(sa.func.max(state.c.seq), 0))
        .where(state.c.id == PRESENCE_ROW)
        .scalar_subquery()
    )
    past_presence = sa.and_(feed.c.seq > int(seqs.get(PRESENCE_ROW, 0)), feed.c.seq > presence_folded)
    late = sa.select(feed.c.contact_id).where(past_presence).distinct().scalar_subquery()
    presence_bucket = bucket_of(presence.c.at, ordered)
    per_contact = sa.cast(presence.c.contact_id, sa.String) + ":" + sa.cast(presence_bucket, sa.String)
    first_day = first.date().isoformat()
    # One statement, one snapshot: the rollups, the feed rows past them and the memberships agree.
    parts = sa.union_all(
        # Each segment's net change over the days before the first instant's, one row a segment.
        sa.select(
            sa.literal("b").label("kind"),
            day_t.c.segment_id,
            sa.literal("").label("label"),
            sa.func.sum(day_t.c.entered - day_t.c.exited).label("n"),
        )
        .where(day_t.c.day < first_day)
        .group_by(day_t.c.segment_id),
        sa.select(sa.literal("d"), day_t.c.segment_id, day_t.c.day, (day_t.c.entered - day_t.c.exited)).where(
            day_t.c.day >= first_day
        ),
        sa.select(
            sa.literal("t"), feed.c.segment_id, sa.cast(bucket, sa.String), sa.func.sum(_net(feed.c.change))
        )
        .where(past_folded)
        .group_by(feed.c.segment_id, bucket),
        sa.select(
            sa.literal("p"), feed.c.segment_id, sa.cast(bucket, sa.String), sa.func.sum(_net(feed.c.change))
        )
        .where(feed.c.seq <= folded, partial_of(feed.c.at))
        .group_by(feed.c.segment_id, bucket),
        # The presence rollup: the days before the first instant's (one sum), each day since, and the
        # instants' own days up to them.
        sa.select(
            sa.literal("D"),
            no_segment,
            sa.literal(""),
            sa.func.sum(presence_day.c.entered - presence_day.c.exited),
        ).where(presence_day.c.day < first_day),
        sa.select(
            sa.literal("D"), no_segment, presence_day.c.day, (presence_day.c.entered - presence_day.c.exited)
        ).where(presence_day.c.day >= first_day),
        sa.select(
            sa.literal("P"),
            no_segment,
            sa.cast(presence_bucket, sa.String),
            sa.func.sum(presence.c.delta),
        )
        .where(partial_of(presence.c.at))
        .group_by(presence_bucket),
        # The late contacts: segments now, feed nets after the first instant, and their rollup rows.
        sa.select(
            sa.literal("C"), no_segment, sa.cast(membership_table.c.contact_id, sa.String), sa.func.count()
        )
        .where(membership_table.c.contact_id.in_(late))
        .group_by(membership_table.c.contact_id),
        sa.select(
            sa.literal("F"),
            no_segment,
            sa.cast(feed.c.contact_id, sa.String) + ":" + sa.cast(bucket, sa.String),
            sa.func.sum(_net(feed.c.change)),
        )
        .where(feed.c.contact_id.in_(late), feed.c.at > sa.literal(first, type_=typed))
        .group_by(feed.c.contact_id, bucket),
        sa.select(sa.literal("S"), no_segment, per_contact, sa.func.sum(presence.c.delta))
        .where(presence.c.contact_id.in_(late))
        .group_by(presence.c.contact_id, presence_bucket),
    )
    before: dict[uuid.UUID, int] = defaultdict(int)
    by_day: dict[uuid.UUID, dict[str, int]] = defaultdict(dict)
    tail: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    early: dict[uuid.UUID, dict[int, int]] = defaultdict(dict)
    presence_days: dict[str, int] = {}
    presence_part: dict[int, int] = {}
    late_now: dict[int, int] = {}
    late_feed: dict[int, dict[int, int]] = defaultdict(dict)
    late_stored: dict[int, dict[int, int]] = defaultdict(dict)
    for kind, segment_id, label, count in session.execute(parts):
        if kind in "DPCFS":
            if kind == "D":
                presence_days[str(label)[:10]] = int(count or 0)
            elif kind == "P":
                presence_part[int(label)] = int(count)
            elif kind == "C":
                late_now[int(label)] = int(count)
            else:
                contact, b = (int(part) for part in str(label).split(":"))
                (late_feed if kind == "F" else late_stored)[contact][b] = int(count)
            continue
        sid = segment_id if isinstance(segment_id, uuid.UUID) else uuid.UUID(str(segment_id))
        if kind == "b":
            before[sid] += int(count)
        elif kind == "d":
            by_day[sid][str(label)[:10]] = int(count)
        elif kind == "t":
            tail[sid][int(label)] = int(count)
        else:
            early[sid][int(label)] = int(count)

    keys = _segment_keys(session, {*before, *by_day, *tail, *early}, first)
    labels = [instant.date().isoformat() for instant in ordered]
    at_position = {instant: k for k, instant in enumerate(ordered)}
    counts: dict[str, list[int]] = {}
    for sid, key in keys.items():
        days, late_rows, part = by_day.get(sid, {}), tail.get(sid, {}), early.get(sid, {})
        per_instant = counts.setdefault(key, [0] * n)
        for k in range(n):
            upto = before.get(sid, 0) + sum(net for label, net in days.items() if label < labels[k])
            upto += sum(net for b, net in part.items() if b <= k and labels[b] == labels[k])
            upto += sum(net for b, net in late_rows.items() if b <= k)
            per_instant[k] += upto
    anyone = [
        sum(net for label, net in presence_days.items() if label < labels[k])
        + sum(net for b, net in presence_part.items() if b <= k and labels[b] == labels[k])
        for k in range(n)
    ]
    for contact in {*late_now, *late_feed, *late_stored}:
        moves, stored = late_feed.get(contact, {}), late_stored.get(contact, {})
        for k in range(n):
            present = late_now.get(contact, 0) - sum(net for b, net in moves.items() if b > k) > 0
            anyone[k] += int(present) - sum(d for b, d in stored.items() if b <= k)

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
