"""Benchmark: stored-membership recompute on SQLite and PostgreSQL through segmentflow's own services.

Per database: import (segments, then contacts, each one committed transaction), a full `recompute_all`, a
second full recompute that must change nothing, then the stored memberships are compared with
LaunchDarkly's SDK evaluating the same data (exit 1 on any difference). Then --extra-segments more segments
are imported and recomputed alone (`recompute_all(segment_keys=...)`), and one changed contact at a time is
written and recomputed against all of them (`upsert_contacts` + `recompute_contacts`, one committed
transaction; p50/p99 over --iterations), both as the services are called today (the segment index loaded
inside `recompute_contacts`) and with an index loaded once up front. The changed contacts are checked
against LaunchDarkly too. The peer line is LaunchDarkly's SDK evaluating the same contacts and segments in
process, with no database at all. Every timed full recompute from no memberships starts `settle`d: dead
rows vacuumed, logs checkpointed (PostgreSQL's CHECKPOINT: a superuser or pg_checkpoint in the admin URL),
the operating system's dirty pages written; the no-change reruns follow their full recompute at once.
Targets from the issue: full recompute under 30 s on each database; incremental p99 under 5 ms.

With --processes N the full recompute is also run as `recompute_all(processes=N)` (`segmentflow recompute
--processes N`: N spawned processes; process start-up counted), from the same starting state as a
one-process run in the same run; its memberships must match LaunchDarkly's and its change feed the
one-process run's (as a multiset; the order is printed too), and its no-change rerun must change nothing.
--only-processes runs just that (and its rerun), --no-reference skips LaunchDarkly: for 1,000,000 contacts.

Usage: .venv/bin/python bench/recompute.py [--contacts 100000] [--segments 50] [--extra-segments 50]
       [--iterations 500] [--processes N [--only-processes]] [--no-reference]
       [--skip-sqlite] [--skip-postgres]
       [--postgres-admin-url URL] [--profile 25]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from common import make_contexts, make_segments, mutate_context, percentile, scratch_postgres
from ldclient.context import Context as LDContext
from ldclient.impl.evaluator import Evaluator
from ldclient.impl.evaluator_common import EvalResult
from ldclient.impl.model import Segment as LDSegment
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.engine import make_engine, migrate
from segmentflow.db.tables import change_table, contact_table, membership_table, progress_table
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.exports import iter_memberships
from segmentflow.services.membership import recompute_all, upsert_and_recompute
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import SegmentIndexCache

Json = dict[str, Any]
_WARMUP = 5


class LaunchDarkly:
    """LaunchDarkly's SDK as the reference: segment membership as a `segmentMatch` clause evaluates it."""

    def __init__(self, segments_json: list[Json]) -> None:
        self.segments = sorted((LDSegment(item) for item in segments_json), key=lambda s: s.key)
        by_key = {s.key: s for s in self.segments}
        evaluator = Evaluator(lambda _key: None, by_key.get, lambda _key: (None, "NOT_CONFIGURED"))
        self._matches = evaluator._segment_matches_context

    def memberships(self, context: LDContext) -> list[str]:
        return [s.key for s in self.segments if self._matches(s, context, EvalResult())]

    def evaluate_all(self, contexts: list[LDContext]) -> dict[str, list[str]]:
        return {c.fully_qualified_key: self.memberships(c) for c in contexts}


def stored_memberships(engine: Engine) -> dict[str, list[str]]:
    with Session(engine) as session:
        return dict(iter_memberships(session=session))


def compare(name: str, stored: dict[str, list[str]], expected: dict[str, list[str]]) -> int:
    """Contacts whose stored memberships differ from LaunchDarkly's (none compared when `expected` is empty:
    `--no-reference`)."""
    if not expected:
        return 0
    bad = [key for key in expected.keys() | stored.keys() if stored.get(key) != expected.get(key)]
    for key in sorted(bad)[:10]:
        print(f"  MISMATCH ({name}) {key}: stored={stored.get(key)} LaunchDarkly={expected.get(key)}")
    return len(bad)


def print_profile(profiler: cProfile.Profile, top: int, title: str) -> None:
    print(f"\ncProfile of {title} (top {top} by own time):")
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(top)


