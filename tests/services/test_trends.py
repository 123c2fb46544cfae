"""`segment_trends`: entries and exits over the last 24 hours and the member count of each recent day,
walked back from now through the change feed (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.reports import SegmentTrendCache, segment_trends
from segmentflow.services.segment_admin import import_segments, recompute_segments

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
VIP = {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}


def save(engine: Engine, contacts: list[dict[str, str]], at: datetime) -> None:
    with Session(engine) as session, session.begin():
        upsert_contacts(session=session, contexts=[parse_context(c) for c in contacts], now=at)
        recompute_segments(session=session, keys=["vip"], now=at)


def test_trends_walk_back_through_the_feed_and_count_the_last_24_hours(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        import_segments(
            recompute=False, session=session, segments=parse_segments([VIP]), now=NOW - timedelta(days=3)
        )
    save(engine, [{"key": "u1", "plan": "vip"}, {"key": "u2", "plan": "vip"}], NOW - timedelta(hours=50))
    save(engine, [{"key": "u2", "plan": "free"}], NOW - timedelta(hours=26))  # out of the 24-hour window
    save(engine, [{"key": "u3", "plan": "vip"}], NOW - timedelta(hours=1))
    with Session(engine) as session:
        [trend] = segment_trends(session=session, now=NOW, days=5)
    assert (trend.activity.key, trend.activity.members) == ("vip", 2)
    assert (trend.activity.entered, trend.activity.exited) == (1, 0)
    # end of 11-06, 11-07, 11-08 (u1, u2 in), 11-09 (u2 out), now (u3 in)
    assert trend.daily_members == [0, 0, 2, 1, 2]


def test_the_cache_answers_again_until_the_feed_changes(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments([VIP]), now=NOW)
    save(engine, [{"key": "u1", "plan": "vip"}], NOW)
    cache = SegmentTrendCache()
    with Session(engine) as session:
        first = cache.get(session=session, now=NOW)
        assert cache.get(session=session, now=NOW + timedelta(seconds=5)) is first
    save(engine, [{"key": "u2", "plan": "vip"}], NOW)
    with Session(engine) as session:
        again = cache.get(session=session, now=NOW + timedelta(seconds=10))
    assert again is not first and again[0].activity.members == 2
