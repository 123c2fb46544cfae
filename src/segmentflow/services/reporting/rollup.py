"""The report's daily rollup: additive figures per UTC day and segment key, rebuilt for the days that are
dirty (events recorded since), stale (a change-feed row written since the build with an earlier `at`) or
never built. Never commits."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import change_table, report_day_figures_table, report_day_table
from segmentflow.services.membership import take_feed_lock
from segmentflow.services.reporting.attribution import figures_of, live_figures
from segmentflow.services.reporting.figures import Figures, Key

__all__ = ["full_day_span", "mark_days_dirty", "midnight", "refresh_rollup", "rollup_figures"]


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def full_day_span(since: datetime, until: datetime) -> tuple[date, date] | None:
    """The first and last UTC day lying wholly inside `[since, until)`, or None when none does."""
    try:
        first = since.astimezone(UTC).date()
        if midnight(first) < since:
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
    meanwhile either is read or marks the day dirty again after this commits. A first look without the
    lock returns at once when every day in range is clean and current, so reports do not queue on it."""
    days = report_day_table
    in_range = days.c.day.between(first.isoformat(), last.isoformat())
    if not build:
        last_seq = sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0)).scalar_subquery()
        behind = sa.or_(days.c.dirty.is_(True), days.c.feed_seq < last_seq)
        if session.scalar(sa.select(days.c.day).where(in_range, behind).limit(1)) is None:
            return 0
    take_feed_lock(session)
    top = int(session.scalar(sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0))) or 0)
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
        live = live_figures(session, midnight(run_first), midnight(run_last + timedelta(days=1)), True)
        for (segment, day), figures in live.items():
            if day in wanted:
                counts = {name: getattr(figures, name) for name in _FIGURE_COLUMNS}
                rows.append({"day": day, "segment_key": segment, **counts})
    if rows:
        session.execute(figures_table.insert(), rows)
    return len(rebuild)


def rollup_figures(session: Session, first: date, last: date, by_day: bool) -> dict[Key, Figures]:
    """The rollup's figures from `first` to `last`, per segment key (and day)."""
    table = report_day_figures_table
    sums = [sa.func.sum(table.c[name]).label(name) for name in _FIGURE_COLUMNS]
    grouping = [table.c.segment_key, *([table.c.day] if by_day else [])]
    query = (
        sa.select(*grouping, *sums)
        .where(table.c.day.between(first.isoformat(), last.isoformat()))
        .group_by(*grouping)
    )
    return {(row.segment_key, row.day if by_day else None): figures_of(row) for row in session.execute(query)}
