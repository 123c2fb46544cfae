"""The segment list's trends read from the change-feed rollup (`segment_trends`) equal the straight
computation over the feed (`segment_trends_from_feed`) on random feeds, folded in several steps, with
rows written late (an `at` before rows already folded), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import change_table, segment_change_day_table, segment_change_hour_table
from segmentflow.rules import parse_segments
from segmentflow.services.reports import fold_change_feed, segment_trends, segment_trends_from_feed
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import list_segments

NOW = datetime(2026, 11, 20, 10, 37, 12, 345678, tzinfo=UTC)


def add_feed(engine: Engine, rng: random.Random, ids: list[uuid.UUID], n: int, oldest: timedelta) -> None:
    rows = []
    for _ in range(n):
        at = NOW - timedelta(seconds=rng.uniform(-3600, oldest.total_seconds()))
        if rng.random() < 0.05:  # exactly on an hour, or 24 hours ago to the microsecond
            at = rng.choice([NOW - timedelta(hours=24), at.replace(minute=0, second=0, microsecond=0)])
        rows.append(
            {
                "segment_id": rng.choice(ids),
                "segment_key": "k",
                "contact_id": rng.randrange(1000),
                "contact_key": f"c{rng.randrange(1000)}",
                "change": rng.choice(["entered", "entered", "exited"]),
                "at": at,
            }
        )
    with engine.begin() as conn:
        conn.execute(change_table.insert(), rows)


def test_rollup_trends_equal_the_straight_computation_on_random_feeds(engine: Engine) -> None:
    rng = random.Random(20261120)
    segments = [{"key": f"s{i}", "rules": []} for i in range(5)]
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(segments), now=NOW)
        ids = [s.id for s in list_segments(session=session)]
    ids.append(uuid.uuid4())  # a segment deleted since: its rows never show
    for step in range(6):
        # recent rows, and late rows reaching 40 days back (before what earlier steps folded)
        add_feed(engine, rng, ids, rng.randrange(50, 400), timedelta(days=40 if step % 2 else 2))
        for now in (NOW, NOW.replace(minute=0, second=0, microsecond=0), NOW + timedelta(minutes=50)):
            with Session(engine) as session, session.begin():
                rolled = segment_trends(session=session, now=now, days=30)
                straight = segment_trends_from_feed(session=session, now=now, days=30)
            assert rolled == straight, (step, now)
            assert any(t.activity.entered for t in straight) and any(
                len(set(t.daily_members)) > 1 for t in straight
            )
    with Session(engine) as session, session.begin():
        assert fold_change_feed(session=session, now=NOW) == 0  # nothing new since the last read
        feed = session.scalar(sa.select(sa.func.count()).select_from(change_table))
        days = session.scalar(sa.select(sa.func.count()).select_from(segment_change_day_table))
        hours = session.scalar(sa.select(sa.func.count()).select_from(segment_change_hour_table))
    assert feed and days and hours and days + hours < feed


def test_a_fold_counts_each_row_once(engine: Engine) -> None:
    rng = random.Random(7)
    with Session(engine) as session, session.begin():
        import_segments(
            recompute=False, session=session, segments=parse_segments([{"key": "a", "rules": []}]), now=NOW
        )
        ids = [s.id for s in list_segments(session=session)]
    add_feed(engine, rng, ids, 100, timedelta(hours=20))
    with Session(engine) as session, session.begin():
        assert fold_change_feed(session=session, now=NOW) == 100
        assert fold_change_feed(session=session, now=NOW) == 0
    add_feed(engine, rng, ids, 30, timedelta(hours=20))
    with Session(engine) as session, session.begin():
        assert fold_change_feed(session=session, now=NOW) == 30
        total = session.scalar(
            sa.select(sa.func.sum(segment_change_day_table.c.entered + segment_change_day_table.c.exited))
        )
    assert total == 130
