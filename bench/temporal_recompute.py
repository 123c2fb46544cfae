"""Benchmark: segmentflow through Temporal against the same work called in process, on the dev server.

1. Recompute. Per database (SQLite in a temp file, then PostgreSQL in a scratch database), segments and
   contacts are loaded once with the services into a template, and every timed run gets a byte-identical
   fresh copy of it (a file copy; `CREATE DATABASE ... TEMPLATE`). The direct service call
   `recompute_all(engine)` runs first and again last (its two times show the machine's drift), and between
   them `segmentflow.RecomputeMemberships` (started with `start_recompute`) runs with parallelism 1 and 2 on
   one worker, then with parallelism 2 on one worker limited to one activity at a time and on two such
   workers sharing the task queue. Only the recompute is timed (client start to result, a fresh dev server
   per run, the worker already polling). Every run must leave the same stored memberships per contact as
   the first direct run, report the same counts, one change-feed row per change and no cursor left behind.
   From each workflow's history the bench also prints where the wall time went.
2. Check Contact In Segment, on the direct run's database: `--checks` sequential one-check workflows timed
   from the client, one workflow doing `--checks` sequential `is_member` calls (each round trip timed
   inside the workflow, and from its history), and the same checks in process (the service in a session,
   and the activity method called directly). Every answer must match the stored memberships.

Target from the issue: the recompute workflow within 1.5x of the direct call; check p99 under 50 ms.
Exit status 1 when any result differs; speed is printed, never asserted.

The dev server hands every new task to matching through its history transfer queue, whose reader is
throttled to 20 reads a second (`history.transferProcessorMaxPollRPS`, one shard): past a short burst, each
sequential workflow task waits about 50 ms for it. `--dynamic-config history.transferProcessorMaxPollRPS=1000`
repeats the checks on a dev server without that floor.

Usage: .venv/bin/python bench/temporal_recompute.py [--contacts 100000] [--segments 50] [--checks 1000]
       [--range-size N] [--page-size 2000] [--skip-postgres] [--postgres-admin-url URL]
       [--dynamic-config KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import workflow

# The sandbox re-executes this file for every run of the workflows below: everything heavy comes from
# outside it, so a run pays what a user's workflow module would.
with workflow.unsafe.imports_passed_through():
    import psycopg
    import sqlalchemy as sa
    from common import make_contexts, make_segments
    from recompute import percentile, scratch_postgres, stored_memberships
    from segmentflow.plugins import SegmentsPlugin, start_recompute, temporal_cli_path
    from segmentflow.workflows import CheckContactInSegmentInput, RecomputeMembershipsInput, is_member
    from sqlalchemy.engine import Engine
    from sqlmodel import Session
    from temporalio.api.enums.v1 import EventType
    from temporalio.api.history.v1 import HistoryEvent
    from temporalio.client import Client, WorkflowHistory
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from segmentflow.db.engine import make_engine, migrate
    from segmentflow.db.tables import change_table, progress_table
    from segmentflow.rules import parse_context, parse_segments
    from segmentflow.services.contacts import upsert_contacts
    from segmentflow.services.membership import RecomputeCounts, check_membership, recompute_all
    from segmentflow.services.segment_admin import import_segments

Json = dict[str, Any]
Memberships = dict[str, list[str]]
_WARMUP = 5


# ---- the workflows a user would write around a check ----------------------------------------------------


@workflow.defn(name="bench.CheckOnce")
class CheckOnce:
    """One `is_member` check: the shortest workflow a user branches in."""

    @workflow.run
    async def run(self, pair: list[str]) -> bool:
        return await is_member(pair[0], pair[1])


@workflow.defn(name="bench.CheckMany")
class CheckMany:
    """Sequential `is_member` checks; each round trip timed as the workflow sees it (command sent to result
    delivered), with a clock the sandbox otherwise forbids."""

    @workflow.run
    async def run(self, pairs: list[list[str]]) -> tuple[list[bool], list[float], bool]:
        answers: list[bool] = []
        seconds: list[float] = []
        replayed = False  # a replay (after an eviction) would time the replay, not the round trips
        for segment_key, contact_key in pairs:
            with workflow.unsafe.sandbox_unrestricted():
                start = time.perf_counter()
            answers.append(await is_member(segment_key, contact_key))
            with workflow.unsafe.sandbox_unrestricted():
                seconds.append(time.perf_counter() - start)
            replayed = replayed or workflow.unsafe.is_replaying()
        return answers, seconds, replayed


# ---- databases --------------------------------------------------------------------------------------------


def load(url: str, segments_json: list[Json], contexts_json: list[Json]) -> float:
    """Migrate and import through the services in one transaction; returns the seconds taken."""
    engine = make_engine(url)
    try:
        migrate(engine)
        start = time.perf_counter()
        now = datetime.now(UTC)
        with Session(engine) as session, session.begin():
            import_segments(recompute=False, session=session, segments=parse_segments(segments_json), now=now)
            upsert_contacts(session=session, contexts=[parse_context(c) for c in contexts_json], now=now)
        seconds = time.perf_counter() - start
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:  # settled statistics, and no autovacuum worker holding the template when it is copied
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
        return seconds
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SqliteTemplate:
    """A loaded SQLite file; `copy()` gives a byte-identical fresh database for one run."""

    folder: Path
    url: str

    @contextmanager
    def copy(self) -> Iterator[str]:
        source = Path(self.url.removeprefix("sqlite:///"))
        target = self.folder / f"copy-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(source, target)
        try:
            yield f"sqlite:///{target}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)


@dataclass(frozen=True)
class PostgresTemplate:
    """A loaded PostgreSQL database; `copy()` clones it (`CREATE DATABASE ... TEMPLATE`) for one run."""

    admin_url: str
    url: str

    @contextmanager
    def copy(self) -> Iterator[str]:
        template = self.url.rsplit("/", 1)[1]
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for attempt in range(20):
                try:
                    conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    break
                except psycopg.errors.ObjectInUse:  # an autovacuum worker visiting the template
                    if attempt == 19:
                        raise
                    time.sleep(0.5)
        try:
            yield f"{self.admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- recompute ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    label: str
    parallelism: int
    workers: int
    max_activities: int | None


SETUPS = [
    Setup("workflow, parallelism 1, 1 worker", 1, 1, None),
    Setup("workflow, parallelism 2, 1 worker", 2, 1, None),
    Setup("workflow, parallelism 2, 1 worker x 1 activity", 2, 1, 1),
    Setup("workflow, parallelism 2, 2 workers x 1 activity", 2, 2, 1),
]


@dataclass
class Outcome:
    label: str
    seconds: float
    counts: RecomputeCounts
    memberships: Memberships
    feed_rows: int
    cursors_left: int
    note: str = ""


def load_average() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def settle() -> None:
    """The bench's own data out of the collector's sight, as it would be in a worker's heap."""
    gc.collect()
    gc.freeze()


