"""The segment report: conversations, handoff rate, CSAT and SLA events per segment over a time window,
each conversation attributed to the segments its contact was in at the conversation's time. Never commits.

Attribution rewinds the stored memberships through the change feed, in SQL (one aggregate query, the same
on SQLite and PostgreSQL). A (segment, contact) pair was a member at `t` when
- it is a member now and entered at or before `t` (`segment_membership.since <= t`), or
- the feed holds an `exited` row for it after `t` whose previous row for the pair is at or before `t`
  (or that has no previous row: an entry older than the feed).
So membership holds on `[entered, exited)`: an event at the very instant of an entry counts, one at the
instant of an exit does not. Anonymous events, contacts unknown at that time and contacts in no segment
count under the key `"-"`. A contact in several segments counts once in each, and once in `overall`.

SLA events carry the contact's segments as they were when they fired (`sla_event.segments`), so they are
counted by those; one with none counts under `"-"`.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import (
    change_table,
    contact_table,
    conversation_event_table,
    membership_table,
    report_day_figures_table,
    report_day_table,
    segment_table,
    sla_event_table,
)
from segmentflow.services.membership import take_feed_lock

__all__ = [
    "CSV_COLUMNS",
    "MAX_SERIES_DAYS",
    "NO_SEGMENT",
    "NO_SEGMENT_NAME",
    "OVERALL_NAME",
    "Figures",
    "ReportError",
    "ReportRow",
    "SegmentReport",
    "mark_days_dirty",
    "membership_intervals",
    "refresh_rollup",
    "report_csv",
    "segment_report",
]

#: The key of the row of conversations attributed to no segment (never a valid segment key).
NO_SEGMENT: Final = "-"
NO_SEGMENT_NAME: Final = "No segment"
OVERALL_NAME: Final = "Overall"
#: The longest window a per-day series may cover.
MAX_SERIES_DAYS: Final = 366

Interval = Literal["day"]


class ReportError(ValueError):
    """A report that cannot be made: the window is empty (`field` "since") or too long for a series
    (`field` "interval")."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Figures:
    """Additive counts of one row (or one day of a row): rates are derived when the report is read."""

    conversations: int = 0
    handoffs: int = 0
    handoff_known: int = 0
    csat_responses: int = 0
    csat_sum: int = 0
    csat_satisfied: int = 0
    sla_warnings: int = 0
    sla_breaches: int = 0

    def add(self, other: Figures) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def handoff_rate(self) -> float | None:
        return self.handoffs / self.handoff_known if self.handoff_known else None

    @property
    def csat_average(self) -> float | None:
        return self.csat_sum / self.csat_responses if self.csat_responses else None

    @property
    def csat_share_satisfied(self) -> float | None:
        return self.csat_satisfied / self.csat_responses if self.csat_responses else None

    def to_json(self) -> dict[str, Any]:
        """The figures of the API's row: `conversations`, `handoffRate`, `csat`, `sla`."""
        return {
            "conversations": self.conversations,
            "handoffRate": self.handoff_rate,
            "csat": {
                "responses": self.csat_responses,
                "average": self.csat_average,
                "satisfied": self.csat_share_satisfied,
            },
            "sla": {"warnings": self.sla_warnings, "breaches": self.sla_breaches},
        }


@dataclass
class ReportRow:
    #: The segment key, `"-"`, or None for the overall row.
    segment: str | None
    name: str | None
    #: Members at `until` (per day: at the end of that day); None for the `"-"` row.
    members: int | None
    figures: Figures = field(default_factory=Figures)
    #: Per UTC day, with `interval="day"`: (day, members at its end, figures).
    series: list[tuple[date, int | None, Figures]] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"segment": self.segment, "name": self.name, "members": self.members}
        out |= self.figures.to_json()
        if self.series is not None:
            out["series"] = [
                {"date": day.isoformat(), "members": members, **figures.to_json()}
                for day, members, figures in self.series
            ]
        return out


