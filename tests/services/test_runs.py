"""Durable range cursors of the recompute workflow: attempts of one range that overlap (a retry started
while a timed-out attempt still runs) neither fail nor count anything twice, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading

from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import change_table, membership_table
from segmentflow.services.membership import recompute_all
from segmentflow.services.runs import plan_ranges, recompute_range_step
from segmentflow.services.segments import load_index

from .test_recompute import _changes, _context, _expected, _load, _stored


def _run_range(engine: Engine, first: int, last: int, done: list[int], errors: list[BaseException]) -> None:
    """One attempt of range 0, page by page, each page in its own transaction (as the activity runs it)."""
    try:
        with Session(engine) as session:
            index = load_index(session=session)
        while True:
            with Session(engine) as session, session.begin():
                progress = recompute_range_step(
                    session=session,
                    index=index,
                    run_token="race",
                    range_index=0,
                    first_id=first,
                    last_id=last,
                    page_size=3,
                    segment_keys=None,
                )
            if progress.done:
                done.append(progress.counts.contacts)
                return
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_overlapping_attempts_of_one_range_neither_fail_nor_double_count(engine: Engine) -> None:
    contexts = [_context(random.Random(9), i) for i in range(45)]
    _load(engine, contexts)
    with Session(engine) as session:
        ((first, last),) = plan_ranges(session=session, range_size=1000)
    done: list[int] = []
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_run_range, args=(engine, first, last, done, errors)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Every attempt reports the range's exact totals, whichever of them did each page.
    assert done == [45, 45, 45]
    expected = _expected(contexts)
    assert _stored(engine) == expected
    events = _changes(engine)
    assert len(events) == sum(len(v) for v in expected.values())


def test_ranges_run_at_once_give_the_memberships_and_feed_of_one_process(engine: Engine) -> None:
    """The workflow's ranges spread over several workers (threads here, processes in
    `bench/recompute.py --processes`) leave exactly what one `recompute_all` leaves: the same memberships
    and the same change-feed rows (interleaved differently, so compared as a multiset)."""
    contexts = [_context(random.Random(11), i) for i in range(60)]
    _load(engine, contexts)
    with Session(engine) as session:
        ranges = plan_ranges(session=session, range_size=8)
        index = load_index(session=session)
    assert len(ranges) == 8
    errors: list[BaseException] = []

    def run(index_of_range: int, first: int, last: int) -> None:
        try:
            while True:
                with Session(engine) as session, session.begin():
                    progress = recompute_range_step(
                        session=session,
                        index=index,
                        run_token="spread",
                        range_index=index_of_range,
                        first_id=first,
                        last_id=last,
                        page_size=3,
                        segment_keys=None,
                    )
                if progress.done:
                    return
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, a, b)) for i, (a, b) in enumerate(ranges)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    spread = (_stored(engine), sorted(_changes(engine)))
    with engine.begin() as connection:
        connection.execute(membership_table.delete())
        connection.execute(change_table.delete())
    recompute_all(engine)
    assert spread == (_stored(engine), sorted(_changes(engine)))
    assert spread[0] == _expected(contexts)