def end_state(engine: Engine) -> tuple[Memberships, int, int]:
    with Session(engine) as session:
        feed = session.scalar(sa.select(sa.func.count()).select_from(change_table)) or 0
        cursors = session.scalar(sa.select(sa.func.count()).select_from(progress_table)) or 0
    return stored_memberships(engine), feed, cursors


def run_direct(url: str, page_size: int, label: str) -> Outcome:
    engine = make_engine(url)
    try:
        settle()
        start = time.perf_counter()
        counts = recompute_all(engine, page_size=page_size)
        seconds = time.perf_counter() - start
        return Outcome(label, seconds, counts, *end_state(engine), note=load_average())
    finally:
        engine.dispose()


def _seconds(event: HistoryEvent) -> float:
    return event.event_time.ToNanoseconds() / 1e9


@dataclass(frozen=True)
class ActivitySpan:
    name: str
    scheduled: float
    started: float
    completed: float


def activity_spans(history: WorkflowHistory) -> list[ActivitySpan]:
    """Every completed activity of a history, in scheduling order, with server-side event times."""
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, float] = {}
    spans: list[ActivitySpan] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (name, _seconds(event))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.activity_task_started_event_attributes.scheduled_event_id] = _seconds(event)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            key = event.activity_task_completed_event_attributes.scheduled_event_id
            name, at = scheduled[key]
            spans.append(ActivitySpan(name, at, started.get(key, at), _seconds(event)))
    return sorted(spans, key=lambda s: s.scheduled)