@dataclass
class SegmentReport:
    since: datetime
    until: datetime
    data: list[ReportRow]
    overall: ReportRow

    def to_json(self) -> dict[str, Any]:
        """The API's body: `{"since", "until", "data": [row], "overall": row}`."""
        return {
            "since": _iso(self.since),
            "until": _iso(self.until),
            "data": [row.to_json() for row in self.data],
            "overall": self.overall.to_json(),
        }


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def membership_intervals(since: datetime, contacts: sa.Select[Any] | None = None) -> sa.Subquery:
    """Every stretch of membership the stored rows reconstruct that may cover an instant at or after
    `since`: `(segment_key, contact_key, start, end)` on `[start, end)`, a NULL `start` reaching back
    before the feed and a NULL `end` still running. An ended stretch is an `exited` feed row after
    `since`, starting at the pair's previous feed row (found through `ix_membership_change_pair`).
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


def _covers(intervals: sa.Subquery, instant: Any) -> sa.ColumnElement[bool]:
    return sa.and_(
        sa.or_(intervals.c.start.is_(None), intervals.c.start <= instant),
        sa.or_(intervals.c.end.is_(None), intervals.c.end > instant),
    )


def _utc_day(session: Session, column: Any) -> Any:
    """The UTC calendar day of a stored timestamp, as `YYYY-MM-DD` text: the one dialect branch here.
    SQLite stores UTC timestamps as text, so the day is its first ten characters."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)


def _day_bounds(since: datetime, until: datetime) -> list[tuple[date, datetime]]:
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


def _figures_columns(events: Any) -> list[Any]:
    return [
        sa.func.count().label("conversations"),
        sa.func.count(sa.case((events.c.handoff.is_(True), 1))).label("handoffs"),
        sa.func.count(events.c.handoff).label("handoff_known"),
        sa.func.count(events.c.csat).label("csat_responses"),
        sa.func.coalesce(sa.func.sum(events.c.csat), 0).label("csat_sum"),
        sa.func.count(sa.case((events.c.csat >= 4, 1))).label("csat_satisfied"),
    ]


def _figures(row: Any) -> Figures:
    return Figures(
        conversations=int(row.conversations),
        handoffs=int(row.handoffs),
        handoff_known=int(row.handoff_known),
        csat_responses=int(row.csat_responses),
        csat_sum=int(row.csat_sum),
        csat_satisfied=int(row.csat_satisfied),
    )


Key = tuple[str, str | None]  # (segment key or "-" or "" for overall, day or None)


def _live_figures(session: Session, since: datetime, until: datetime, by_day: bool) -> dict[Key, Figures]:
    """Conversations in `[since, until)` attributed now from the raw events, per segment (and day), plus
    `""` for all of them."""
    events = conversation_event_table
    in_window = sa.and_(events.c.at >= since, events.c.at < until)
    intervals = membership_intervals(since, sa.select(events.c.contact_key).where(in_window))
    day = _utc_day(session, events.c.at).label("day") if by_day else sa.null().label("day")
    segment = sa.func.coalesce(intervals.c.segment_key, NO_SEGMENT).label("segment")
    attributed = (
        sa.select(segment, day, *_figures_columns(events))
        .select_from(events)
        .outerjoin(
            intervals,
            sa.and_(intervals.c.contact_key == events.c.contact_key, _covers(intervals, events.c.at)),
        )
        .where(in_window)
        .group_by(segment, *([day] if by_day else []))
    )
    overall = sa.select(sa.literal("").label("segment"), day, *_figures_columns(events)).where(in_window)
    if by_day:
        overall = overall.group_by(day)
    out: dict[Key, Figures] = {}
    for query in (attributed, overall):
        for row in session.execute(query):
            if row.conversations:
                out[row.segment, row.day] = _figures(row)
    return out


def _sla_figures(session: Session, since: datetime, until: datetime, by_day: bool) -> dict[Key, Figures]:
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


def _bucket(column: Any, instants: list[datetime]) -> Any:
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


def _members(session: Session, instants: list[datetime]) -> dict[tuple[str, int], int]:
    """Members per segment key (and `""`: distinct contacts in any segment) at each of `instants`, by
    position. A segment's members at `t` are its stretches started by `t` less those ended by `t`, so
    one grouped pass buckets every start and end among the instants and running sums do the rest; the
    distinct contacts come from each contact's first entry into, and last exit from, any segment (a
    running count over its starts and ends)."""
    ordered = sorted(set(instants))
    n = len(ordered)
    intervals = membership_intervals(ordered[0]).element.cte("iv")
    starts, ends = _bucket(intervals.c.start, ordered), _bucket(intervals.c.end, ordered)
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
    bucket = _bucket(running.c.t, ordered).label("b")
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


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def _full_day_span(since: datetime, until: datetime) -> tuple[date, date] | None:
    """The first and last UTC day lying wholly inside `[since, until)`, or None when none does."""
    try:
        first = since.astimezone(UTC).date()
        if _midnight(first) < since:
            first += timedelta(days=1)
        last = until.astimezone(UTC).date() - timedelta(days=1)
    except OverflowError:  # at the ends of the calendar
        return None
    return (first, last) if first <= last else None


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days as runs of consecutive days: `(first, last)`."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def mark_days_dirty(*, session: Session, days: Iterable[date]) -> None:
    """Days whose events changed: their rollup is rebuilt before it is next read. Rows are locked in day
    order, as `refresh_rollup` locks them, so the two never deadlock."""
    rows = [{"day": d.isoformat(), "dirty": True, "feed_seq": 0} for d in sorted(set(days))]
    if not rows:
        return
    statement = insert_on_conflict(session, report_day_table)
    session.execute(statement.on_conflict_do_update(index_elements=["day"], set_={"dirty": True}), rows)


