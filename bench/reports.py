"""Benchmark: conversation-event import and the 30-day segment report on PostgreSQL.

A seeded world is written straight into a scratch database: `--segments` segments, `--contacts` contacts
each in a few segments from before the window, with churn inside it (a third of the pairs exit on a
random day, some re-enter later), so the change feed and the current memberships disagree about the
past; `--events` conversation events over 30 days (10% anonymous, 2% of unknown contacts).

1. Import: the first `--import-events` events are written as a JSON-lines file and recorded through the
   path `segmentflow events import` takes (read, validate every line, one transaction): events/s. The
   rest are copied in directly (loading is not what is measured next). Target: 20,000 events/s.
2. Report: `segment_report` over the 30 days (and with `interval="day"`), median of `--repeat` runs,
   against a naive peer in the same run: one GROUP BY over events joined to the *current* memberships
   (not reconstructed at each event's time). Target: under 1 s for 1,000,000 events and 50 segments.
   Printed: both times, the ratio, and how many attributions the naive peer gets wrong.
3. Correctness: the report's conversations per segment must equal a reference computed in Python from
   the generated membership intervals; exit status 1 otherwise. Speed is printed, never asserted.

Usage: .venv/bin/python bench/reports.py [--events 1000000] [--import-events 200000] [--segments 50]
       [--contacts 50000] [--repeat 3] [--database-url postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import scratch_postgres

T0 = datetime(2026, 6, 1, tzinfo=UTC)
DAYS = 30


def build_world(
    rng: random.Random, segments: int, contacts: int
) -> tuple[list[str], dict[str, list[tuple[str, datetime, datetime | None]]]]:
    """Segment keys, and per contact key its membership intervals `(segment, start, end or None)`."""
    keys = [f"seg-{i:02d}" for i in range(segments)]
    intervals: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
    for n in range(contacts):
        contact = f"c{n}"
        spans = []
        for segment in rng.sample(keys, rng.randint(0, 5)):
            start = T0 - timedelta(days=rng.uniform(1, 20))
            if rng.random() < 0.33:  # exits inside the window, perhaps to come back
                end = T0 + timedelta(days=rng.uniform(0, DAYS))
                spans.append((segment, start, end))
                if rng.random() < 0.5:
                    back = end + timedelta(days=rng.uniform(0.1, 5))
                    if back < T0 + timedelta(days=DAYS):
                        spans.append((segment, back, None))
            else:
                spans.append((segment, start, None))
        intervals[contact] = spans
    return keys, intervals


def store_world(
    engine: Any, keys: list[str], intervals: dict[str, list[tuple[str, datetime, datetime | None]]]
) -> None:
    import sqlalchemy as sa
    from sqlmodel import Session

    from segmentflow.db.bulk import bulk_insert
    from segmentflow.db.tables import change_table, contact_table, membership_table, segment_table

    ids = {key: uuid.uuid4() for key in keys}
    now = T0 + timedelta(days=DAYS + 1)
    with Session(engine) as session, session.begin():
        bulk_insert(
            session,
            segment_table,
            ("id", "key", "name", "version", "definition", "created_at", "updated_at"),
            [(ids[k], k, k.upper(), 1, json.dumps({"key": k, "version": 1}), T0, T0) for k in keys],
        )
        bulk_insert(
            session,
            contact_table,
            ("id", "key", "kinds", "context", "updated_at", "computed_at"),
            [(n + 1, c, "user", json.dumps({"key": c}), now, now) for n, c in enumerate(intervals)],
        )
        members, changes = [], []
        for n, (contact, spans) in enumerate(intervals.items()):
            for segment, start, end in spans:
                changes.append((start, ids[segment], segment, n + 1, contact, "entered"))
                if end is None:
                    members.append((ids[segment], n + 1, start))
                else:
                    changes.append((end, ids[segment], segment, n + 1, contact, "exited"))
        changes.sort(key=lambda row: row[0])  # seq follows time, as the recompute writes it
        bulk_insert(session, membership_table, ("segment_id", "contact_id", "since"), members)
        bulk_insert(
            session,
            change_table,
            ("segment_id", "segment_key", "contact_id", "contact_key", "change", "at"),
            [(sid, skey, cid, ckey, change, at) for at, sid, skey, cid, ckey, change in changes],
        )
        session.execute(sa.text("ANALYZE"))


def make_events(rng: random.Random, count: int, contacts: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        roll = rng.random()
        contact = None if roll < 0.10 else f"ghost{n}" if roll < 0.12 else f"c{rng.randrange(contacts)}"
        event: dict[str, Any] = {
            "id": f"ev-{n}",
            "contactKey": contact,
            "at": (T0 + timedelta(seconds=rng.uniform(0, DAYS * 86400))).isoformat(),
            "channel": rng.choice(["chat", "email", "voice"]),
            "handoff": rng.random() < 0.2,
        }
        if rng.random() < 0.4:
            event["csat"] = rng.randint(1, 5)
        out.append(event)
    return out


def reference(
    events: list[dict[str, Any]], intervals: dict[str, list[tuple[str, datetime, datetime | None]]]
) -> Counter[str]:
    """Conversations per segment (and "-") computed in Python from the generated intervals."""
    counts: Counter[str] = Counter()
    for event in events:
        at = datetime.fromisoformat(event["at"])
        found = {
            segment
            for segment, start, end in intervals.get(event["contactKey"] or "", ())
            if start <= at and (end is None or at < end)
        }
        counts.update(found or {"-"})
    return counts


def naive_report(session: Any, since: datetime, until: datetime) -> dict[str, int]:
    """The peer: a GROUP BY over events joined to the current memberships."""
    import sqlalchemy as sa

    query = sa.text(
        "SELECT s.key, count(*), count(CASE WHEN e.handoff THEN 1 END), count(e.handoff), count(e.csat), "
        "coalesce(sum(e.csat), 0), count(CASE WHEN e.csat >= 4 THEN 1 END) "
        "FROM conversation_event e JOIN contact c ON c.key = e.contact_key "
        "JOIN segment_membership m ON m.contact_id = c.id JOIN segment s ON s.id = m.segment_id "
        "WHERE e.at >= :since AND e.at < :until GROUP BY s.key"
    )
    return {key: int(n) for key, n, *_ in session.execute(query, {"since": since, "until": until})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--import-events", type=int, default=200_000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()

    from sqlmodel import Session

    import segmentflow.services.reporting as reporting
    from segmentflow.db.bulk import bulk_insert
    from segmentflow.db.engine import make_engine, migrate
    from segmentflow.db.tables import conversation_event_table
    from segmentflow.services.conversations import iter_event_lines, record_conversations
    from segmentflow.services.presence import fold_presence
    from segmentflow.services.reporting import members_at, members_from_rollup, refresh_rollup, segment_report
    from segmentflow.services.reporting.attribution import day_bounds
    from segmentflow.services.reports import fold_change_feed

    rng = random.Random("bench-reports")
    keys, intervals = build_world(rng, args.segments, args.contacts)
    events = make_events(rng, args.events, args.contacts)
    pairs = sum(len(v) for v in intervals.values())
    print(f"world: {args.segments} segments, {args.contacts:,} contacts, {pairs:,} membership spans")

    with scratch_postgres(args.database_url) as url:
        engine = make_engine(url)
        migrate(engine)
        store_world(engine, keys, intervals)

        # 1. Import through the CLI's path: read + validate each line, one transaction.
        head = events[: args.import_events]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "events.jsonl"
            path.write_text("".join(json.dumps(e) + "\n" for e in head))
            started = time.perf_counter()
            parsed = []
            for number, item in iter_event_lines(path):
                if isinstance(item, str):
                    print(f"{path}:{number}: {item}")
                    return 1
                parsed.append(item)
            with Session(engine) as session, session.begin():
                counts = record_conversations(session=session, events=parsed, now=datetime.now(UTC))
            elapsed = time.perf_counter() - started
        rate = len(head) / elapsed
        print(f"import: {counts.recorded:,} events in {elapsed:.2f} s = {rate:,.0f} events/s (target 20,000)")

        # The rest are copied in: loading is not what the report measures.
        rest = [
            (
                e["id"],
                e["contactKey"],
                datetime.fromisoformat(e["at"]),
                e["channel"],
                e["handoff"],
                e.get("csat"),
                None,
                T0,
            )
            for e in events[args.import_events :]
        ]
        columns = ("id", "contact_key", "at", "channel", "handoff", "csat", "messages", "recorded_at")
        with Session(engine) as session, session.begin():
            bulk_insert(session, conversation_event_table, columns, rest)
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE conversation_event")
            conn.commit()

        # 2. The report against the naive peer: first the rollup's build (what `events import` does
        # after recording, or the first report after events arrive), then warm reports.
        since, until = T0, T0 + timedelta(days=DAYS)
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            days = [(T0 + timedelta(days=d)).date() for d in range(DAYS)]
            built = refresh_rollup(session=session, first=days[0], last=days[-1], build=days)
        print(
            f"rollup build: {built} days over {args.events:,} events in {time.perf_counter() - started:.2f} s"
        )
        # The change feed folded into its daily rollup once and committed, as the first report after a
        # recompute does (the timed sessions below roll back, so they would each fold it again).
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            folded = fold_change_feed(session=session, now=None)
        print(f"change feed fold: {folded:,} rows in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            contacts = fold_presence(session)
        print(
            f"presence fold (overall's distinct contacts): {contacts:,} contact keys in "
            f"{time.perf_counter() - started:.2f} s"
        )
        timings: dict[str, list[float]] = {
            "report": [],
            "report, interval=day": [],
            "report, partial days": [],
            "naive peer": [],
            "report, interval=day, old members_at": [],
            "members, interval=day (rollup)": [],
            "members, interval=day (old members_at)": [],
        }
        instants = [until, *(end for _, end in day_bounds(since, until))]
        members_differ = False
        result = None
        naive: dict[str, int] = {}
        for _ in range(args.repeat):
            with Session(engine) as session:
                started = time.perf_counter()
                result = segment_report(session=session, since=since, until=until)
                timings["report"].append(time.perf_counter() - started)
                started = time.perf_counter()
                segment_report(session=session, since=since, until=until, interval="day")
                timings["report, interval=day"].append(time.perf_counter() - started)
                started = time.perf_counter()
                edges = (since + timedelta(hours=5), until - timedelta(hours=3))
                segment_report(session=session, since=edges[0], until=edges[1])
                timings["report, partial days"].append(time.perf_counter() - started)
                started = time.perf_counter()
                naive = naive_report(session, since, until)
                timings["naive peer"].append(time.perf_counter() - started)
                # The member counts: the rollup against the stretch rewind it replaced, same instants.
                started = time.perf_counter()
                new_members = members_from_rollup(session, instants)
                timings["members, interval=day (rollup)"].append(time.perf_counter() - started)
                started = time.perf_counter()
                old_members = members_at(session, instants)
                timings["members, interval=day (old members_at)"].append(time.perf_counter() - started)
                members_differ |= {
                    k: v for k, v in new_members.items() if v or k in old_members
                } != old_members
                reporting.members_from_rollup = members_at  # type: ignore[assignment]
                try:
                    started = time.perf_counter()
                    segment_report(session=session, since=since, until=until, interval="day")
                    timings["report, interval=day, old members_at"].append(time.perf_counter() - started)
                finally:
                    reporting.members_from_rollup = members_from_rollup
        medians = {name: statistics.median(samples) for name, samples in timings.items()}
        print(
            f"report over {args.events:,} events, {DAYS} days, {args.segments} segments "
            f"(median of {args.repeat}):"
        )
        for name, seconds in medians.items():
            print(f"  {name:<22} {seconds * 1000:8.0f} ms")
        print(f"  ratio report / naive peer: {medians['report'] / medians['naive peer']:.2f}x")
        new, old = (
            medians["members, interval=day (rollup)"],
            medians["members, interval=day (old members_at)"],
        )
        print(f"  ratio members rollup / old members_at: {new / old:.3f}x")
        if members_differ:
            print("MISMATCH: the rollup's member counts differ from members_at")
            return 1
        print("member counts: the rollup's equal members_at's at every instant")
        engine.dispose()

    # 3. Correctness against the Python reference.
    assert result is not None
    expected = reference(events, intervals)
    got = {row.segment: row.figures.conversations for row in result.data if row.figures.conversations}
    wrong_naive = sum(
        abs(naive.get(k, 0) - expected.get(k, 0)) for k in set(expected) | set(naive) if k != "-"
    )
    print(f"naive peer: {wrong_naive:,} segment attributions differ from the events' own times")
    if got != dict(expected) or result.overall.figures.conversations != len(events):
        print("MISMATCH: the report differs from the reference")
        return 1
    print("report matches the Python reference for every segment and '-'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