def longest_wait(history: WorkflowHistory) -> str:
    """The longest gap between consecutive events of a history, and the events around it."""
    gaps = [(_seconds(b) - _seconds(a), a, b) for a, b in itertools.pairwise(history.events)]
    gap, before, after = max(gaps, key=lambda g: g[0])
    name = EventType.Name
    return f"{name(before.event_type)} -> {name(after.event_type)} {gap * 1e3:.0f} ms"


def explain_recompute(history: WorkflowHistory, wall: float, parallelism: int) -> str:
    """Where a recompute workflow's wall time went, from its history's event times."""
    events = history.events
    opened, closed = _seconds(events[0]), _seconds(events[-1])
    spans = activity_spans(history)
    ranges = [s for s in spans if s.name == "segmentflow.RecomputeRange"]
    plan = next(s for s in spans if s.name == "segmentflow.PlanRecompute")
    finish = next(s for s in spans if s.name == "segmentflow.FinishRecompute")
    busy = sum(s.completed - s.started for s in ranges)
    waiting = sum(s.started - s.scheduled for s in ranges)
    return (
        f"history: plan {(plan.completed - opened) * 1e3:.0f} ms after start; {len(ranges)} range activities "
        f"run {busy:.2f} s in all (mean {busy / len(ranges):.2f} s, {busy / parallelism:.2f} s per slot), "
        f"schedule-to-start {waiting * 1e3:.0f} ms in all; last range to finish activity done "
        f"{(finish.completed - max(s.completed for s in ranges)) * 1e3:.0f} ms; close "
        f"{(closed - finish.completed) * 1e3:.0f} ms; client start/result outside the workflow "
        f"{(wall - (closed - opened)) * 1e3:.0f} ms"
    )


@asynccontextmanager
async def dev_server(
    engine: Engine, dynamic_config: Sequence[str] = ()
) -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of our own, the plugin on its client only; always shut down."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        plugins=[SegmentsPlugin(engine=engine)],
        dev_server_log_level="error",
        dev_server_extra_args=[arg for value in dynamic_config for arg in ("--dynamic-config-value", value)],
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def run_workflow(url: str, setup: Setup, params: RecomputeMembershipsInput) -> Outcome:
    engine = make_engine(url)
    try:
        async with dev_server(engine) as env, AsyncExitStack() as stack:
            queue = f"bench-{uuid.uuid4()}"
            for n in range(setup.workers):
                # A client of its own per worker: activities report their client's identity, so the
                # result names both workers when both took ranges.
                client = await Client.connect(
                    env.client.service_client.config.target_host,
                    namespace=env.client.namespace,
                    plugins=env.client.config()["plugins"],
                    identity=f"bench-worker-{n + 1}",
                )
                await stack.enter_async_context(
                    Worker(client, task_queue=queue, max_concurrent_activities=setup.max_activities)
                )
            settle()
            start = time.perf_counter()
            handle = await start_recompute(
                env.client,
                task_queue=queue,
                params=params.model_copy(update={"parallelism": setup.parallelism}),
            )
            result = await handle.result()
            seconds = time.perf_counter() - start
            note = load_average()
            history = await handle.fetch_history()
        counts = RecomputeCounts(result.contacts, result.entered, result.exited)
        note += f"; ranges={result.ranges} workers={','.join(result.workers)}\n    "
        note += explain_recompute(history, seconds, setup.parallelism)
        return Outcome(setup.label, seconds, counts, *end_state(engine), note=note)
    finally:
        engine.dispose()


