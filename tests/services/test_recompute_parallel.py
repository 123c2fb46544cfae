"""The full recompute as pages evaluated apart from where they are applied: `recompute_all(processes=N)`
against one process, and `apply_page` re-checking a page against contacts changed since it was read."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.rules import parse_context
from segmentflow.services.contact_admin import delete_contact
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.membership import (
    apply_page,
    evaluate_page,
    recompute_all,
    recompute_contacts,
)
from segmentflow.services.runs import evaluate_range_step, plan_ranges, recompute_range_step
from segmentflow.services.segments import load_index
from tests.services.test_recompute import _changes, _context, _expected, _load, _stored

LATER = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)


def _contexts(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    contexts = [_context(rng, i) for i in range(n)]
    # Keys COPY's text format must escape (tab, backslash, newline), and one beyond ASCII.
    for i, odd in enumerate(["tab\there", "back\\slash", "new\nline", "naïve\r"]):
        contexts[i * 5 + 1] = {**contexts[i * 5 + 1], "kind": "user", "key": odd}
    return contexts


def _reset(engine: Engine) -> None:
    with engine.begin() as connection:
        for table in ("segment_membership", "membership_change"):
            connection.exec_driver_sql(f"DELETE FROM {table}")


def test_several_processes_store_the_memberships_and_feed_of_one(engine: Engine) -> None:
    contexts = _contexts(11, 90)
    _load(engine, contexts)
    one = recompute_all(engine, page_size=8)
    one_feed, one_stored = _changes(engine), _stored(engine)
    assert one_stored == _expected(contexts)
    _reset(engine)
    many = recompute_all(engine, page_size=8, processes=2)
    assert (many.contacts, many.entered, many.exited) == (one.contacts, one.entered, one.exited)
    assert _stored(engine) == one_stored
    feed = _changes(engine)
    assert sorted(feed) == sorted(one_feed)
    if engine.dialect.name == "sqlite":  # one writer applying pages in order: the very same feed
        assert feed == one_feed
    again = recompute_all(engine, page_size=5, processes=2)
    assert (again.contacts, again.entered, again.exited) == (90, 0, 0)
    assert _changes(engine) == feed


def test_a_page_applied_after_its_contacts_changed_stores_what_they_are_now(engine: Engine) -> None:
    contexts = _contexts(12, 20)
    _load(engine, contexts)
    index = load_index(session=Session(engine))
    with Session(engine) as session:
        page = evaluate_page(session=session, index=index, after_id=0, limit=100)
    assert page is not None and len(page.contacts) == 20
    # Meanwhile: one contact changes (now a VIP in Germany), another is deleted.
    changed = {"kind": "user", "key": "u2", "plan": "vip", "ltv": 0, "country": "DE"}
    contexts[2] = changed
    with Session(engine) as session, session.begin():
        upsert_contacts(session=session, contexts=[parse_context(changed)], now=LATER)
        delete_contact(session=session, key="u3", now=LATER)
    del contexts[3]
    with Session(engine) as session, session.begin():
        counts = apply_page(session=session, index=index, page=page, now=LATER)
    assert counts.contacts == 19
    assert _stored(engine) == _expected(contexts)
    assert _stored(engine)["u2"] == ["eu", "vip", "vip-eu"]


def test_a_page_applied_twice_or_after_an_incremental_recompute_writes_no_duplicate_events(
    engine: Engine,
) -> None:
    contexts = _contexts(13, 25)
    _load(engine, contexts)
    index = load_index(session=Session(engine))
    with Session(engine) as session:
        page = evaluate_page(session=session, index=index, after_id=0, limit=100)
    assert page is not None
    with Session(engine) as session, session.begin():  # another writer got there first
        recompute_contacts(session=session, contact_ids=[c[0] for c in page.contacts[:10]], now=LATER)
    for _ in range(2):
        with Session(engine) as session, session.begin():
            apply_page(session=session, index=index, page=page, now=LATER + timedelta(hours=1))
    events = _changes(engine)
    assert len(events) == len(set(events))
    assert len(events) == sum(len(v) for v in _expected(contexts).values())
    assert _stored(engine) == _expected(contexts)


def test_range_steps_evaluated_apart_apply_once_even_when_another_attempt_moved_the_cursor(
    engine: Engine,
) -> None:
    """Two attempts at one range, each evaluating a page before taking the lock (as the activity does):
    a page whose cursor another attempt already moved is evaluated again, not applied twice."""
    contexts = _contexts(14, 30)
    _load(engine, contexts)
    index = load_index(session=Session(engine))
    with Session(engine) as session:
        (first, last), *_ = plan_ranges(session=session, range_size=100)
    step: dict[str, Any] = {
        "index": index,
        "run_token": "apart",
        "range_index": 0,
        "first_id": first,
        "last_id": last,
        "page_size": 4,
        "segment_keys": None,
    }
    with Session(engine) as session:
        stale = evaluate_range_step(session=session, **step)
    while True:
        with Session(engine) as session:
            evaluated = evaluate_range_step(session=session, **step)
        with Session(engine) as session, session.begin():
            progress = recompute_range_step(session=session, evaluated=evaluated, **step)
        with Session(engine) as session, session.begin():  # the other attempt, its page evaluated long ago
            other = recompute_range_step(session=session, evaluated=stale, **step)
        if progress.done or other.done:
            break
    assert (other.counts.contacts, other.counts.entered) == (
        30,
        sum(len(v) for v in _expected(contexts).values()),
    )
    events = _changes(engine)
    assert len(events) == len(set(events))
    assert _stored(engine) == _expected(contexts)