_FIGURE_COLUMNS = (
    "conversations",
    "handoffs",
    "handoff_known",
    "csat_responses",
    "csat_sum",
    "csat_satisfied",
)


def refresh_rollup(*, session: Session, first: date, last: date, build: Collection[date] = ()) -> int:
    """Rebuild the rollup of the days from `first` to `last` that need it: dirty (events recorded since
    it was built; recording marks the day), stale (a feed row written since the build has an `at`
    before the day's end, so it may change whom the day's conversations count under), or listed in
    `build` and never built. A day never marked holds no events. Returns how many days were rebuilt.

    Serialised with the change-feed writers (`take_feed_lock`), so the feed's last seq and the feed read
    agree; each day's row is claimed (marked clean) before its events are read, so an event recorded
    meanwhile either is read or marks the day dirty again after this commits."""
    take_feed_lock(session)
    top = int(session.scalar(sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0))) or 0)
    days = report_day_table
    in_range = days.c.day.between(first.isoformat(), last.isoformat())
    oldest = session.scalar(sa.select(sa.func.min(days.c.feed_seq)).where(in_range, days.c.dirty.is_(False)))
    earliest_change = None
    if oldest is not None and oldest < top:
        earliest_change = session.scalar(
            sa.select(sa.func.min(change_table.c.at)).where(change_table.c.seq > oldest)
        )
    stale: sa.ColumnElement[bool] = days.c.dirty.is_(True)
    if earliest_change is not None:
        # days ending after the earliest change: from the day holding it on
        since_day = earliest_change.astimezone(UTC).date().isoformat()
        stale = sa.or_(stale, sa.and_(days.c.feed_seq < top, days.c.day >= since_day))
    wanted = set(session.scalars(sa.select(days.c.day).where(in_range, stale)))
    if oldest is not None and oldest < top:
        # The clean days left are consistent with the feed up to `top`: the next check reads from there.
        session.execute(
            days.update()
            .where(in_range, days.c.dirty.is_(False), days.c.feed_seq < top, days.c.day.not_in(wanted))
            .values(feed_seq=top)
        )
    known = set(session.scalars(sa.select(days.c.day).where(days.c.day.in_([d.isoformat() for d in build]))))
    wanted |= {d.isoformat() for d in build if first <= d <= last} - known
    if not wanted:
        return 0
    rebuild = sorted(date.fromisoformat(d) for d in wanted)
    claim = insert_on_conflict(session, days)
    session.execute(
        claim.on_conflict_do_update(index_elements=["day"], set_={"dirty": False, "feed_seq": top}),
        [{"day": d.isoformat(), "dirty": False, "feed_seq": top} for d in rebuild],
    )
    figures_table = report_day_figures_table
    for start in range(0, len(rebuild), 500):
        chunk = [d.isoformat() for d in rebuild[start : start + 500]]
        session.execute(figures_table.delete().where(figures_table.c.day.in_(chunk)))
    rows = []
    for run_first, run_last in _runs(rebuild):
        live = _live_figures(session, _midnight(run_first), _midnight(run_last + timedelta(days=1)), True)
        for (segment, day), figures in live.items():
            if day in wanted:
                counts = {name: getattr(figures, name) for name in _FIGURE_COLUMNS}
                rows.append({"day": day, "segment_key": segment, **counts})
    if rows:
        session.execute(figures_table.insert(), rows)
    return len(rebuild)