def profile_services(
    args: argparse.Namespace, segments_json: list[Json], extra_json: list[Json], contexts_json: list[Json]
) -> None:
    """Where the time goes, on a fresh SQLite database (profiled runs are slower; they are not the figures
    above): the first full recompute, then incremental calls with and without a preloaded index."""
    with tempfile.TemporaryDirectory(prefix="segmentflow-profile-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'profile.db'}")
        try:
            migrate(engine)
            now = datetime.now(UTC)
            with Session(engine) as session, session.begin():
                import_segments(
                    recompute=False, session=session, segments=parse_segments(segments_json), now=now
                )
                upsert_contacts(session=session, contexts=[parse_context(c) for c in contexts_json], now=now)
            profiler = cProfile.Profile()
            profiler.runcall(recompute_all, engine, page_size=args.page_size)
            print_profile(profiler, args.profile, "the first full recompute (SQLite)")
            if extra_json:
                with Session(engine) as session, session.begin():
                    import_segments(
                        recompute=False, session=session, segments=parse_segments(extra_json), now=now
                    )
            rng = random.Random(f"{args.seed}:profile")
            cache = SegmentIndexCache()
            latest: dict[int, Json] = {}
            for _ in range(_WARMUP):
                change_one(engine, cache, contexts_json, latest, rng)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(200):
                change_one(engine, cache, contexts_json, latest, rng)
            profiler.disable()
            print_profile(profiler, args.profile, "200 incremental calls (SQLite)")
        finally:
            engine.dispose()


def run_database(
    name: str,
    url: str,
    args: argparse.Namespace,
    segments_json: list[Json],
    extra_json: list[Json],
    contexts_json: list[Json],
    expected: dict[str, list[str]],
    reference_all: LaunchDarkly,
) -> tuple[float, int]:
    """Every measurement on one database; returns the full recompute time and the mismatch count."""
    print(f"\n== {name} ==")
    engine = make_engine(url)
    try:
        migrate(engine)
        now = datetime.now(UTC)

        start = time.perf_counter()
        with Session(engine) as session, session.begin():
            import_segments(recompute=False, session=session, segments=parse_segments(segments_json), now=now)
        segments_s = time.perf_counter() - start
        start = time.perf_counter()
        contexts = [parse_context(c) for c in contexts_json]
        parse_s = time.perf_counter() - start
        with Session(engine) as session, session.begin():
            upsert_contacts(session=session, contexts=contexts, now=now)
        import_s = time.perf_counter() - start
        print(
            f"import: {len(segments_json)} segments {segments_s:.3f} s; {len(contexts):,} contacts "
            f"{import_s:.2f} s (parse {parse_s:.2f} s + upsert {import_s - parse_s:.2f} s)"
        )

        del contexts  # the service reads contacts back from the database
        settle(engine)
        if args.only_processes:
            return only_processes(name, engine, args, expected)
        start = time.perf_counter()
        first = recompute_all(engine, page_size=args.page_size)
        full_s = time.perf_counter() - start
        pairs = first.contacts * len(segments_json)
        print(
            f"full recompute:   {full_s:7.2f} s  "
            f"({first.contacts:,} contacts x {len(segments_json)} segments, "
            f"{pairs / full_s:,.0f} evaluations/s with the writes; entered={first.entered:,} "
            f"exited={first.exited:,}) target < 30 s"
        )
        start = time.perf_counter()
        second = recompute_all(engine, page_size=args.page_size)
        again_s = time.perf_counter() - start
        unchanged = f"entered={second.entered} exited={second.exited}"
        print(f"second recompute: {again_s:7.2f} s  (no change: {unchanged})")
        failures = compare(name, stored_memberships(engine), expected)
        failures += second.entered + second.exited
        print(
            f"stored memberships vs LaunchDarkly: {len(expected) - failures:,} of {len(expected):,} contacts "
            "identical"
            if expected
            else "stored memberships not compared with LaunchDarkly (--no-reference)"
        )

        if args.processes > 1:
            failures += run_parallel(name, engine, url, args, expected, full_s)

        if extra_json:
            start = time.perf_counter()
            with Session(engine) as session, session.begin():
                import_segments(
                    recompute=False, session=session, segments=parse_segments(extra_json), now=now
                )
            scoped = recompute_all(
                engine, page_size=args.page_size, segment_keys=[s["key"] for s in extra_json]
            )
            print(
                f"{len(extra_json)} segments added and recomputed alone: {time.perf_counter() - start:.2f} s "
                f"(entered={scoped.entered:,})"
            )
        failures += incremental(engine, args, contexts_json, reference_all)
        return full_s, failures
    finally:
        engine.dispose()