def verify(outcome: Outcome, reference: Outcome) -> int:
    """Mismatches of one run against the first direct run (0 when identical)."""
    problems = []
    bad = [
        k
        for k in reference.memberships.keys() | outcome.memberships.keys()
        if outcome.memberships.get(k) != reference.memberships.get(k)
    ]
    if bad:
        problems.append(f"{len(bad)} contacts with other memberships, e.g. {sorted(bad)[:3]}")
    if vars(outcome.counts) != vars(reference.counts):
        problems.append(f"counts {vars(outcome.counts)} != {vars(reference.counts)}")
    changes = outcome.counts.entered + outcome.counts.exited
    if outcome.feed_rows != changes:
        problems.append(f"{outcome.feed_rows} change-feed rows for {changes} changes")
    if outcome.cursors_left:
        problems.append(f"{outcome.cursors_left} range cursors left behind")
    for problem in problems:
        print(f"    MISMATCH ({outcome.label}): {problem}")
    return len(bad) + len(problems)


# ---- checks ----------------------------------------------------------------------------------------------


def summary(ms: list[float]) -> str:
    return (
        f"p50 {percentile(ms, 0.5):6.2f} ms  p99 {percentile(ms, 0.99):6.2f} ms  "
        f"mean {statistics.fmean(ms):6.2f} ms  max {max(ms):6.2f} ms"
    )


async def timed(
    check: Callable[[list[str]], Awaitable[bool]], pairs: list[list[str]]
) -> tuple[list[bool], list[float]]:
    """Each check in turn after a few untimed ones: the answers and the milliseconds each took."""
    for pair in pairs[:_WARMUP]:
        await check(pair)
    settle()
    answers, ms = [], []
    for pair in pairs:
        start = time.perf_counter()
        answers.append(await check(pair))
        ms.append((time.perf_counter() - start) * 1e3)
    return answers, ms


def wrong_answers(label: str, pairs: list[list[str]], answers: list[bool], stored: Memberships) -> int:
    bad = [(s, c) for (s, c), a in zip(pairs, answers, strict=True) if a != (s in stored[c])]
    for segment_key, contact_key in bad[:5]:
        print(f"    WRONG ANSWER ({label}): {segment_key} / {contact_key}")
    return len(bad)


async def run_checks(url: str, stored: Memberships, segment_keys: list[str], args: argparse.Namespace) -> int:
    rng = random.Random(f"{args.seed}:checks")
    contacts = sorted(stored)
    pairs = [[rng.choice(segment_keys), rng.choice(contacts)] for _ in range(args.checks)]
    members = sum(s in stored[c] for s, c in pairs)
    print(f"  {len(pairs)} checks of random stored contacts in random segments ({members} members)")
    failures = 0
    engine = make_engine(url)
    try:

        async def service_call(pair: list[str]) -> bool:
            with Session(engine) as session, session.begin():
                return check_membership(session=session, segment_ref=pair[0], contact_key=pair[1]).is_member

        answers, service_ms = await timed(service_call, pairs)
        failures += wrong_answers("service", pairs, answers, stored)
        print(f"  in process, check_membership in a session: {summary(service_ms)}")

        activities = SegmentsPlugin(engine=engine).membership_activities

        async def activity_call(pair: list[str]) -> bool:
            params = CheckContactInSegmentInput(segment_key=pair[0], contact_key=pair[1])
            return (await activities.check_contact_in_segment(params)).is_member

        answers, activity_ms = await timed(activity_call, pairs)
        failures += wrong_answers("activity method", pairs, answers, stored)
        print(f"  in process, the activity method (to_thread + payload models): {summary(activity_ms)}")

        configs = [[], args.dynamic_config] if args.dynamic_config else [[]]
        for dynamic_config in configs:
            failures += await checks_on_dev_server(
                engine, pairs, stored, dynamic_config, percentile(service_ms, 0.5)
            )
    finally:
        engine.dispose()
    return failures


