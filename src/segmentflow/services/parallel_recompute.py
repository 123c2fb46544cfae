"""The full recompute spread over spawned processes (`recompute_all(processes=N)`).

The contact ids are split into the pages one process would read (`page_size` contacts each, contiguous
id ranges); each worker process builds the same segment index from the same definitions.

- SQLite has one writer at a time, so the workers only read and evaluate pages, in read-only
  transactions that run beside the writer (WAL readers never wait), and the calling process applies the
  results in page order with `apply_page`, which re-checks each page against the contacts as they are
  then. Memberships and change feed (rows and order) are those of one process.
- PostgreSQL takes concurrent writers, so each worker recomputes whole pages in transactions of its own
  (`recompute_page`: the page's contacts locked, the feed written under the feed lock so seq becomes
  visible in order). Memberships are those of one process and the change feed the same rows; pages
  commit in whatever order they finish.

Contacts added after the plan (ids past its last one) are recomputed by the calling process at the end.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterator
from multiprocessing.pool import AsyncResult
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.engine import make_engine
from segmentflow.services.membership import (
    EvaluatedPage,
    RecomputeCounts,
    apply_pages,
    evaluate_page,
    evaluate_pages,
    recompute_page,
)
from segmentflow.services.segments import SegmentIndex, build_index

__all__ = ["evaluate_in_processes", "plan_pages", "recompute_in_processes"]

IndexSource = list[tuple[str, uuid.UUID, dict[str, Any]]]

# Pages in flight per process: enough to keep each one busy while the writer applies, few enough that
# results waiting for the writer stay small.
_AHEAD = 12

_WORKER: dict[str, Any] = {}


def plan_pages(engine: Engine, page_size: int) -> list[tuple[int, int]]:
    """(first id, last id) of each page, contiguous from id 1: the contacts one process would read
    `page_size` at a time."""
    with engine.connect() as connection:
        ids = [row[0] for row in connection.exec_driver_sql("SELECT id FROM contact ORDER BY id")]
    bounds, first = [], 1
    for start in range(0, len(ids), page_size):
        last = ids[min(start + page_size, len(ids)) - 1]
        bounds.append((first, last))
        first = last + 1
    return bounds


def _start(url: str, source: IndexSource, segment_keys: Collection[str] | None) -> None:
    os.nice(5)
    _WORKER["engine"] = make_engine(url)
    _WORKER["index"] = build_index(source)
    _WORKER["keys"] = segment_keys


def _evaluate(bounds: tuple[int, int]) -> EvaluatedPage:
    first, last = bounds
    engine: Engine = _WORKER["engine"]
    index: SegmentIndex = _WORKER["index"]
    with Session(engine) as session:
        page = evaluate_page(
            session=session,
            index=index,
            after_id=first - 1,
            upto_id=last,
            limit=last - first + 1,
            segment_keys=_WORKER["keys"],
        )
    return EvaluatedPage(first, last, [] if page is None else page.contacts)


def _recompute(bounds: tuple[int, int]) -> tuple[int, int, int]:
    first, last = bounds
    engine: Engine = _WORKER["engine"]
    with Session(engine) as session, session.begin():
        counts, _ = recompute_page(
            session=session,
            index=_WORKER["index"],
            after_id=first - 1,
            upto_id=last,
            limit=last - first + 1,
            segment_keys=_WORKER["keys"],
        )
    return counts.contacts, counts.entered, counts.exited


def recompute_in_processes(
    engine: Engine,
    source: IndexSource,
    *,
    segment_keys: Collection[str] | None,
    page_size: int,
    processes: int,
    progress: Callable[[int], None] | None = None,
) -> RecomputeCounts:
    """The full recompute over `processes` spawned processes (see the module's description)."""
    index = build_index(source)
    if engine.dialect.name != "postgresql":
        pages = evaluate_in_processes(
            engine, source, segment_keys=segment_keys, page_size=page_size, processes=processes
        )
        return apply_pages(engine, index, pages, segment_keys=segment_keys, progress=progress)
    bounds = plan_pages(engine, page_size)
    total = RecomputeCounts()
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_start, initargs=(url, source, segment_keys)) as pool:
        for contacts, entered, exited in pool.imap_unordered(_recompute, bounds):
            total.add(RecomputeCounts(contacts, entered, exited))
            if progress is not None:
                progress(contacts)
    tail = evaluate_pages(
        engine, index, segment_keys=segment_keys, page_size=page_size, after_id=bounds[-1][1] if bounds else 0
    )
    total.add(apply_pages(engine, index, tail, segment_keys=segment_keys, progress=progress))
    return total


def evaluate_in_processes(
    engine: Engine,
    source: IndexSource,
    *,
    segment_keys: Collection[str] | None,
    page_size: int,
    processes: int,
) -> Iterator[EvaluatedPage]:
    """Evaluated pages in id order, read and evaluated by `processes` spawned processes."""
    if engine.url.database in (None, "", ":memory:") and engine.dialect.name == "sqlite":
        raise ValueError("an in-memory SQLite database cannot be shared with other processes")
    bounds = plan_pages(engine, page_size)
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes, initializer=_start, initargs=(url, source, segment_keys)) as pool:
        todo = iter(bounds)
        running: deque[AsyncResult[EvaluatedPage]] = deque()
        for item in todo:
            running.append(pool.apply_async(_evaluate, (item,)))
            if len(running) >= processes * _AHEAD:
                break
        while running:
            page = running.popleft().get()
            following = next(todo, None)
            if following is not None:
                running.append(pool.apply_async(_evaluate, (following,)))
            yield page
    last = bounds[-1][1] if bounds else 0
    yield from evaluate_pages(
        engine, build_index(source), segment_keys=segment_keys, page_size=page_size, after_id=last
    )
