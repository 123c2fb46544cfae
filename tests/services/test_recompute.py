"""Recompute on SQLite and PostgreSQL: full, resumed, incremental, per segment, and the change feed."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from segmentflow.db.engine import make_engine, migrate
from segmentflow.db.tables import Contact, MembershipChange, SegmentMembership, SegmentRecord
from segmentflow.rules import compile_segments, memberships, parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.exports import iter_memberships
from segmentflow.services.membership import (
    MembershipDiff,
    apply_diff,
    recompute_all,
    recompute_contacts,
    recompute_page,
    upsert_and_recompute,
)
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import SegmentIndexCache, load_index

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

SEGMENTS: list[dict[str, Any]] = [
    {
        "key": "vip",
        "excluded": ["u3"],
        "rules": [
            {"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]},
            {"clauses": [{"attribute": "ltv", "op": "greaterThanOrEqual", "values": [1000]}]},
        ],
    },
    {"key": "eu", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}]}]},
    {
        "key": "vip-eu",
        "rules": [
            {
                "clauses": [
                    {"attribute": "", "op": "segmentMatch", "values": ["vip"]},
                    {"attribute": "", "op": "segmentMatch", "values": ["eu"]},
                ]
            }
        ],
    },
    {
        "key": "orgs",
        "rules": [
            {"clauses": [{"contextKind": "org", "attribute": "seats", "op": "greaterThan", "values": [10]}]}
        ],
    },
]


def _context(rng: random.Random, i: int) -> dict[str, Any]:
    user = {
        "kind": "user",
        "key": f"u{i}",
        "plan": rng.choice(["vip", "free", "pro"]),
        "ltv": rng.choice([0, 500, 1500]),
        "country": rng.choice(["DE", "FR", "US"]),
    }
    if i % 7 == 0:
        return {"kind": "multi", "user": user, "org": {"key": f"o{i}", "seats": rng.choice([3, 30])}}
    return user


def _load(engine: Engine, contexts: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS) -> None:
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(segments), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in contexts], now=NOW)


def _stored(engine: Engine) -> dict[str, list[str]]:
    with Session(engine) as session:
        return dict(iter_memberships(session=session))


def _expected(
    contexts: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS
) -> dict[str, list[str]]:
    compiled = compile_segments(parse_segments(segments))
    out = {}
    for raw in contexts:
        ctx = parse_context(raw)
        out[ctx.fully_qualified_key] = memberships(compiled, ctx)
    return out


def _changes(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(MembershipChange).order_by(MembershipChange.seq)).all()  # type: ignore[arg-type]
        return [(r.segment_key, r.contact_key, r.change) for r in rows]


def test_full_recompute_stores_exactly_what_the_evaluator_says(engine: Engine) -> None:
    rng = random.Random(1)
    contexts = [_context(rng, i) for i in range(60)]
    _load(engine, contexts)
    counts = recompute_all(engine, page_size=7)
    assert counts.contacts == 60
    expected = _expected(contexts)
    assert _stored(engine) == expected
    assert counts.entered == sum(len(v) for v in expected.values())
    assert counts.exited == 0


def test_second_recompute_changes_nothing_and_writes_no_events(engine: Engine) -> None:
    rng = random.Random(2)
    _load(engine, [_context(rng, i) for i in range(30)])
    recompute_all(engine, page_size=8)
    before = _changes(engine)
    again = recompute_all(engine, page_size=5)
    assert (again.contacts, again.entered, again.exited) == (30, 0, 0)
    assert _changes(engine) == before


def test_run_cut_off_midway_then_rerun_matches_clean_run_without_duplicate_events(engine: Engine) -> None:
    rng = random.Random(3)
    contexts = [_context(rng, i) for i in range(40)]
    _load(engine, contexts)
    with Session(engine) as session, session.begin():
        index = load_index(session=session)
        _, last = recompute_page(session=session, index=index, after_id=0, limit=15, now=NOW)
    assert last is not None
    # The "crashed" run resumes from scratch: pages already applied produce no new events.
    recompute_all(engine, page_size=6)
    events = _changes(engine)
    assert len(events) == len(set(events))
    assert _stored(engine) == _expected(contexts)
    assert all(change == "entered" for _, _, change in events)
    assert len(events) == sum(len(v) for v in _expected(contexts).values())


def test_incremental_recompute_equals_full_recompute(engine: Engine) -> None:
    rng = random.Random(4)
    contexts = [_context(rng, i) for i in range(50)]
    _load(engine, contexts)
    recompute_all(engine, page_size=16)
    for _round in range(5):
        changed = [_context(rng, rng.randrange(70)) for _ in range(6)]
        with Session(engine) as session, session.begin():
            ids = upsert_contacts(session=session, contexts=[parse_context(c) for c in changed], now=NOW)
            recompute_contacts(session=session, contact_ids=ids)
        by_key = {parse_context(c).fully_qualified_key: c for c in contexts + changed}
        contexts = list(by_key.values())
    incremental = _stored(engine)
    assert incremental == _expected(contexts)
    events_before = len(_changes(engine))
    full = recompute_all(engine, page_size=9)
    assert (full.entered, full.exited) == (0, 0)
    assert _stored(engine) == incremental
    assert len(_changes(engine)) == events_before


def test_contact_leaving_a_segment_writes_an_exit_event_and_deletes_the_row(engine: Engine) -> None:
    _load(engine, [{"key": "u1", "plan": "vip", "country": "DE"}])
    recompute_all(engine)
    assert _stored(engine) == {"u1": ["eu", "vip", "vip-eu"]}
    with Session(engine) as session, session.begin():
        ids = upsert_contacts(
            session=session, contexts=[parse_context({"key": "u1", "plan": "free", "country": "DE"})], now=NOW
        )
        counts = recompute_contacts(session=session, contact_ids=ids)
    assert (counts.entered, counts.exited) == (0, 2)
    assert _stored(engine) == {"u1": ["eu"]}
    assert _changes(engine)[-2:] == [("vip", "u1", "exited"), ("vip-eu", "u1", "exited")]


def test_change_feed_sequence_increases_and_timestamps_are_utc(engine: Engine) -> None:
    rng = random.Random(5)
    _load(engine, [_context(rng, i) for i in range(20)])
    recompute_all(engine, page_size=4)
    with Session(engine) as session:
        rows = session.exec(select(MembershipChange).order_by(MembershipChange.seq)).all()  # type: ignore[arg-type]
        seqs = [r.seq for r in rows]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert all(r.at.tzinfo is not None and r.at.utcoffset().total_seconds() == 0 for r in rows)  # type: ignore[union-attr]
        contact = session.exec(select(Contact)).first()
        assert (
            contact is not None and contact.computed_at is not None and contact.computed_at.tzinfo is not None
        )


def test_recompute_of_one_segment_reaches_its_dependents_only(engine: Engine) -> None:
    contexts = [
        {"key": "u1", "plan": "free", "ltv": 0, "country": "DE"},
        {"key": "u2", "plan": "free", "ltv": 0, "country": "US"},
    ]
    _load(engine, contexts)
    recompute_all(engine)
    changed = [dict(s) for s in SEGMENTS]
    changed[0] = {
        "key": "vip",
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}]}],
    }
    changed[3] = {"key": "orgs", "rules": [{"clauses": [{"attribute": "key", "op": "in", "values": ["u1"]}]}]}
    with Session(engine) as session, session.begin():
        import_segments(
            recompute=False, session=session, segments=parse_segments(changed[:1] + changed[3:]), now=NOW
        )
    recompute_all(engine, segment_keys={"vip"})
    # vip and its dependent vip-eu moved; orgs changed too but was not asked for, so it waits.
    assert _stored(engine) == {"u1": ["eu", "vip", "vip-eu"], "u2": ["vip"]}
    recompute_all(engine)
    assert _stored(engine) == _expected(contexts, changed)


def test_replacing_a_segment_bumps_its_version(engine: Engine) -> None:
    _load(engine, [])
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS[:1]), now=NOW)
    with Session(engine) as session:
        vip = session.exec(select(SegmentRecord).where(SegmentRecord.key == "vip")).one()
        assert vip.version == 2
        assert vip.definition["version"] == 2
        assert vip.created_at <= vip.updated_at


def test_deleting_a_contact_cascades_its_memberships(engine: Engine) -> None:
    _load(engine, [{"key": "u1", "plan": "vip"}])
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(Contact).where(Contact.key == "u1"))  # type: ignore[arg-type]
    with Session(engine) as session:
        assert session.exec(select(SegmentMembership)).all() == []


def test_upsert_and_recompute_equals_full_recompute_in_one_transaction(engine: Engine) -> None:
    rng = random.Random(6)
    contexts = [_context(rng, i) for i in range(30)]
    _load(engine, contexts)
    recompute_all(engine)
    cache = SegmentIndexCache()
    for _round in range(4):
        changed = [_context(rng, rng.randrange(40)) for _ in range(5)]
        with Session(engine) as session, session.begin():
            index = cache.get(session=session)
            ids, counts = upsert_and_recompute(
                session=session, contexts=[parse_context(c) for c in changed], index=index, now=NOW
            )
        assert len(ids) == len({parse_context(c).fully_qualified_key for c in changed}) == counts.contacts
        by_key = {parse_context(c).fully_qualified_key: c for c in contexts + changed}
        contexts = list(by_key.values())
    assert _stored(engine) == _expected(contexts)
    with Session(engine) as session:
        assert all(c.computed_at is not None for c in session.exec(select(Contact)).all())
    again = recompute_all(engine)
    assert (again.entered, again.exited) == (0, 0)


def _written(session: Session, since_seq: int) -> tuple[Any, ...]:
    """Everything a recompute writes, read inside its transaction: contacts, memberships and the new feed
    rows, contacts named by key (PostgreSQL does not hand back ids taken by a rolled-back insert)."""
    contacts = session.execute(
        sa.select(Contact.key, Contact.kinds, Contact.context, Contact.computed_at).order_by(Contact.key)  # type: ignore[arg-type]
    ).all()
    members = session.execute(
        sa.select(SegmentMembership.segment_id, Contact.key, SegmentMembership.since)
        .join(Contact, Contact.id == SegmentMembership.contact_id)  # type: ignore[arg-type]
        .order_by(SegmentMembership.segment_id, Contact.key)  # type: ignore[arg-type]
    ).all()
    feed = session.execute(
        sa.select(
            MembershipChange.segment_key,
            MembershipChange.contact_key,
            MembershipChange.change,
            MembershipChange.at,
        )
        .where(MembershipChange.seq > since_seq)  # type: ignore[operator]
        .order_by(MembershipChange.seq)  # type: ignore[arg-type]
    ).all()
    return contacts, members, feed


def test_pipelined_upsert_and_recompute_writes_what_the_core_path_writes(engine: Engine) -> None:
    """PostgreSQL's two-round-trip path against the portable Core path on the same state (new contacts,
    changed ones, a key repeated in one call, where the later context wins): the same ids (as keys),
    counts, contact rows, memberships, and change-feed rows in the same order. The Core path's
    transaction is rolled back, the pipelined one committed. (On SQLite both calls take the Core path.)"""
    rng = random.Random(9)
    _load(engine, [_context(rng, i) for i in range(30)])
    recompute_all(engine)
    cache = SegmentIndexCache()
    for _round in range(6):
        picks = [rng.randrange(40) for _ in range(6)]
        parsed = [parse_context(_context(rng, i)) for i in [*picks, picks[0]]]
        results = []
        for pipelined in (False, True):
            with Session(engine) as session, session.begin():
                index = cache.get(session=session)
                last = session.scalar(sa.select(sa.func.coalesce(sa.func.max(MembershipChange.seq), 0)))
                ids, counts = upsert_and_recompute(
                    session=session, contexts=parsed, index=index, now=NOW, pipelined=pipelined
                )
                key_of = dict(session.execute(sa.select(Contact.id, Contact.key)).all())  # type: ignore[call-overload]
                results.append(([key_of[i] for i in ids], counts, _written(session, last or 0)))
                if not pipelined:
                    session.rollback()
        assert results[0] == results[1]
        counts = results[1][1]
        assert counts.contacts == len({p.fully_qualified_key for p in parsed})
        assert counts.entered + counts.exited == len(results[1][2][2])
    with Session(engine) as session:
        stored = session.execute(sa.select(Contact.context)).scalars().all()  # type: ignore[call-overload]
    assert _stored(engine) == _expected(list(stored))
    assert (recompute_all(engine).entered, recompute_all(engine).exited) == (0, 0)


def test_index_cache_recompiles_only_when_segments_change(engine: Engine) -> None:
    _load(engine, [])
    cache = SegmentIndexCache()
    with Session(engine) as session:
        first = cache.get(session=session)
        assert cache.get(session=session) is first
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS[:1]), now=NOW)
    with Session(engine) as session:
        second = cache.get(session=session)
    assert second is not first
    assert second.compiled["vip"].definition.version == 2


CATASTROPHIC_SEGMENTS: list[dict[str, Any]] = [
    {"key": "nested", "rules": [{"clauses": [{"attribute": "code", "op": "matches", "values": ["(a+)+$"]}]}]},
    {"key": "alt", "rules": [{"clauses": [{"attribute": "code", "op": "matches", "values": ["(a|aa)+$"]}]}]},
]


def test_recompute_with_catastrophic_regexes_finishes_with_the_evaluators_answers(engine: Engine) -> None:
    # With Python's `re` each of these contacts would hold the recompute for minutes to years.
    contexts = [
        {"key": "hostile", "code": "a" * 40 + "!"},
        {"key": "long", "code": "a" * 100_000},
        {"key": "plain", "code": "aaa"},
    ]
    _load(engine, contexts, CATASTROPHIC_SEGMENTS)
    recompute_all(engine, page_size=2)
    assert _stored(engine) == {"hostile": [], "long": ["alt", "nested"], "plain": ["alt", "nested"]}


def test_a_stored_regex_refused_since_it_was_saved_never_matches_instead_of_stopping_recompute(
    engine: Engine,
) -> None:
    # Written past the save-time check, as a segment saved before the linear-time bound existed.
    _load(engine, [{"key": "u1", "email": "ab"}], [{"key": "other"}])
    legacy = {
        "key": "legacy",
        "rules": [{"clauses": [{"attribute": "email", "op": "matches", "values": ["(a)\\1|b"]}]}],
    }
    with Session(engine) as session, session.begin():
        session.add(
            SegmentRecord(
                key="legacy", name="legacy", version=1, definition=legacy, created_at=NOW, updated_at=NOW
            )
        )
    with Session(engine) as session:
        [warning] = load_index(session=session).compiled["legacy"].warnings
    assert "cannot run in linear time" in str(warning) and str(warning).endswith("it never matches")
    recompute_all(engine, page_size=10)
    assert _stored(engine) == {"u1": []}


def _contact_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {key: cid for cid, key in connection.execute(sa.select(Contact.id, Contact.key))}  # type: ignore[call-overload]


def test_large_groups_store_the_same_rows_and_feed_order_as_small_ones(engine: Engine) -> None:
    """SQLite writes a segment's group of 64 or more contacts in one statement (json_each) and smaller
    ones row by row; either way (and on PostgreSQL) the feed is entries then exits, each by segment key
    then contact id."""
    contexts = [
        {"key": f"u{i}", "plan": "vip" if i % 3 == 0 else "free", "country": "DE" if i % 40 == 0 else "US"}
        for i in range(300)
    ]
    _load(engine, contexts)
    recompute_all(engine, page_size=1000)
    expected = _expected(contexts)
    assert _stored(engine) == expected
    ids = _contact_ids(engine)
    by_id = sorted(expected, key=ids.__getitem__)
    entered = [(s, c, "entered") for s in ("eu", "vip", "vip-eu") for c in by_id if s in expected[c]]
    assert len([e for e in entered if e[0] == "vip"]) == 99  # a large group (u3 excluded) beside small ones
    assert _changes(engine) == entered

    leaving = [{**c, "plan": "free"} for c in contexts if c["plan"] == "vip"]
    with Session(engine) as session, session.begin():
        upsert_contacts(session=session, contexts=[parse_context(c) for c in leaving], now=NOW)
    counts = recompute_all(engine, page_size=1000)
    changed = {c["key"]: c for c in (*contexts, *leaving)}
    assert _stored(engine) == _expected(list(changed.values()))
    exited = [(s, c, "exited") for s in ("vip", "vip-eu") for c in by_id if s in expected[c]]
    assert (counts.entered, counts.exited) == (0, len(exited))
    assert _changes(engine) == entered + exited


def test_sqlite_large_group_for_a_missing_contact_is_refused_whole(tmp_path: Path) -> None:
    """The json_each feed statement takes contact keys from the contact rows: a group naming a contact
    that is not stored fails the transaction instead of writing a short feed."""
    engine = make_engine(f"sqlite:///{tmp_path / 'missing.db'}")
    migrate(engine)
    try:
        _load(engine, [{"key": f"u{i}", "plan": "vip"} for i in range(70)])
        ids = sorted(_contact_ids(engine).values())
        with Session(engine) as session:
            segment_id = session.exec(select(SegmentRecord.id).where(SegmentRecord.key == "vip")).one()
        missing = [*ids[1:], max(ids) + 1]
        with (
            pytest.raises(RuntimeError, match="1 contacts not found"),
            Session(engine) as session,
            session.begin(),
        ):
            apply_diff(
                session=session,
                diff=MembershipDiff(exited={(segment_id, cid) for cid in missing}),
                segment_keys={segment_id: "vip"},
                contact_keys={cid: f"c{cid}" for cid in missing},
                now=NOW,
            )
        assert not any(_stored(engine).values()) and _changes(engine) == []
    finally:
        engine.dispose()


def test_deleting_segments_and_contacts_in_bulk_removes_their_memberships(engine: Engine) -> None:
    """On PostgreSQL the cascade is a statement-level trigger per table (migration 0015): a statement
    deleting several rows removes every membership of each, and nobody else's."""
    _load(engine, [{"key": f"u{i}", "plan": "vip", "country": "DE"} for i in range(4)])
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(Contact).where(Contact.key.in_(["u0", "u1"])))  # type: ignore[attr-defined]
        session.execute(sa.delete(SegmentRecord).where(SegmentRecord.key.in_(["vip-eu", "vip"])))  # type: ignore[attr-defined]
    assert _stored(engine) == {"u2": ["eu"], "u3": ["eu"]}