async def checks_on_dev_server(
    engine: Engine, pairs: list[list[str]], stored: Memberships, dynamic_config: list[str], service_p50: float
) -> int:
    """The checks from workflows on a dev server of their own (with these dynamic config values)."""
    server = "dev server" + (f" with {' '.join(dynamic_config)}" if dynamic_config else " (defaults)")
    failures = 0
    async with dev_server(engine, dynamic_config) as env:
        queue = f"bench-{uuid.uuid4()}"
        async with Worker(env.client, task_queue=queue, workflows=[CheckOnce, CheckMany]):
            ids: list[str] = []

            async def one_workflow(pair: list[str]) -> bool:
                ids.append(f"bench-check-{uuid.uuid4()}")
                return await env.client.execute_workflow(CheckOnce.run, pair, id=ids[-1], task_queue=queue)

            answers, once_ms = await timed(one_workflow, pairs)
            failures += wrong_answers("one-check workflows", pairs, answers, stored)
            slowest = max(range(len(once_ms)), key=once_ms.__getitem__)
            history = await env.client.get_workflow_handle(ids[_WARMUP + slowest]).fetch_history()
            print(f"  {server}:")
            print(f"    {len(pairs)} one-check workflows, client start to result: {summary(once_ms)}")
            print(f"      ({load_average()}; the slowest one's longest wait: {longest_wait(history)})")

            settle()
            start = time.perf_counter()
            handle = await env.client.start_workflow(
                CheckMany.run, pairs, id=f"bench-checks-{uuid.uuid4()}", task_queue=queue
            )
            answers, seconds, replayed = await handle.result()
            many_s = time.perf_counter() - start
            history = await handle.fetch_history()
    failures += wrong_answers("one workflow, many checks", pairs, answers, stored)
    inside_ms = [s * 1e3 for s in seconds]
    print(f"    1 workflow x {len(pairs)} checks, timed inside the workflow: {summary(inside_ms)}")
    print(
        f"      ({many_s:.2f} s in all, {load_average()})"
        + ("; REPLAYED, so the times inside are not round trips" if replayed else "")
    )
    spans = activity_spans(history)
    server_ms = [(s.completed - s.scheduled) * 1e3 for s in spans]
    turn_ms = [(b.scheduled - a.completed) * 1e3 for a, b in itertools.pairwise(spans)]
    cycle_ms = [(b.scheduled - a.scheduled) * 1e3 for a, b in itertools.pairwise(spans)]
    print(f"      history, activity scheduled -> completed:   {summary(server_ms)}")
    print(f"      history, completed -> next scheduled:       {summary(turn_ms)}")
    print(f"      history, scheduled -> next scheduled:       {summary(cycle_ms)}")
    print(
        f"    p50 / in-process service p50: one-check workflow "
        f"{percentile(once_ms, 0.5) / service_p50:.0f}x, check inside a workflow "
        f"{percentile(inside_ms, 0.5) / service_p50:.0f}x; target p99 < 50 ms"
    )
    return failures


# ---- per database ----------------------------------------------------------------------------------------


def print_outcome(outcome: Outcome, first_direct_s: float) -> None:
    ratio = outcome.seconds / first_direct_s
    print(f"  {outcome.label:50s} {outcome.seconds:7.2f} s  {ratio:4.2f}x the first  ({outcome.note})")


