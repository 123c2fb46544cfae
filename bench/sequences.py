"""Benchmark: one outbound-sequence send to every member, end to end through Temporal, against one workflow
per contact, in the same session on the same dev server.

Setup: a fresh SQLite database (temp file) with one segment and --contacts members, and a local webhook
provider in its own process (uvicorn, raw ASGI) that counts requests, distinct `Idempotency-Key`s and
distinct (contactKey, step) pairs. Rate limit off. With --postgres-admin-url the same two measurements
run again on a scratch PostgreSQL database (own provider and dev server) in the same run, and a summary
prints both (--postgres-only skips SQLite).

1. segmentflow: `sequences import` + `launch` (enrolls every member; timed apart), then the runner
   workflow `segmentflow.RunSequence` (batches of --batch-size, --concurrency provider calls in flight)
   from start until every enrollment has completed.
2. Baseline: `bench.SendOne`, one workflow per contact, each running one activity that does what a
   per-contact tool does (read the contact, render the template, write the send row, POST with the same
   idempotency key, mark it sent), for --baseline contacts (a sample: ~40 ms of server CPU per workflow
   on this machine makes all 10,000 slow), started together, from the first start to the last result.

Prints sends/s of each, the ratio, and duplicates (requests repeating a key; pairs received twice under
different keys). Targets from the issue: >= 1,000 sends/s, >= 40x the baseline, zero duplicates.
Exit status 1 on any duplicate or missing send; speed is printed, never asserted. The runner's end is
found by polling the enrollments in a thread (the worker shares this process's event loop).

Usage: .venv/bin/python bench/sequences.py [--contacts 10000] [--baseline 500] [--batch-size 1000]
       [--concurrency 64] [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]
       [--postgres-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import httpx
    import sqlalchemy as sa
    from common import free_port, scratch_postgres
    from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, start_sequence_runner, temporal_cli_path
    from segmentflow.workflows.sequence_models import RunSequenceInput
    from sqlalchemy.engine import Engine
    from sqlmodel import Session
    from temporalio.client import Client
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from segmentflow.db.engine import make_engine, migrate
    from segmentflow.db.tables import contact_table, enrollment_table, send_table, sequence_table
    from segmentflow.policies.sequences import parse_sequences
    from segmentflow.rules import parse_context, parse_segments
    from segmentflow.services.membership import upsert_and_recompute
    from segmentflow.services.segment_admin import import_segments
    from segmentflow.services.segments import load_index
    from segmentflow.services.sequences import import_sequences, launch_sequence
    from segmentflow.services.templates import compile_template, render_template
    from segmentflow.settings import Settings

TEMPLATE = "Welcome, {{ contact.name }}!"


# ---- the provider: its own process, so it does not share the worker's GIL ------------------------------


def run_sink(port: int) -> None:
    import uvicorn

    requests = 0
    keys: set[str] = set()
    pairs: dict[tuple[str, str, int], int] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal requests
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            requests += 1
            key = dict(scope["headers"]).get(b"idempotency-key", b"").decode()
            if key not in keys:  # deliver once per key, as real providers do
                keys.add(key)
                data = json.loads(body)
                pair = (data["sequence"], data["contactKey"], data["step"])
                pairs[pair] = pairs.get(pair, 0) + 1
            payload = b"{}"
        else:
            payload = json.dumps(
                {
                    "requests": requests,
                    "keys": len(keys),
                    "pairs": len(pairs),
                    "pairs_twice": sum(1 for n in pairs.values() if n > 1),
                }
            ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def sink_stats(url: str) -> dict[str, int]:
    return dict(httpx.get(url + "/stats").json())


# ---- the baseline: one workflow per contact ---------------------------------------------------------------


class BaselineActivities:
    """What one-workflow-per-contact tools do per contact, with the same tables and the same exactly-once
    discipline (send row committed before the call, same key on retry)."""

    def __init__(self, engine: Engine, url: str) -> None:
        self._engine = engine
        self._url = url
        self._template = compile_template(TEMPLATE)
        self._client: httpx.AsyncClient | None = None

    def _prepare(self, enrollment_id: int) -> tuple[str, str, str]:
        e, c, s = enrollment_table, contact_table, send_table
        with Session(self._engine) as session, session.begin():
            row = session.execute(
                sa.select(e.c.id, e.c.sequence_id, e.c.contact_id, c.c.key, c.c.context)
                .join(c, c.c.id == e.c.contact_id)
                .where(e.c.id == enrollment_id)
            ).one()
            key = f"bl-{row.sequence_id.hex}-{row.id}-0"
            existing = session.scalar(sa.select(s.c.body).where(s.c.idempotency_key == key))
            if existing is not None:
                return key, row.key, existing
            body = render_template(self._template, contact=row.context, segments=["everyone"])
            session.execute(
                s.insert().values(
                    enrollment_id=row.id,
                    step=0,
                    sequence_id=row.sequence_id,
                    contact_id=row.contact_id,
                    channel="webhook",
                    idempotency_key=key,
                    body=body,
                    status="pending",
                    attempts=0,
                    created_at=datetime.now(UTC),
                )
            )
            return key, row.key, body

    def _finish(self, enrollment_id: int, key: str) -> None:
        now = datetime.now(UTC)
        with Session(self._engine) as session, session.begin():
            session.execute(
                send_table.update()
                .where(send_table.c.idempotency_key == key)
                .values(status="sent", sent_at=now)
            )
            session.execute(
                enrollment_table.update()
                .where(enrollment_table.c.id == enrollment_id)
                .values(status="completed", position=None, next_due_at=None, finished_at=now)
            )

    @activity.defn(name="bench.SendOne")
    async def send_one(self, enrollment_id: int) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=64))
        key, contact_key, body = await asyncio.to_thread(self._prepare, enrollment_id)
        payload = {"contactKey": contact_key, "sequence": "baseline", "step": 0, "body": body}
        response = await self._client.post(self._url, json=payload, headers={"Idempotency-Key": key})
        response.raise_for_status()
        await asyncio.to_thread(self._finish, enrollment_id, key)


@workflow.defn(name="bench.SendOne")
class SendOne:
    @workflow.run
    async def run(self, enrollment_id: int) -> None:
        await workflow.execute_activity(
            "bench.SendOne", enrollment_id, start_to_close_timeout=timedelta(minutes=5)
        )


# ---- setup and runs ---------------------------------------------------------------------------------------


def load(engine: Engine, contacts: int) -> None:
    migrate(engine)
    segment = {
        "key": "everyone",
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}],
    }
    contexts = [
        parse_context({"kind": "user", "key": f"u{i:06d}", "name": f"User {i}", "plan": "vip"})
        for i in range(contacts)
    ]
    with Session(engine) as session, session.begin():
        import_segments(
            recompute=False, session=session, segments=parse_segments([segment]), now=datetime.now(UTC)
        )
    with Session(engine) as session, session.begin():
        upsert_and_recompute(session=session, contexts=contexts, index=load_index(session=session))


def save_and_launch(engine: Engine, key: str, url: str) -> tuple[int, float]:
    definition = {
        "key": key,
        "name": key,
        "segment": "everyone",
        "steps": [{"type": "send", "channel": "webhook", "url": url, "template": TEMPLATE}],
    }
    start = time.perf_counter()
    with Session(engine) as session, session.begin():
        now = datetime.now(UTC)
        import_sequences(session=session, sequences=parse_sequences(definition), now=now)
        enrolled = launch_sequence(session=session, key=key, now=now).enrolled
    return enrolled, time.perf_counter() - start


def active_enrollments(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(enrollment_table)
                .where(enrollment_table.c.status == "active")
            )
            or 0
        )


async def run_sequence(
    client: Client, engine: Engine, url: str, queue: str, args: argparse.Namespace
) -> float:
    enrolled, launch_s = save_and_launch(engine, "bench-welcome", url + "/hook")
    print(f"segmentflow: launched, {enrolled} enrolled in {launch_s:.2f} s")
    start = time.perf_counter()
    handle = await start_sequence_runner(
        client,
        sequence_key="bench-welcome",
        task_queue=queue,
        params=RunSequenceInput(
            sequence_key="bench-welcome", batch_size=args.batch_size, concurrency=args.concurrency
        ),
    )
    # Polled in a thread: a query on the event loop would stall the worker's sends it shares the loop with.
    while await asyncio.to_thread(active_enrollments, engine):
        await asyncio.sleep(0.02)
    seconds = time.perf_counter() - start
    await handle.terminate("bench done")
    return seconds


async def run_baseline(client: Client, engine: Engine, queue: str, sample: int) -> float:
    with engine.connect() as conn:
        ids = [
            int(i)
            for i in conn.scalars(
                sa.select(enrollment_table.c.id)
                .where(enrollment_table.c.status == "active")
                .order_by(enrollment_table.c.id)
                .limit(sample)
            )
        ]
    start = time.perf_counter()
    handles = await asyncio.gather(
        *(
            client.start_workflow(SendOne.run, i, id=f"bench-send-{uuid.uuid4()}", task_queue=queue)
            for i in ids
        )
    )
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - start


async def measure(args: argparse.Namespace, database: str) -> tuple[float, float, bool]:
    """One database's run: the runner and the baseline on their own provider, dev server and database.
    Returns (runner sends/s, baseline sends/s, whether every send arrived exactly once)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sink = subprocess.Popen([sys.executable, __file__, "--sink", str(port)])
    with contextlib.ExitStack() as stack:
        if database == "postgresql":
            engine = make_engine(stack.enter_context(scratch_postgres(args.postgres_admin_url)))
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        print(f"== database: {engine.dialect.name}")
        try:
            for _ in range(200):
                try:
                    sink_stats(url)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            load(engine, args.contacts)
            print(f"{args.contacts} contacts, one segment with all of them; provider at {url} (own process)")
            env = await WorkflowEnvironment.start_local(
                dev_server_existing_path=temporal_cli_path(),
                dev_server_extra_args=DEV_SERVER_ARGS,
                dev_server_log_level="error",
                # The provider is a local process on loopback, which the egress policy refuses unless allowed.
                plugins=[SegmentsPlugin(engine=engine, settings=Settings(egress_allow="127.0.0.1/32"))],
            )
            try:
                queue = f"bench-{uuid.uuid4()}"
                baseline = BaselineActivities(engine, url + "/baseline")
                async with Worker(
                    env.client,
                    task_queue=queue,
                    workflows=[SendOne],
                    activities=[baseline.send_one],
                    max_concurrent_activities=args.concurrency,
                ):
                    seq_s = await run_sequence(env.client, engine, url, queue, args)
                    after_seq = sink_stats(url)
                    # The baseline's contacts: a second sequence enrolls every member again.
                    save_and_launch(engine, "bench-baseline", url + "/baseline")
                    with Session(engine) as session, session.begin():  # never run by a runner
                        session.execute(
                            sequence_table.update()
                            .where(sequence_table.c.key == "bench-baseline")
                            .values(status="paused")
                        )
                    base_s = await run_baseline(env.client, engine, queue, args.baseline)
                if baseline._client is not None:
                    await baseline._client.aclose()
            finally:
                await env.shutdown()
            total = sink_stats(url)
        finally:
            engine.dispose()
            sink.terminate()
            sink.wait()

    seq_rate = args.contacts / seq_s
    base_rate = args.baseline / base_s
    repeats = total["requests"] - total["keys"]
    print(f"segmentflow runner: {args.contacts} sends in {seq_s:.2f} s = {seq_rate:,.0f} sends/s")
    print(
        f"baseline, one workflow per contact: {args.baseline} sends in {base_s:.2f} s "
        f"= {base_rate:,.0f} sends/s"
    )
    print(f"ratio: {seq_rate / base_rate:.1f}x (target >= 40x; target >= 1,000 sends/s)")
    print(
        f"provider: {total['requests']} requests, {total['keys']} distinct keys, {total['pairs']} distinct "
        f"(contact, step) pairs; repeated keys {repeats}, pairs received twice {total['pairs_twice']}"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    expected_pairs = args.contacts + args.baseline
    bad = after_seq["keys"] != args.contacts or after_seq["pairs"] != args.contacts or total["pairs_twice"]
    exact = not (bad or repeats or total["keys"] != expected_pairs)
    print("zero duplicates, none missing" if exact else "FAIL: duplicates or missing sends")
    return seq_rate, base_rate, exact


async def main_async(args: argparse.Namespace) -> int:
    databases = ["sqlite"] + (["postgresql"] if args.postgres_admin_url else [])
    if args.postgres_admin_url and args.postgres_only:
        databases = ["postgresql"]
    results = {database: await measure(args, database) for database in databases}
    print("== summary")
    for database, (seq_rate, base_rate, exact) in results.items():
        print(
            f"{database}: runner {seq_rate:,.0f} sends/s, baseline {base_rate:,.1f} sends/s, "
            f"{seq_rate / base_rate:.1f}x, {'exactly once' if exact else 'FAIL'}"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if all(exact for _, _, exact in results.values()) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--sink"]:
        run_sink(int(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--postgres-admin-url",
        help="also run on a scratch database of this PostgreSQL server (after SQLite, in the same run)",
    )
    parser.add_argument(
        "--postgres-only", action="store_true", help="with --postgres-admin-url: skip the SQLite run"
    )
    os.environ.setdefault("PYTHONHASHSEED", "0")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