def _stale_write(engine: Engine, pipelined: bool) -> None:
    """Recompute u1 with an index loaded before "eu" was deleted."""
    with Session(engine) as session:
        index = load_index(session=session)
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(SegmentRecord).where(SegmentRecord.key == "eu"))  # type: ignore[arg-type]
    with Session(engine) as session, session.begin():
        upsert_and_recompute(
            session=session,
            contexts=[parse_context({"key": "u1", "country": "FR"})],
            index=index,
            pipelined=pipelined,
        )


@pytest.mark.parametrize("pipelined", [True, False])
def test_a_membership_for_a_segment_deleted_meanwhile_is_refused(engine: Engine, pipelined: bool) -> None:
    """What the foreign key did per row: a write from a stale segment index into a segment that is gone
    fails whole (an IntegrityError: the API's 409 "retry"), on both databases and both PostgreSQL paths."""
    _load(engine, [{"key": "u1", "country": "US"}])
    recompute_all(engine)
    # SQLite's bulk insert raises the driver's own IntegrityError (DB-API), as before this change.
    with pytest.raises((sa.exc.IntegrityError, sqlite3.IntegrityError)):
        _stale_write(engine, pipelined)
    assert _stored(engine) == {"u1": []}
    with Session(engine) as session:
        assert session.exec(select(SegmentMembership)).all() == []


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_segment_delete_waits_for_a_membership_write_then_removes_it(
    engine: Engine,
) -> None:
    """The KEY SHARE lock a writer takes on its segments makes a concurrent delete wait for the writer's
    commit; the delete's trigger then removes the rows just written (no orphan either way)."""
    import threading

    assert engine.dialect.name == "postgresql"

    _load(engine, [{"key": "u1", "country": "US"}])
    recompute_all(engine)
    deleted = threading.Event()
    with Session(engine) as writer, writer.begin():
        upsert_and_recompute(
            session=writer,
            contexts=[parse_context({"key": "u1", "country": "DE"})],
            index=load_index(session=writer),
        )

        def delete() -> None:
            with Session(engine) as session, session.begin():
                session.execute(sa.delete(SegmentRecord).where(SegmentRecord.key == "vip-eu"))  # type: ignore[arg-type]
                session.execute(sa.delete(SegmentRecord).where(SegmentRecord.key == "eu"))  # type: ignore[arg-type]
            deleted.set()

        thread = threading.Thread(target=delete)
        thread.start()
        assert not deleted.wait(1.0)  # waits for the writer's lock on "eu"
    thread.join(10)
    assert deleted.is_set()
    assert _stored(engine) == {"u1": []}


