"""Benchmark: SLA policy selection in process, and concurrent `segmentflow.TicketSla` workflows.

1. In process, 100,000 seeded tickets (priority, channel, tags, creation time in 2026, and the segment keys
   of their contact) against 12 ordered policies (segments any/all/none, priority, channel, tags; 24/7 and
   business-hours calendars in Berlin and New York with holidays):
   a. `select_policy` (prepared frozensets) against a naive peer reading the policy JSON per ticket (lists,
      no preparation): selections/s of each, and every answer must agree. Target: 50,000/s.
   b. `select_and_schedule`: selection plus the due and warning times of every targeted metric.
   c. Business-hours due times alone: `add_business_time` against the `businesstimedelta` library (a
      well-known implementation; pytz zones, its own holiday rule) on the same starts and durations; the
      answers are compared and disagreements counted (printed, not fatal: the library's DST handling
      differs, see below).
2. SLA timers in `sla_timer` (the design since issue 15 item 4), on the dev server (the transfer throttle
   lifted, as `worker.py --dev` runs it) with one in-process worker and the plugin: `--timer-tickets` open
   tickets written through the service `segmentflow.PlanTicketSla` uses (`plan_ticket(timers=True)`, 500
   per transaction, no workflow per ticket), created over one minute with a 24/7 policy whose first reply
   is due `--timer-due` after creation, so every first-reply breach comes due within one minute (the
   warnings, at 80%, within another, overlapping); two `segmentflow.FireSlaTimers` firers (as
   `worker.py` starts them) fire them. Measured: lateness of each firing = the SLA event's `fired_at`
   minus its warning or due time, p50/p99/max, every timer fired exactly once, and the CPU the worker
   process and the dev server spent.
3. The peer, in the same run: the per-ticket-timer design (`TicketSla` with `timers="workflow"`: each run
   sleeps on its own durable timers) with `--workflows` workflows started at once, each first reply due
   `--due` after creation; the bench waits for every warning and breach, then solves every ticket.
   Printed: start rate, the same lateness, the worker process's and the dev server's resident memory.

Exit status 1 when an answer differs (selection) or an event is missing; speed is printed, never asserted.

Usage: .venv/bin/python bench/sla.py [--tickets 100000] [--timer-tickets 10000] [--timer-due 180]
       [--workflows 1000] [--due 120] [--skip-temporal] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common import percentile

if TYPE_CHECKING:  # the database and Temporal are imported by the benches that use them
    from sqlalchemy.engine import Engine
    from temporalio.testing import WorkflowEnvironment

Json = dict[str, Any]

SEGMENTS = [f"seg-{i:02d}" for i in range(30)] + ["vip", "eu", "us", "paying", "enterprise", "staff"]
_SEGMENT_SHARE = {"vip": 0.08, "eu": 0.35, "us": 0.4, "paying": 0.5, "enterprise": 0.1, "staff": 0.02}
PRIORITIES = ["low", "normal", "high", "urgent"]
CHANNELS = ["email", "web", "chat", "phone"]
TAGS = ["billing", "outage", "login", "bug", "feature", "refund", "api", "mobile"]
_WEEK = ("mon", "tue", "wed", "thu", "fri")
# Fixed-date holidays for 2026-2031 (businesstimedelta's holiday rule fails past its last holiday).
BERLIN_HOLIDAYS = [
    f"{y}-{md}" for y in range(2026, 2032) for md in ("01-01", "05-01", "10-03", "12-24", "12-25", "12-26")
]
NY_HOLIDAYS = [f"{y}-{md}" for y in range(2026, 2032) for md in ("01-01", "06-19", "07-04", "11-11", "12-25")]


def _office(zone: str, holidays: list[str], hours: str = "09:00-17:00") -> Json:
    return {"timezone": zone, "hours": {d: [hours] for d in _WEEK}, "holidays": holidays}


def _targets(scale: int) -> Json:
    return {
        "urgent": {
            "first_reply": f"PT{30 * scale}M",
            "next_reply": f"PT{60 * scale}M",
            "resolution": f"PT{4 * scale}H",
        },
        "high": {"first_reply": f"PT{1 * scale}H", "resolution": f"PT{8 * scale}H"},
        "normal": {
            "first_reply": f"PT{4 * scale}H",
            "next_reply": f"PT{4 * scale}H",
            "resolution": f"PT{24 * scale}H",
        },
        "low": {"first_reply": f"PT{8 * scale}H", "resolution": f"PT{40 * scale}H"},
    }


def make_policies() -> list[Json]:
    berlin, new_york = _office("Europe/Berlin", BERLIN_HOLIDAYS), _office("America/New_York", NY_HOLIDAYS)
    return [
        {
            "key": "staff",
            "conditions": {"segments_any": ["staff"]},
            "targets": _targets(4),
            "calendar": berlin,
        },
        {
            "key": "outage",
            "conditions": {"tags": ["outage"], "priority": ["urgent"]},
            "targets": _targets(1),
            "calendar": "24/7",
        },
        {
            "key": "vip-urgent",
            "conditions": {"segments_any": ["vip"], "priority": ["high", "urgent"]},
            "targets": _targets(1),
            "calendar": "24/7",
        },
        {
            "key": "enterprise-eu",
            "conditions": {"segments_all": ["enterprise", "eu"]},
            "targets": _targets(1),
            "calendar": berlin,
        },
        {
            "key": "enterprise-us",
            "conditions": {"segments_all": ["enterprise", "us"]},
            "targets": _targets(1),
            "calendar": new_york,
        },
        {"key": "vip", "conditions": {"segments_any": ["vip"]}, "targets": _targets(2), "calendar": berlin},
        {
            "key": "billing",
            "conditions": {"tags": ["billing", "refund"], "segments_any": ["paying"]},
            "targets": _targets(2),
            "calendar": berlin,
        },
        {
            "key": "chat-eu",
            "conditions": {"channel": ["chat"], "segments_any": ["eu"]},
            "targets": _targets(2),
            "calendar": berlin,
        },
        {
            "key": "paying-eu",
            "conditions": {"segments_all": ["paying", "eu"], "segments_none": ["seg-03"]},
            "targets": _targets(3),
            "calendar": berlin,
        },
        {
            "key": "paying-us",
            "conditions": {"segments_all": ["paying", "us"]},
            "targets": _targets(3),
            "calendar": new_york,
        },
        {
            "key": "free-eu",
            "conditions": {"segments_any": ["eu"], "segments_none": ["paying"]},
            "targets": _targets(4),
            "calendar": berlin,
        },
        {
            "key": "free-us",
            "conditions": {
                "segments_any": ["us"],
                "segments_none": ["paying", "seg-07"],
                "priority": ["normal", "high", "urgent"],
            },
            "targets": _targets(4),
            "calendar": new_york,
        },
    ]


def make_tickets(n: int, seed: int = 1) -> list[Json]:
    rng = random.Random(f"{seed}:sla-tickets")
    year = datetime(2026, 1, 1, tzinfo=UTC)
    tickets: list[Json] = []
    for _ in range(n):
        segments = [s for s in SEGMENTS if rng.random() < _SEGMENT_SHARE.get(s, 0.2)]
        tickets.append(
            {
                "priority": rng.choices(PRIORITIES, weights=[2, 5, 2, 1])[0],
                "channel": rng.choice(CHANNELS),
                "tags": rng.sample(TAGS, rng.choice([0, 1, 1, 2])),
                "created_at": year + timedelta(minutes=rng.randrange(365 * 24 * 60)),
                "segments": frozenset(segments),
            }
        )
    return tickets


def naive_select(policies: Sequence[Json], ticket: Json) -> str | None:
    """The peer: the policy JSON read as it is, for every ticket."""
    segments = ticket["segments"]
    for policy in policies:
        c = policy.get("conditions", {})
        if c.get("priority") and ticket["priority"] not in c["priority"]:
            continue
        if c.get("channel") and ticket["channel"] not in c["channel"]:
            continue
        if c.get("tags") and not any(t in ticket["tags"] for t in c["tags"]):
            continue
        if c.get("segments_any") and not any(s in segments for s in c["segments_any"]):
            continue
        if c.get("segments_all") and not all(s in segments for s in c["segments_all"]):
            continue
        if c.get("segments_none") and any(s in segments for s in c["segments_none"]):
            continue
        return str(policy["key"])
    return None


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}/s ({seconds * 1e6 / n:.2f} us each)"


def bench_in_process(n_tickets: int) -> int:
    import businesstimedelta as btd
    import pytz

    from segmentflow.policies.calendar import BusinessHours, add_business_time
    from segmentflow.policies.sla import TicketFacts, parse_policies, select_and_schedule, select_policy

    raw = make_policies()
    policies = parse_policies(raw)
    tickets = make_tickets(n_tickets)
    facts = [
        TicketFacts(
            priority=t["priority"],
            channel=t["channel"],
            tags=frozenset(t["tags"]),
            created_at=t["created_at"],
        )
        for t in tickets
    ]
    print(f"in process: {n_tickets:,} tickets, {len(policies)} policies")

    t0 = time.perf_counter()
    ours = [
        select_policy(policies, segments=t["segments"], priority=f.priority, channel=f.channel, tags=f.tags)
        for t, f in zip(tickets, facts, strict=True)
    ]
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = [naive_select(raw, t) for t in tickets]
    naive_s = time.perf_counter() - t0
    ours_keys = [None if p is None else p.key for p in ours]
    wrong = sum(a != b for a, b in zip(ours_keys, theirs, strict=True))
    chosen = {k: ours_keys.count(k) for k in dict.fromkeys(ours_keys)}
    print(f"  select_policy           {rate(n_tickets, ours_s)}")
    print(
        f"  naive JSON peer         {rate(n_tickets, naive_s)}  -> ours {naive_s / ours_s:.1f}x; "
        f"{wrong} answers differ"
    )
    print(f"  policies chosen: {chosen}")

    t0 = time.perf_counter()
    dues = 0
    for t, f in zip(tickets, facts, strict=True):
        dues += len(select_and_schedule(policies, f, t["segments"]).targets)
    sched_s = time.perf_counter() - t0
    print(
        f"  select_and_schedule     {rate(n_tickets, sched_s)} ({dues:,} due + warning times, business hours)"
    )

    # Business-hours due times alone, against businesstimedelta on the same starts and durations.
    rng = random.Random("sla-due")
    calendar = BusinessHours.model_validate(_office("Europe/Berlin", BERLIN_HOLIDAYS))
    tz = pytz.timezone("Europe/Berlin")
    rules = btd.Rules(
        [
            btd.WorkDayRule(
                start_time=datetime.min.time().replace(hour=9),
                end_time=datetime.min.time().replace(hour=17),
                working_days=[0, 1, 2, 3, 4],
                tz=tz,
            ),
            btd.HolidayRule([date.fromisoformat(d) for d in BERLIN_HOLIDAYS], tz=tz),
        ]
    )
    cases = [
        (tickets[i]["created_at"], timedelta(minutes=rng.choice([30, 60, 120, 240, 480, 960, 2400])))
        for i in range(min(n_tickets, 20_000))
    ]
    t0 = time.perf_counter()
    mine = [add_business_time(calendar, start, d) for start, d in cases]
    mine_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib = [
        (start.astimezone(tz) + btd.BusinessTimeDelta(rules, seconds=int(d.total_seconds()))).astimezone(UTC)
        for start, d in cases
    ]
    lib_s = time.perf_counter() - t0
    disagree = [(c, a, b) for c, a, b in zip(cases, mine, lib, strict=True) if a != b]
    print(f"  add_business_time       {rate(len(cases), mine_s)}")
    print(
        f"  businesstimedelta       {rate(len(cases), lib_s)}  -> ours {lib_s / mine_s:.1f}x; "
        f"{len(disagree)} of {len(cases)} answers differ"
    )
    for (start, d), a, b in disagree[:3]:
        print(
            f"    e.g. {start.astimezone(tz)} + {d}: ours {a.astimezone(tz)}, "
            f"businesstimedelta {b.astimezone(tz)}"
        )
    return 1 if wrong else 0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (None: this one)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


async def bench_workflows(n: int, due_s: int, database_url: str | None, dynamic_config: Sequence[str]) -> int:
    import sqlalchemy as sa
    from segmentflow.workflows.sla import TicketSla
    from segmentflow.workflows.sla_models import SlaTicket, TicketChange, TicketSlaInput, ticket_workflow_id
    from sqlmodel import Session
    from temporalio.worker import Worker

    from segmentflow.db.engine import make_engine, migrate
    from segmentflow.db.tables import sla_event_table
    from segmentflow.policies.sla import parse_policies
    from segmentflow.services.sla import import_policies

    tmp = tempfile.TemporaryDirectory()
    url = database_url or f"sqlite:///{tmp.name}/sla.db"
    engine = make_engine(url)
    migrate(engine)
    policy = {
        "key": "bench",
        "targets": {"normal": {"first_reply": f"PT{due_s // 60}M", "resolution": "PT24H"}},
        "calendar": "24/7",
    }
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(sla_event_table))
        import_policies(session=session, policies=parse_policies([policy]), now=datetime.now(UTC))
    print(
        f"peer, dev server: {n:,} TicketSla workflows on per-ticket timers, first reply due {due_s} s after "
        "creation (warning at 80%), "
        f"{engine.dialect.name}; dynamic config {list(dynamic_config) or 'as worker.py --dev'}"
    )
    env = await _dev_server(engine, dynamic_config)
    status = 0
    try:
        queue = f"bench-sla-{uuid.uuid4()}"
        run = uuid.uuid4().hex[:6]
        async with Worker(env.client, task_queue=queue, max_cached_workflows=max(1000, n)):
            rss_before = _rss_kib(os.getpid())
            servers = _temporal_servers()
            cpu_before = (_cpu_s(None), sum(_cpu_s(p) for p in servers))
            t0 = time.perf_counter()
            handles = []
            for chunk in range(0, n, 200):
                handles += await asyncio.gather(
                    *(
                        env.client.start_workflow(
                            TicketSla.run,
                            TicketSlaInput(
                                ticket_id=f"{run}-{i}",
                                ticket=SlaTicket(priority="normal", created_at=datetime.now(UTC)),
                                timers="workflow",
                            ),
                            id=ticket_workflow_id(f"{run}-{i}"),
                            task_queue=queue,
                        )
                        for i in range(chunk, min(n, chunk + 200))
                    )
                )
            started_s = time.perf_counter() - t0
            print(f"  started {n:,} in {started_s:.1f} s ({n / started_s:,.0f}/s)")
            count = await _events_recorded(engine, 2 * n, within_s=due_s + 600)
            wall = time.perf_counter() - t0
            cpu_worker = _cpu_s(None) - cpu_before[0]
            cpu_server = sum(_cpu_s(p) for p in servers) - cpu_before[1]
            print(
                f"  CPU from the first start to the last event ({wall:.0f} s wall): worker process "
                f"{cpu_worker:.0f} s, dev server {cpu_server:.0f} s (2 cores, shared)"
            )
            rss_worker = _rss_kib(os.getpid())
            rss_server = sum(_rss_kib(p) for p in servers)
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(sla_event_table.c.kind, sla_event_table.c.due_at, sla_event_table.c.fired_at)
                ).all()
            warn_after = timedelta(seconds=due_s * 0.8)
            late: dict[str, list[float]] = {"warning": [], "breach": []}
            for kind, due_at, fired_at in rows:
                moment = due_at - (timedelta(seconds=due_s) - warn_after) if kind == "warning" else due_at
                late[kind].append((fired_at - moment).total_seconds() * 1000)
            _print_lateness(late)
            if count < 2 * n:
                print(f"  MISSING: {2 * n - count} events never fired")
                status = 1
            print(
                f"  memory with {n:,} open workflows: worker process RSS {rss_worker / 1024:.0f} MiB "
                f"(+{(rss_worker - rss_before) / 1024:.0f} MiB), dev server RSS {rss_server / 1024:.0f} MiB"
            )
            t0 = time.perf_counter()
            for chunk in range(0, n, 200):
                await asyncio.gather(
                    *(
                        h.signal(TicketSla.change_signal, TicketChange(status="solved"))
                        for h in handles[chunk : chunk + 200]
                    )
                )
            # Results are read a few at a time: thousands of long polls exceed the server's poller limit.
            results = []
            for chunk in range(0, n, 50):
                results += await asyncio.gather(*(h.result() for h in handles[chunk : chunk + 50]))
            seen = {tuple(r.events) for r in results}
            print(
                f"  solved and finished all in {time.perf_counter() - t0:.1f} s; events per workflow: {seen}"
            )
    finally:
        await env.shutdown()
        engine.dispose()
        tmp.cleanup()
    return status


async def bench_table_timers(
    n: int, due_s: int, database_url: str | None, dynamic_config: Sequence[str]
) -> int:
    import sqlalchemy as sa
    from segmentflow.plugins import ensure_sla_firers
    from sqlmodel import Session
    from temporalio.worker import Worker

    from segmentflow.db.engine import make_engine, migrate
    from segmentflow.db.tables import sla_event_table, sla_timer_table
    from segmentflow.policies.sla import TicketFacts, parse_policies
    from segmentflow.services.sla import import_policies, plan_ticket

    tmp = tempfile.TemporaryDirectory()
    url = database_url or f"sqlite:///{tmp.name}/sla-timers.db"
    engine = make_engine(url)
    migrate(engine)
    policy = {
        "key": "bench",
        "targets": {"normal": {"first_reply": f"PT{due_s // 60}M", "resolution": "PT24H"}},
        "calendar": "24/7",
    }
    with Session(engine) as session, session.begin():
        for table in (sla_event_table, sla_timer_table):
            session.execute(sa.delete(table))
        import_policies(session=session, policies=parse_policies([policy]), now=datetime.now(UTC))
    print(
        f"table timers, dev server: {n:,} open tickets written by plan_ticket(timers=True), created over one "
        f"minute, first reply due {due_s} s after creation (warning at 80%), {engine.dialect.name}; "
        f"2 FireSlaTimers firers; dynamic config {list(dynamic_config) or 'as worker.py --dev'}"
    )
    env = await _dev_server(engine, dynamic_config)
    status = 0
    try:
        queue = f"bench-sla-timers-{uuid.uuid4()}"
        run = uuid.uuid4().hex[:6]
        async with Worker(env.client, task_queue=queue):
            servers = _temporal_servers()
            cpu_before = (_cpu_s(None), sum(_cpu_s(p) for p in servers))
            await ensure_sla_firers(
                env.client, task_queue=queue, shards=2, poll_interval=timedelta(seconds=5)
            )
            t0 = time.perf_counter()
            base = datetime.now(UTC)

            def write(start: int, stop: int) -> None:
                with Session(engine) as session, session.begin():
                    for i in range(start, stop):
                        created = base + timedelta(seconds=60 * i / n)
                        plan_ticket(
                            session=session,
                            ticket_id=f"{run}-{i}",
                            workflow_id="",
                            contact_key=None,
                            ticket=TicketFacts(
                                priority="normal", channel=None, tags=frozenset(), created_at=created
                            ),
                            status="open",
                            starts={"first_reply": created, "resolution": created},
                            pauses=[],
                            now=base,
                            timers=True,
                        )

            for chunk in range(0, n, 500):
                await asyncio.to_thread(write, chunk, min(n, chunk + 500))
            written_s = time.perf_counter() - t0
            print(f"  wrote {n:,} tickets (4 timers each) in {written_s:.1f} s ({n / written_s:,.0f}/s)")
            first_due = base + timedelta(seconds=due_s * 0.8)
            print(f"  first warning due {(first_due - datetime.now(UTC)).total_seconds():.0f} s from now")
            count = await _events_recorded(engine, 2 * n, within_s=due_s + 60 + 300)
            wall = time.perf_counter() - t0
            cpu_worker = _cpu_s(None) - cpu_before[0]
            cpu_server = sum(_cpu_s(p) for p in servers) - cpu_before[1]
            print(
                f"  CPU from the first ticket to the last event ({wall:.0f} s wall): worker process "
                f"{cpu_worker:.0f} s, dev server {cpu_server:.0f} s (2 cores, shared)"
            )
            with engine.connect() as conn:
                e = sla_event_table.c
                rows = conn.execute(sa.select(e.ticket_id, e.metric, e.kind, e.due_at, e.fired_at)).all()
            keys = [(t, m, k) for t, m, k, _, _ in rows]
            warn_before = timedelta(seconds=due_s * 0.2)
            late: dict[str, list[float]] = {"warning": [], "breach": []}
            for _, _, kind, due_at, fired_at in rows:
                moment = due_at - warn_before if kind == "warning" else due_at
                late[kind].append((fired_at - moment).total_seconds() * 1000)
            dues = sorted(due_at for _, _, kind, due_at, _ in rows if kind == "breach")
            if dues:
                print(f"  first-reply breaches due within {(dues[-1] - dues[0]).total_seconds():.0f} s")
            _print_lateness(late)
            every = [*late["warning"], *late["breach"]]
            if every:
                print(
                    f"  all timers: p50 {percentile(every, 0.5):.0f} ms, p99 {percentile(every, 0.99):.0f} ms"
                )
            if len(keys) != len(set(keys)):
                print(f"  DUPLICATES: {len(keys) - len(set(keys))} timers fired twice")
                status = 1
            if count < 2 * n:
                print(f"  MISSING: {2 * n - count} first-reply events never fired")
                status = 1
    finally:
        await env.shutdown()
        engine.dispose()
        tmp.cleanup()
    return status


async def _dev_server(engine: Engine, dynamic_config: Sequence[str]) -> WorkflowEnvironment:
    """The dev server from PyPI with the plugin on its client, configured as `worker.py --dev`."""
    from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, temporal_cli_path
    from temporalio.testing import WorkflowEnvironment

    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        dev_server_extra_args=[
            *DEV_SERVER_ARGS,
            *(a for v in dynamic_config for a in ("--dynamic-config-value", v)),
        ],
        dev_server_log_level="error",
        plugins=[SegmentsPlugin(engine=engine)],
    )


def _temporal_servers() -> list[int]:
    """The pids of this process's Temporal server children (their CPU and memory are reported)."""
    return [
        p
        for p in _children(os.getpid())
        if "temporal" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
    ]