def _rollup_figures(session: Session, first: date, last: date, by_day: bool) -> dict[Key, Figures]:
    """The rollup's figures from `first` to `last`, per segment key (and day)."""
    table = report_day_figures_table
    sums = [sa.func.sum(table.c[name]).label(name) for name in _FIGURE_COLUMNS]
    grouping = [table.c.segment_key, *([table.c.day] if by_day else [])]
    query = (
        sa.select(*grouping, *sums)
        .where(table.c.day.between(first.isoformat(), last.isoformat()))
        .group_by(*grouping)
    )
    return {(row.segment_key, row.day if by_day else None): _figures(row) for row in session.execute(query)}


def _conversation_figures(
    session: Session, since: datetime, until: datetime, by_day: bool
) -> dict[Key, Figures]:
    """Conversation figures of the window: the whole days from the rollup (refreshed first where it
    needs to be), the partial days at either end attributed live."""
    span = _full_day_span(since, until)
    if span is None:
        return _live_figures(session, since, until, by_day)
    first, last = span
    refresh_rollup(session=session, first=first, last=last)
    out = _rollup_figures(session, first, last, by_day)
    for start, end in ((since, _midnight(first)), (_midnight(last + timedelta(days=1)), until)):
        if start < end:
            for key, figures in _live_figures(session, start, end, by_day).items():
                out.setdefault(key, Figures()).add(figures)
    return out


def segment_report(
    *, session: Session, since: datetime, until: datetime, interval: Interval | None = None
) -> SegmentReport:
    """The report over `[since, until)`: a row per stored segment (key order), then any segment gone
    since that still has figures in the window, then `"-"`; and `overall`. With `interval="day"`, each
    row has a series over every UTC day the window touches."""
    if since >= until:
        raise ReportError("since must be before until", "since")
    by_day = interval == "day"
    days = _day_bounds(since, until) if by_day else []
    if len(days) > MAX_SERIES_DAYS:
        raise ReportError(f"a daily series covers at most {MAX_SERIES_DAYS} days", "interval")
    figures = _conversation_figures(session, since, until, by_day)
    for key, sla in _sla_figures(session, since, until, by_day).items():
        figures.setdefault(key, Figures()).add(sla)
    instants = [until, *(end for _, end in days)]
    members = _members(session, instants)

    ordered = sa.select(segment_table.c.key, segment_table.c.name).order_by(segment_table.c.key)
    names: dict[str, str] = {key: name for key, name in session.execute(ordered)}
    seen = {segment for segment, _ in figures} | {segment for segment, _ in members}
    gone = sorted(seen - set(names) - {"", NO_SEGMENT})
    keys: Iterable[str] = [*names, *gone, NO_SEGMENT]

    def row(segment: str, name: str | None) -> ReportRow:
        counted = segment != NO_SEGMENT
        out = ReportRow(segment or None, name, members.get((segment, 0), 0) if counted else None)
        if by_day:
            out.series = []
            for i, (day, _) in enumerate(days, start=1):
                day_figures = figures.get((segment, day.isoformat()), Figures())
                out.figures.add(day_figures)
                out.series.append((day, members.get((segment, i), 0) if counted else None, day_figures))
        else:
            out.figures = figures.get((segment, None), Figures())
        return out

    data = [row(key, names.get(key, key if key != NO_SEGMENT else NO_SEGMENT_NAME)) for key in keys]
    return SegmentReport(since=since, until=until, data=data, overall=row("", OVERALL_NAME))


#: The CSV's columns: one line per row (with `date` empty), then its days with `interval=day`.
CSV_COLUMNS: Final = (
    "segment",
    "name",
    "date",
    "members",
    "conversations",
    "handoffRate",
    "csatResponses",
    "csatAverage",
    "csatSatisfied",
    "slaWarnings",
    "slaBreaches",
)


def _csv_line(segment: str | None, name: str | None, day: str, members: int | None, f: Figures) -> list[Any]:
    def blank(value: Any) -> Any:
        return "" if value is None else value

    return [
        "*" if segment is None else segment,
        blank(name),
        day,
        blank(members),
        f.conversations,
        blank(f.handoff_rate),
        f.csat_responses,
        blank(f.csat_average),
        blank(f.csat_share_satisfied),
        f.sla_warnings,
        f.sla_breaches,
    ]


def report_csv(report: SegmentReport) -> str:
    """The report as CSV: the rows in order, the overall row last with segment `*`; empty cells where the
    JSON has null."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*report.data, report.overall]:
        writer.writerow(_csv_line(row.segment, row.name, "", row.members, row.figures))
        for day, members, figures in row.series or ():
            writer.writerow(_csv_line(row.segment, row.name, day.isoformat(), members, figures))
    return buffer.getvalue()