def only_processes(
    name: str, engine: Engine, args: argparse.Namespace, expected: dict[str, list[str]]
) -> tuple[float, int]:
    """--only-processes: the full recompute over --processes processes and its no-change rerun, nothing
    else (for sizes where the one-process run and the reference take too long)."""
    start = time.perf_counter()
    first = recompute_all(engine, page_size=args.page_size, processes=args.processes)
    full_s = time.perf_counter() - start
    print(
        f"full recompute, {args.processes} processes: {full_s:7.2f} s, process start-up included "
        f"({first.contacts:,} contacts, entered={first.entered:,}); load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    start = time.perf_counter()
    second = recompute_all(engine, page_size=args.page_size, processes=args.processes)
    again_s = time.perf_counter() - start
    print(
        f"no-change rerun, {args.processes} processes: {again_s:.2f} s (entered={second.entered} "
        f"exited={second.exited}); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    failures = second.entered + second.exited
    if expected:
        failures += compare(name, stored_memberships(engine), expected)
        print(
            f"stored memberships vs LaunchDarkly: {len(expected) - failures:,} of {len(expected):,} identical"
        )
    else:
        print("(no reference: memberships not compared)")
    return full_s, failures


def feed_rows(engine: Engine) -> list[tuple[str, str, str]]:
    """The change feed as (segment key, contact key, change), in seq order."""
    query = sa.select(change_table.c.segment_key, change_table.c.contact_key, change_table.c.change).order_by(
        change_table.c.seq
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def forget_memberships(engine: Engine) -> None:
    """Back to the state before the first full recompute: no memberships, no feed, nothing computed."""
    with engine.begin() as connection:
        for table in (membership_table, change_table, progress_table):
            connection.execute(table.delete())
        connection.execute(contact_table.update().values(computed_at=None))


def settle(engine: Engine) -> None:
    """The same starting state for every timed full recompute: the rows the last one left dead vacuumed
    away (PostgreSQL), the database's log copied into its files (PostgreSQL's CHECKPOINT, SQLite's
    checkpoint) and the operating system's dirty pages written, so no run pays for the writes of the one
    before it. Without it, the same run measured 10-17 s instead of 9-11 s here, in no particular order."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in (membership_table, change_table, contact_table, progress_table):
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table.name}")
            connection.exec_driver_sql("CHECKPOINT")
    else:
        with engine.connect() as connection:
            busy, _, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        if busy:
            print(
                "settle: SQLite's checkpoint was blocked by a reader; the WAL is not empty", file=sys.stderr
            )
    os.sync()


def run_parallel(
    name: str,
    engine: Engine,
    url: str,
    args: argparse.Namespace,
    expected: dict[str, list[str]],
    full_s: float,
) -> int:
    """The same full recompute over several processes; its memberships must equal LaunchDarkly's and its
    change feed the one-process run's (as a multiset). The peer is one process again from the same state
    as the parallel run (both after the previous memberships were deleted and `settle`)."""
    forget_memberships(engine)
    settle(engine)
    start = time.perf_counter()
    recompute_all(engine, page_size=args.page_size)
    full_s = time.perf_counter() - start
    single_feed = feed_rows(engine)
    forget_memberships(engine)
    settle(engine)
    start = time.perf_counter()
    counts = recompute_all(engine, page_size=args.page_size, processes=args.processes)
    seconds = time.perf_counter() - start
    mismatched = compare(f"{name} x{args.processes}", stored_memberships(engine), expected)
    feed = feed_rows(engine)
    feed_same = sorted(feed) == sorted(single_feed)
    start = time.perf_counter()
    again = recompute_all(engine, page_size=args.page_size, processes=args.processes)
    again_s = time.perf_counter() - start
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"full recompute, {args.processes} processes: {seconds:7.2f} s, process start-up included ("
        f"{counts.contacts:,} contacts, entered={counts.entered:,} exited={counts.exited:,}); "
        f"one process, same state, same run: {full_s:.2f} s: {full_s / seconds:.2f}x faster; "
        f"load average {load}\n"
        f"  no-change rerun, {args.processes} processes: {again_s:.2f} s (entered={again.entered} "
        f"exited={again.exited})\n"
        + (
            f"  memberships vs LaunchDarkly: {len(expected) - mismatched:,} of {len(expected):,} identical; "
            if expected
            else "  memberships not compared with LaunchDarkly (--no-reference); "
        )
        + f"change feed {'identical' if feed_same else 'DIFFERENT'} to the "
        f"one-process run's as a multiset ({len(feed):,} rows vs {len(single_feed):,}), "
        f"{'and in the same order' if feed == single_feed else 'in another order'}"
    )
    return mismatched + (0 if feed_same else 1) + again.entered + again.exited


class GcPauses:
    """Collections of the cyclic garbage collector while active: they explain latency spikes."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self)

    def summary(self) -> str:
        oldest = [p for g, p in self.pauses if g == 2]
        total = sum(p for _, p in self.pauses)
        longest = max(oldest, default=0.0) * 1e3
        return (
            f"GC: {len(self.pauses)} collections {total * 1e3:.0f} ms, "
            f"{len(oldest)} full, longest {longest:.1f} ms"
        )


def change_one(
    engine: Engine,
    cache: SegmentIndexCache,
    contexts_json: list[Json],
    latest: dict[int, Json],
    rng: random.Random,
    pipelined: bool = True,
) -> tuple[float, int]:
    """Write one changed contact and recompute it, in one committed transaction, the way the services do
    it (`upsert_and_recompute` with a worker's `SegmentIndexCache`, which costs one query per call when no
    segment changed: in the first pipeline on PostgreSQL, its own round trip on the Core path):
    (seconds, changes)."""
    n = rng.randrange(len(contexts_json))
    raw = mutate_context(latest.get(n, contexts_json[n]), rng)
    latest[n] = raw
    context = parse_context(raw)
    start = time.perf_counter()
    with Session(engine) as session, session.begin():
        _, counts = upsert_and_recompute(
            session=session, contexts=[context], index=cache, now=datetime.now(UTC), pipelined=pipelined
        )
    return time.perf_counter() - start, counts.entered + counts.exited


def incremental(
    engine: Engine, args: argparse.Namespace, contexts_json: list[Json], reference: LaunchDarkly
) -> int:
    """One changed contact per committed transaction, p50/p99 after a few untimed warm-up calls; then the
    changed contacts are checked against LaunchDarkly."""
    rng = random.Random(f"{args.seed}:incremental")
    latest: dict[int, Json] = {}
    cache = SegmentIndexCache()
    with Session(engine) as session:
        index = cache.get(session=session)
    label = "upsert_and_recompute, segment index cached per worker"
    # On PostgreSQL the peer (the portable Core path, one round trip per statement) takes every other
    # call, so both see the same machine load; elsewhere every call is the service's one path.
    peer = engine.dialect.name == "postgresql"
    warmup = [
        change_one(engine, cache, contexts_json, latest, rng, pipelined=not (peer and n % 2))[0] * 1e3
        for n in range(_WARMUP * (2 if peer else 1))
    ]
    runs: list[tuple[float, int]] = []
    core: list[float] = []
    with GcPauses() as pauses:
        for _ in range(args.iterations):
            runs.append(change_one(engine, cache, contexts_json, latest, rng))
            if peer:
                core.append(change_one(engine, cache, contexts_json, latest, rng, pipelined=False)[0] * 1e3)
    ms = [seconds * 1e3 for seconds, _ in runs]
    print(
        f"incremental, 1 contact x {len(index.compiled)} segments, {label}:\n"
        f"  p50 {percentile(ms, 0.5):.2f} ms  p99 {percentile(ms, 0.99):.2f} ms  "
        f"mean {statistics.fmean(ms):.2f} ms  max {max(ms):.2f} ms  target p99 < 5 ms\n"
        f"  ({args.iterations} commits, {sum(c for _, c in runs)} membership changes; first warm-up call "
        f"{warmup[0]:.1f} ms, not counted; {pauses.summary()}{', both paths' if peer else ''})"
    )
    if peer:
        print(
            f"  peer, same run, calls interleaved: Core path (pipelined=False) "
            f"p50 {percentile(core, 0.5):.2f} ms  p99 {percentile(core, 0.99):.2f} ms  "
            f"mean {statistics.fmean(core):.2f} ms; pipelined p99 / "
            f"Core p99 = {percentile(ms, 0.99) / percentile(core, 0.99):.2f}x; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )
    stored = stored_memberships(engine)
    expected = {}
    for raw in latest.values():
        context = LDContext.from_dict(raw)
        expected[context.fully_qualified_key] = reference.memberships(context)
    changed = {key: stored.get(key, []) for key in expected}
    failures = compare("incremental", changed, expected)
    print(f"changed contacts vs LaunchDarkly: {len(expected) - failures} of {len(expected)} identical")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segmentflow recompute on SQLite and PostgreSQL")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=50, help="segments in the full recompute")
    parser.add_argument("--extra-segments", type=int, default=50, help="added before the incremental runs")
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--page-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        metavar="N",
        help="also run the full recompute over N processes (contact ranges, as the workflow's activities "
        "run them) and check it against the one-process run",
    )
    parser.add_argument(
        "--only-processes",
        action="store_true",
        help="only the full recompute over --processes processes and its rerun (large sizes)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip LaunchDarkly's evaluation")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after the timed runs, profile a full and incremental recomputes on SQLite; print the top N",
    )
    args = parser.parse_args(argv)

    all_segments = make_segments(args.segments + args.extra_segments, args.seed, population=args.contacts)
    segments_json, extra_json = all_segments[: args.segments], all_segments[args.segments :]
    contexts_json = make_contexts(args.contacts, args.seed)
    print(
        f"workload: {args.contacts:,} contacts, {args.segments} segments (+{args.extra_segments} for the "
        f"incremental runs), seed {args.seed}"
    )

    reference = LaunchDarkly(segments_json)
    start = time.perf_counter()
    ld_contexts = [] if args.no_reference else [LDContext.from_dict(c) for c in contexts_json]
    ld_parse_s = time.perf_counter() - start
    start = time.perf_counter()
    expected = reference.evaluate_all(ld_contexts)
    ld_eval_s = max(time.perf_counter() - start, 1e-9)
    del ld_contexts
    # The bench's own data (every context as JSON, the expected memberships) is not in a worker's heap; move
    # it out of the collector's sight so full collections cost what they would there. GC time is still
    # reported for the incremental runs.
    gc.collect()
    gc.freeze()
    members = sum(len(v) for v in expected.values())
    if args.no_reference:
        print("LaunchDarkly: skipped (--no-reference)")
    else:
        print(
            f"LaunchDarkly in process, no database: parse {ld_parse_s:.2f} s, evaluate {ld_eval_s:.2f} s "
            f"({args.contacts * args.segments / ld_eval_s:,.0f} evaluations/s; {members:,} memberships)"
        )

    reference_all = LaunchDarkly(all_segments)
    results: list[tuple[str, float]] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="segmentflow-bench-") as tmp:
        if not args.skip_sqlite:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            full_s, bad = run_database(
                "SQLite", url, args, segments_json, extra_json, contexts_json, expected, reference_all
            )
            results.append(("SQLite", full_s))
            failures += bad
    if not args.skip_postgres:
        with scratch_postgres(args.postgres_admin_url) as url:
            full_s, bad = run_database(
                "PostgreSQL", url, args, segments_json, extra_json, contexts_json, expected, reference_all
            )
            results.append(("PostgreSQL", full_s))
            failures += bad

    print(
        "\npeer ratio, lower is better: our full recompute with the database / LaunchDarkly evaluation alone"
    )
    for name, full_s in [] if args.no_reference else results:
        print(
            f"  {name:10s} {full_s:7.2f} s / {ld_eval_s:.2f} s = {full_s / ld_eval_s:.2f}x   "
            f"(vs LaunchDarkly parse + evaluate {ld_parse_s + ld_eval_s:.2f} s: "
            f"{full_s / (ld_parse_s + ld_eval_s):.2f}x)"
        )
    if args.profile:
        profile_services(args, segments_json, extra_json, contexts_json)
    if failures:
        print(f"FAILED: {failures} mismatches")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