async def run_database(
    name: str,
    template: SqliteTemplate | PostgresTemplate,
    args: argparse.Namespace,
    params: RecomputeMembershipsInput,
    segment_keys: list[str],
) -> tuple[list[tuple[str, float, float]], int]:
    """Every measurement on one database: (label, seconds, ratio) rows and the failure count."""
    print(f"\n== {name} ==")
    failures = 0
    with template.copy() as checked_url:
        first = run_direct(checked_url, args.page_size, "direct recompute_all")
        print(
            f"  {first.label:50s} {first.seconds:7.2f} s  ({first.note}; contacts={first.counts.contacts:,} "
            f"entered={first.counts.entered:,} exited={first.counts.exited})"
        )
        failures += verify(first, first)
        outcomes = []
        for setup in SETUPS:
            with template.copy() as url:
                outcome = await run_workflow(url, setup, params)
            failures += verify(outcome, first)
            outcomes.append(outcome)
            print_outcome(outcome, first.seconds)
        with template.copy() as url:
            last = run_direct(url, args.page_size, "direct recompute_all, again")
        failures += verify(last, first)
        print_outcome(last, first.seconds)
        direct_s = (first.seconds + last.seconds) / 2
        rows = [(o.label, o.seconds, o.seconds / direct_s) for o in outcomes]
        print(
            f"  end states identical to the first direct run: {'yes' if not failures else 'NO'} "
            f"({len(first.memberships):,} contacts, "
            f"{sum(map(len, first.memberships.values())):,} memberships)"
        )
        print(f"\n  Check Contact In Segment ({name}):")
        failures += await run_checks(checked_url, first.memberships, segment_keys, args)
    return [("direct recompute_all (mean of 2)", direct_s, 1.0), *rows], failures


async def main_async(args: argparse.Namespace) -> int:
    range_size = args.range_size or math.ceil(args.contacts / 10)
    params = RecomputeMembershipsInput(range_size=range_size, page_size=args.page_size)
    segments_json = make_segments(args.segments, args.seed, population=args.contacts)
    contexts_json = make_contexts(args.contacts, args.seed)
    segment_keys = sorted(s["key"] for s in segments_json)
    print(
        f"workload: {args.contacts:,} contacts x {args.segments} segments, seed {args.seed}; rangeSize "
        f"{range_size:,} ({math.ceil(args.contacts / range_size)} ranges), pageSize {args.page_size:,} "
        f"(recompute_all pages alike); {os.cpu_count()} cores, {load_average()}"
    )
    results: list[tuple[str, list[tuple[str, float, float]]]] = []
    failures = 0
    with tempfile.TemporaryDirectory(prefix="segmentflow-temporal-bench-") as tmp:
        template = SqliteTemplate(Path(tmp), f"sqlite:///{Path(tmp) / 'template.db'}")
        seconds = load(template.url, segments_json, contexts_json)
        print(f"SQLite template loaded through the services in {seconds:.2f} s (not timed below)")
        rows, bad = await run_database("SQLite", template, args, params, segment_keys)
        results.append(("SQLite", rows))
        failures += bad
    if not args.skip_postgres:
        with scratch_postgres(args.postgres_admin_url) as url:
            seconds = load(url, segments_json, contexts_json)
            print(f"\nPostgreSQL template loaded through the services in {seconds:.2f} s (not timed below)")
            rows, bad = await run_database(
                "PostgreSQL", PostgresTemplate(args.postgres_admin_url, url), args, params, segment_keys
            )
            results.append(("PostgreSQL", rows))
            failures += bad

    print("\noverhead ratio, workflow / direct service call (mean of its two runs); target <= 1.5x")
    for name, rows in results:
        for label, seconds, ratio in rows:
            print(f"  {name:10s} {label:50s} {seconds:7.2f} s  {ratio:4.2f}x")
    if failures:
        print(f"FAILED: {failures} differences")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segmentflow through Temporal vs in process")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--range-size", type=int, default=0, help="default: a tenth of the contacts")
    parser.add_argument("--page-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--dynamic-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run the checks again on a dev server with this dynamic config value (repeatable), e.g. "
        "history.transferProcessorMaxPollRPS=1000",
    )
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
