"""The segment report: conversations, handoff rate, CSAT and SLA events per segment over a time window,
each conversation attributed to the segments its contact was in at the conversation's time
(`attribution`); whole days come from a rollup (`rollup`), member counts from the change feed's daily
rollup (`members`), the report's shapes from `figures`. Anonymous
events, contacts unknown at that time and contacts in no segment count under the key `"-"`. A contact in
several segments counts once in each, and once in `overall`. Never commits (a report may rebuild rollup
days in the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import segment_table
from segmentflow.services.reporting.attribution import (
    day_bounds,
    live_figures,
    members_at,
    membership_intervals,
    sla_figures,
)
from segmentflow.services.reporting.figures import (
    CSV_COLUMNS,
    MAX_SERIES_DAYS,
    NO_SEGMENT,
    NO_SEGMENT_NAME,
    OVERALL_NAME,
    Figures,
    Interval,
    Key,
    ReportError,
    ReportRow,
    SegmentReport,
    report_csv,
)
from segmentflow.services.reporting.members import members_from_rollup
from segmentflow.services.reporting.rollup import (
    full_day_span,
    mark_days_dirty,
    midnight,
    refresh_rollup,
    rollup_figures,
)

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
    "live_figures",
    "mark_days_dirty",
    "members_at",
    "members_from_rollup",
    "membership_intervals",
    "refresh_rollup",
    "report_csv",
    "segment_report",
]


def _conversation_figures(
    session: Session, since: datetime, until: datetime, by_day: bool
) -> dict[Key, Figures]:
    """Conversation figures of the window: the whole days from the rollup (refreshed first where it
    needs to be), the partial days at either end attributed live."""
    span = full_day_span(since, until)
    if span is None:
        return live_figures(session, since, until, by_day)
    first, last = span
    refresh_rollup(session=session, first=first, last=last)
    out = rollup_figures(session, first, last, by_day)
    for start, end in ((since, midnight(first)), (midnight(last + timedelta(days=1)), until)):
        if start < end:
            for key, figures in live_figures(session, start, end, by_day).items():
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
    too_long = by_day and until - since > timedelta(days=MAX_SERIES_DAYS)  # before listing the days
    days = day_bounds(since, until) if by_day and not too_long else []
    if too_long or len(days) > MAX_SERIES_DAYS:
        raise ReportError(f"a daily series covers at most {MAX_SERIES_DAYS} days", "interval")
    figures = _conversation_figures(session, since, until, by_day)
    for key, sla in sla_figures(session, since, until, by_day).items():
        figures.setdefault(key, Figures()).add(sla)
    instants = [until, *(end for _, end in days)]
    members = members_from_rollup(session, instants)

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