def test_sqlite_full_recompute_checkpoints_its_wal_and_gives_back_default_settings(tmp_path: Path) -> None:
    """The bulk writer turns SQLite's automatic checkpoint off, its page cache up and its temporary files
    into memory while it writes; afterwards the WAL holds nothing left to copy, and every pooled
    connection has SQLite's defaults."""
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    migrate(engine)
    try:
        rng = random.Random(9)
        _load(engine, [_context(rng, i) for i in range(500)])
        recompute_all(engine, page_size=50)
        written = (tmp_path / "wal.db").stat().st_size  # the pooled connections stay open: no checkpoint
        with engine.connect() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            assert raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        assert (tmp_path / "wal.db").stat().st_size == written  # nothing was left to copy
        connections = [engine.connect() for _ in range(3)]
        try:
            for connection in connections:
                raw = connection.connection.driver_connection
                assert raw is not None
                assert raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
                assert raw.execute("PRAGMA cache_size").fetchone()[0] == -2000
                assert raw.execute("PRAGMA temp_store").fetchone()[0] == 0  # DEFAULT: files
        finally:
            for connection in connections:
                connection.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_recompute_writers_make_their_feed_rows_visible_in_seq_order(engine: Engine) -> None:
    """A recompute page's writer (as `--processes N` runs them) waits at the feed lock while another feed
    writer holds it, and draws its seq only once it has the lock: the holder's row, written while the
    page waits, gets the smaller seq and commits first, so a reader of `seq > N` never sees a larger seq
    before a smaller one."""
    import threading
    import time

    from segmentflow.services.membership import take_feed_lock

    _load(engine, [{"key": "u1", "plan": "vip"}])
    with Session(engine) as session:
        index = load_index(session=session)
        vip = session.exec(select(SegmentRecord).where(SegmentRecord.key == "vip")).one()
    done = threading.Event()

    def page() -> None:
        with Session(engine) as session, session.begin():
            recompute_page(session=session, index=index, after_id=0, limit=10, now=NOW)
        done.set()

    def waiting_at_the_lock() -> int:
        # A transaction of its own each time: pg_stat_activity is read once per transaction.
        with engine.connect() as reader:
            return int(
                reader.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event = 'advisory' AND datname = current_database()"
                    )
                ).scalar_one()
            )

    with Session(engine) as holder, holder.begin():
        take_feed_lock(holder)
        thread = threading.Thread(target=page)
        thread.start()
        deadline = time.monotonic() + 10
        while waiting_at_the_lock() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_at_the_lock() == 1
        holder.add(
            MembershipChange(
                segment_id=vip.id,
                segment_key="vip",
                contact_id=0,
                contact_key="held",
                change="exited",
                at=NOW,
            )
        )
        holder.flush()
        assert not done.is_set()
    thread.join(10)
    assert done.is_set()
    with Session(engine) as session:
        rows = session.exec(select(MembershipChange).order_by(MembershipChange.seq)).all()  # type: ignore[arg-type]
    assert [r.contact_key for r in rows] == ["held", "u1"]
