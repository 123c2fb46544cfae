"""Resumable recompute runs: contacts split into id ranges, each range paged with a durable cursor.

`plan_ranges` cuts the contact table into ranges of about `range_size` contacts (workers process ranges in
parallel). `recompute_range_step` recomputes the next page of a range and moves that range's cursor and
counts in the same transaction, so whoever resumes the range (another attempt, another worker) continues
from the committed cursor: nothing is skipped, nothing counted twice, no change event duplicated.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import contact_table, progress_table, utcnow
from segmentflow.services.membership import (
    EvaluatedPage,
    RecomputeCounts,
    apply_page,
    evaluate_page,
    recompute_page,
)
from segmentflow.services.segments import SegmentIndex, dependents_of

__all__ = [
    "RangeProgress",
    "evaluate_range_step",
    "expand_segment_keys",
    "finish_run",
    "plan_ranges",
    "recompute_range_step",
]


@dataclass(frozen=True, slots=True)
class RangeProgress:
    cursor: int
    counts: RecomputeCounts
    done: bool


def plan_ranges(*, session: Session, range_size: int) -> list[tuple[int, int]]:
    """Contiguous (first id, last id) ranges covering every contact, about `range_size` contacts each."""
    numbered = sa.select(
        contact_table.c.id, sa.func.row_number().over(order_by=contact_table.c.id).label("n")
    ).subquery()
    starts = list(
        session.scalars(
            sa.select(numbered.c.id).where((numbered.c.n - 1) % range_size == 0).order_by(numbered.c.id)
        )
    )
    if not starts:
        return []
    last = session.scalar(sa.select(sa.func.max(contact_table.c.id)))
    assert last is not None
    ends = [s - 1 for s in starts[1:]] + [last]
    return list(zip(starts, ends, strict=True))


def expand_segment_keys(index: SegmentIndex, keys: Collection[str] | None) -> set[str] | None:
    """None (every segment), or the named segments plus their dependents; unknown keys raise KeyError."""
    if keys is None:
        return None
    missing = sorted(set(keys) - set(index.compiled))
    if missing:
        raise KeyError(missing[0])
    return dependents_of((s.definition for s in index.compiled.values()), keys)


def _range_row(run_token: str, range_index: int) -> sa.ColumnElement[bool]:
    """The progress row of one range of a run."""
    return sa.and_(progress_table.c.run_token == run_token, progress_table.c.range_index == range_index)


def evaluate_range_step(
    *,
    session: Session,
    index: SegmentIndex,
    run_token: str,
    range_index: int,
    first_id: int,
    last_id: int,
    page_size: int,
    segment_keys: set[str] | None,
) -> EvaluatedPage | None:
    """Read the range's committed cursor and evaluate the page after it, writing nothing (None when the
    range is done): what `recompute_range_step(evaluated=...)` then applies under the write lock, so
    evaluation runs beside other writers (on SQLite too, where a range page otherwise takes the database's
    write lock before it reads)."""
    this_range = _range_row(run_token, range_index)
    cursor = session.scalar(sa.select(progress_table.c.cursor).where(this_range))
    after = first_id - 1 if cursor is None else cursor
    if after >= last_id:
        return None
    page = evaluate_page(
        session=session,
        index=index,
        after_id=after,
        upto_id=last_id,
        limit=page_size,
        segment_keys=segment_keys,
    )
    return EvaluatedPage(
        after + 1, last_id if page is None else page.last_id, [] if page is None else page.contacts
    )


def recompute_range_step(
    *,
    session: Session,
    index: SegmentIndex,
    run_token: str,
    range_index: int,
    first_id: int,
    last_id: int,
    page_size: int,
    segment_keys: set[str] | None,
    evaluated: EvaluatedPage | None = None,
) -> RangeProgress:
    """Recompute the next page of one range and move its durable cursor; never commits. With `evaluated`
    (from `evaluate_range_step`) and the cursor still where that page starts, the page is applied as
    evaluated (`apply_page` re-checks its contacts); otherwise it is read and evaluated here.

    The cursor row is claimed with a write before it is read: on PostgreSQL that locks the row, on SQLite
    it takes the database's write lock at once (SQLite ignores FOR UPDATE, and a deferred transaction that
    read first would fail with BUSY when it came to write). Two attempts at the same range so run one
    after the other, the second starting from the first one's cursor."""
    this_range = _range_row(run_token, range_index)
    now = utcnow()
    session.execute(  # the range's first step makes its row; an attempt racing it waits, then does nothing
        insert_on_conflict(session, progress_table)
        .values(
            run_token=run_token,
            range_index=range_index,
            cursor=first_id - 1,
            contacts=0,
            entered=0,
            exited=0,
            updated_at=now,
        )
        .on_conflict_do_nothing()
    )
    session.execute(progress_table.update().where(this_range).values(updated_at=now))  # the claim
    row = session.execute(sa.select(progress_table).where(this_range)).one()
    cursor, totals = row.cursor, RecomputeCounts(row.contacts, row.entered, row.exited)
    if cursor >= last_id:
        return RangeProgress(cursor, totals, True)
    if evaluated is not None and evaluated.first_id == cursor + 1:
        counts = apply_page(session=session, index=index, page=evaluated, segment_keys=segment_keys)
        last_seen: int | None = evaluated.last_id
    else:
        counts, last_seen = recompute_page(
            session=session,
            index=index,
            after_id=cursor,
            upto_id=last_id,
            limit=page_size,
            segment_keys=segment_keys,
        )
    totals.add(counts)
    cursor = last_id if last_seen is None else last_seen
    session.execute(
        progress_table.update()
        .where(this_range)
        .values(
            cursor=cursor,
            contacts=totals.contacts,
            entered=totals.entered,
            exited=totals.exited,
            updated_at=utcnow(),
        )
    )
    return RangeProgress(cursor, totals, cursor >= last_id)


def finish_run(*, session: Session, run_token: str) -> None:
    """Forget a finished run's cursors."""
    session.execute(progress_table.delete().where(progress_table.c.run_token == run_token))
