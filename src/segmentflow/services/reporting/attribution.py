"""Attribution in SQL, the same on SQLite and PostgreSQL: the membership stretches rewound from the stored
memberships and the change feed, conversations attributed at their time (live, from the raw events), SLA
events by the segments stored with them, and members at given instants. Never writes.

A (segment, contact) pair was a member at `t` when
- it is a member now and entered at or before `t` (`segment_membership.since <= t`), or
- the feed holds an `exited` row for it after `t` whose previous row for the pair is at or before `t`
  (or that has no previous row: an entry older than the feed).
So membership holds on `[entered, exited)`: an event at the very instant of an entry counts, one at the
instant of an exit does not.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import (
    change_table,
    contact_table,
    conversation_event_table,
    membership_table,
    segment_table,
    sla_event_table,
)
from segmentflow.services.reporting.figures import NO_SEGMENT, Figures, Key

__all__ = [
    "bucket_of",
    "covers",
    "day_bounds",
    "figures_of",
    "live_figures",
    "members_at",
    "membership_intervals",
    "sla_figures",
    "utc_day",
]


def membership_intervals(since: datetime, contacts: sa.Select[Any] | None = None) -> sa.Subquery:
    """Every stretch of membership the stored rows reconstruct that may cover an instant at or after
    `since`: `(segment_key, contact_key, start, end)` on `[start, end)`, a NULL `start` reaching back
    before the feed and a NULL `end` still running. An ended stretch is an `exited` feed row after
    `since`, starting at the pair's previous feed row (found through `ix_membership_change_contact`).
    `contacts`, a select of contact keys, limits the stretches to theirs."""
    feed = change_table
    before = change_table.alias("before")
    start = (
        sa.select(before.c.at)
        .where(
            before.c.segment_key == feed.c.segment_key,
            before.c.contact_key == feed.c.contact_key,
            before.c.seq < feed.c.seq,
        )
        .order_by(before.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    ended = sa.select(
        feed.c.segment_key, feed.c.contact_key, start.label("start"), feed.c.at.label("end")
    ).where(feed.c.change == "exited", feed.c.at > sa.literal(since, type_=feed.c.at.type))
    if contacts is not None:
        ended = ended.where(feed.c.contact_key.in_(contacts))
    running = (
        sa.select(
            segment_table.c.key.label("segment_key"),
            contact_table.c.key.label("contact_key"),
            membership_table.c.since.label("start"),
            sa.null().label("end"),
        )
        .select_from(membership_table)
        .join(segment_table, segment_table.c.id == membership_table.c.segment_id)
        .join(contact_table, contact_table.c.id == membership_table.c.contact_id)
    )
    if contacts is not None:
        running = running.where(contact_table.c.key.in_(contacts))
    return sa.union_all(ended, running).subquery("intervals")


def covers(intervals: sa.Subquery, instant: Any) -> sa.ColumnElement[bool]:
    return sa.and_(
        sa.or_(intervals.c.start.is_(None), intervals.c.start <= instant),
        sa.or_(intervals.c.end.is_(None), intervals.c.end > instant),
    )


def utc_day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a stored timestamp, as `YYYY-MM-DD` text: the one dialect branch here.
    SQLite stores UTC timestamps as text, so the day is its first ten characters."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)


def day_bounds(since: datetime, until: datetime) -> list[tuple[date, datetime]]:
    """Each UTC day the window touches, with the instant its members are counted at: the end of the day,
    or `until` for the last."""
    out = []
    day = since.astimezone(UTC).date()
    while True:
        end = datetime.combine(day + timedelta(days=1), time(), UTC)
        out.append((day, min(end, until)))
        if end >= until:
            return out
        day += timedelta(days=1)


def figures_columns(events: Any) -> list[Any]:
    return [
        sa.func.count().label("conversations"),
        sa.func.count(sa.case((events.c.handoff.is_(True), 1))).label("handoffs"),
        sa.func.count(events.c.handoff).label("handoff_known"),
        sa.func.count(events.c.csat).label("csat_responses"),
        sa.func.coalesce(sa.func.sum(events.c.csat), 0).label("csat_sum"),
        sa.func.count(sa.case((events.c.csat >= 4, 1))).label("csat_satisfied"),
    ]


def figures_of(row: Any) -> Figures:
    return Figures(
        conversations=int(row.conversations),
        handoffs=int(row.handoffs),
        handoff_known=int(row.handoff_known),
        csat_responses=int(row.csat_responses),
        csat_sum=int(row.csat_sum),
        csat_satisfied=int(row.csat_satisfied),
    )


def live_figures(session: Session, since: datetime, until: datetime, by_day: bool) -> dict[Key, Figures]:
    """Conversations in `[since, until)` attributed now from the raw events, per segment (and day), plus
    `""` for all of them."""
    events = conversation_event_table
    in_window = sa.and_(events.c.at >= since, events.c.at < until)
    intervals = membership_intervals(since, sa.select(events.c.contact_key).where(in_window))
    day = utc_day(session, events.c.at).label("day") if by_day else sa.null().label("day")
    segment = sa.func.coalesce(intervals.c.segment_key, NO_SEGMENT).label("segment")
    attributed = (
        sa.select(segment, day, *figures_columns(events))
        .select_from(events)
        .outerjoin(
            intervals,
            sa.and_(intervals.c.contact_key == events.c.contact_key, covers(intervals, events.c.at)),
        )
        .where(in_window)
        .group_by(segment, *([day] if by_day else []))
    )
    overall = sa.select(sa.literal("").label("segment"), day, *figures_columns(events)).where(in_window)
    if by_day:
        overall = overall.group_by(day)
    out: dict[Key, Figures] = {}
    for query in (attributed, overall):
        for row in session.execute(query):
            if row.conversations:
                out[row.segment, row.day] = figures_of(row)
    return out


def sla_figures(session: Session, since: datetime, until: datetime, by_day: bool) -> dict[Key, Figures]:
    """SLA warnings and breaches fired in the window, per segment the contact was in when each fired (and
    day), plus `""` for all of them. Expanding the stored JSON list is the dialect branch."""
    dialect = session.get_bind().dialect.name
    day = (
        "to_char(timezone('UTC', e.fired_at), 'YYYY-MM-DD')"
        if dialect == "postgresql"
        else "substr(e.fired_at, 1, 10)"
    )
    day_sql = day if by_day else "NULL"
    if dialect == "postgresql":
        expand = "LEFT JOIN LATERAL json_array_elements_text(e.segments) AS s(value) ON true"
    else:
        expand = "LEFT JOIN json_each(e.segments) AS s"
    params = {"since": since, "until": until}
    window = "e.fired_at >= :since AND e.fired_at < :until"
    per_segment = sa.text(
        f"SELECT COALESCE(s.value, '{NO_SEGMENT}') AS segment, {day_sql} AS day, e.kind AS kind, "
        "count(*) AS n "
        f"FROM sla_event AS e {expand} WHERE {window} GROUP BY 1, 2, 3"
    )
    overall = sa.text(
        f"SELECT '' AS segment, {day_sql} AS day, e.kind AS kind, count(*) AS n "
        f"FROM sla_event AS e WHERE {window} GROUP BY 2, 3"
    )
    bind = [
        sa.bindparam("since", type_=sla_event_table.c.fired_at.type),
        sa.bindparam("until", type_=sla_event_table.c.fired_at.type),
    ]
    out: dict[Key, Figures] = defaultdict(Figures)
    for query in (per_segment, overall):
        for row in session.execute(query.bindparams(*bind), params):
            figures = out[row.segment, row.day]
            if row.kind == "warning":
                figures.sla_warnings += int(row.n)
            elif row.kind == "breach":
                figures.sla_breaches += int(row.n)
    return dict(out)


def bucket_of(column: Any, instants: list[datetime]) -> Any:
    """The index of the first of the sorted `instants` at or after `column`; -1 for NULL (before them
    all), `len(instants)` for after them all."""
    typed = change_table.c.at.type
    whens = [(column.is_(None), -1)]
    whens += [(column <= sa.literal(instant, type_=typed), k) for k, instant in enumerate(instants)]
    return sa.case(*whens, else_=len(instants))


def _cumulative(counts: dict[int, int], size: int) -> list[int]:
    """`counts` by bucket summed up to each of `size` buckets (bucket -1 counts from the start)."""
    out, total = [], counts.get(-1, 0)
    for k in range(size):
        total += counts.get(k, 0)
        out.append(total)
    return out


def members_at(session: Session, instants: list[datetime]) -> dict[tuple[str, int], int]:
    """Members per segment key (and `""`: distinct contacts in any segment) at each of `instants`, by
    position. A segment's members at `t` are its stretches started by `t` less those ended by `t`, so
    one grouped pass buckets every start and end among the instants and running sums do the rest; the
    distinct contacts come from each contact's first entry into, and last exit from, any segment (a
    running count over its starts and ends). Grows with contacts x segments: the report reads
    `members.members_from_rollup` instead, and this stays as its peer (tests, `bench/`)."""
    ordered = sorted(set(instants))
    n = len(ordered)
    intervals = membership_intervals(ordered[0]).element.cte("iv")
    starts, ends = bucket_of(intervals.c.start, ordered), bucket_of(intervals.c.end, ordered)
    grouped = sa.select(
        intervals.c.segment_key, starts.label("b_start"), ends.label("b_end"), sa.func.count().label("n")
    ).group_by(intervals.c.segment_key, sa.literal_column("b_start"), sa.literal_column("b_end"))
    started: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    ended: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in session.execute(grouped):
        started[row.segment_key][row.b_start] += row.n
        if row.b_end != -1:  # a running stretch never ends
            ended[row.segment_key][row.b_end] += row.n

    points = sa.union_all(
        sa.select(intervals.c.contact_key, intervals.c.start.label("t"), sa.literal(1).label("d")),
        sa.select(intervals.c.contact_key, intervals.c.end.label("t"), sa.literal(-1).label("d")).where(
            intervals.c.end.is_not(None)
        ),
    ).subquery("points")
    running = sa.select(
        points.c.t,
        points.c.d,
        sa.func.sum(points.c.d)
        .over(
            partition_by=points.c.contact_key,
            order_by=(points.c.t.asc().nulls_first(), points.c.d),
            rows=(None, 0),
        )
        .label("run"),
    ).subquery("running")
    step = sa.case(
        (sa.and_(running.c.d == 1, running.c.run == 1), 1),
        (sa.and_(running.c.d == -1, running.c.run == 0), -1),
        else_=0,
    )
    bucket = bucket_of(running.c.t, ordered).label("b")
    overall = sa.select(bucket, sa.func.sum(step).label("n")).group_by(sa.literal_column("b"))
    steps = {int(row.b): int(row.n or 0) for row in session.execute(overall)}

    at_position = {instant: k for k, instant in enumerate(ordered)}
    out: dict[tuple[str, int], int] = {}
    for key in started:
        members = [
            a - b for a, b in zip(_cumulative(started[key], n), _cumulative(ended[key], n), strict=True)
        ]
        for i, instant in enumerate(instants):
            out[key, i] = members[at_position[instant]]
    anyone = _cumulative(steps, n)
    for i, instant in enumerate(instants):
        out["", i] = anyone[at_position[instant]]
    return out