async def _events_recorded(engine: Engine, want: int, *, within_s: float) -> int:
    """The count of `sla_event` rows once it reaches `want`, or when `within_s` seconds have passed."""
    import sqlalchemy as sa

    from segmentflow.db.tables import sla_event_table

    deadline = time.monotonic() + within_s
    count = 0
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            count = conn.scalar(sa.select(sa.func.count()).select_from(sla_event_table)) or 0
        if count >= want:
            break
        await asyncio.sleep(1)
    return count


def _print_lateness(late: dict[str, list[float]]) -> None:
    for kind, ms in late.items():
        if ms:
            print(
                f"  {kind:8s} timers: {len(ms):,} fired; lateness p50 {percentile(ms, 0.5):.0f} ms, "
                f"p99 {percentile(ms, 0.99):.0f} ms, max {max(ms):.0f} ms, "
                f"mean {statistics.fmean(ms):.0f} ms"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--timer-tickets", type=int, default=10_000)
    parser.add_argument(
        "--timer-due",
        type=int,
        default=180,
        help="Seconds (whole minutes) from creation to the first-reply due time.",
    )
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument(
        "--due", type=int, default=120, help="Seconds from creation to the first-reply due time."
    )
    parser.add_argument("--skip-temporal", action="store_true")
    parser.add_argument("--database-url", default=None, help="Default: SQLite in a temporary directory.")
    parser.add_argument(
        "--dynamic-config", action="append", default=[], help="KEY=VALUE for the dev server, repeatable."
    )
    args = parser.parse_args(argv)
    status = bench_in_process(args.tickets)
    if not args.skip_temporal:
        status |= asyncio.run(
            bench_table_timers(args.timer_tickets, args.timer_due, args.database_url, args.dynamic_config)
        )
        status |= asyncio.run(
            bench_workflows(args.workflows, args.due, args.database_url, args.dynamic_config)
        )
    print(f"load average {os.getloadavg()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
