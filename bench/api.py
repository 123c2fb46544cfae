"""Benchmark: membership checks over HTTP on loopback, against the same check done in process.

Per database (a scratch SQLite file, and a scratch PostgreSQL database unless --skip-postgres): the seeded
workload of bench/common.py (--contacts contexts, --segments segments) is stored and recomputed, and an API
key with `segments:read` is created. Then:
- in process: `check_membership` through the service, one session and transaction per check, as the
  endpoint runs it minus HTTP and the key lookup;
- over loopback, one connection: `segmentflow serve` (uvicorn, one process) in a subprocess, this process
  sending one request at a time on a keep-alive connection (unloaded latency);
- over loopback, --concurrency connections sending at once (throughput under load).
The load comes from asyncio streams with the HTTP/1.1 requests prepared up front: an HTTP client library
would spend more CPU per request than the server does, on the same two cores. Each run stops after
--seconds or --requests checks; every answer is compared with the in-process one. Random (segment,
contact) pairs, the same list for every run. Prints throughput, p50 and p99 and the in-process/HTTP ratio;
asserts nothing about speed. Target (issue 15): on PostgreSQL 1,500 checks/s with p99 under 20 ms at 8
connections on these 2 cores, and at least 0.8x the SQLite figure of the same run (printed last, with the
load average).

Usage: .venv/bin/python bench/api.py [--contacts 20000] [--segments 30] [--concurrency 8] [--seconds 10]
       [--requests 20000] [--skip-postgres] [--postgres-admin-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from common import free_port, make_contexts, make_segments, percentile, scratch_postgres
from sqlmodel import Session

from segmentflow.db.engine import make_engine, migrate
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.keys import create_key
from segmentflow.services.membership import check_membership, recompute_all
from segmentflow.services.segment_admin import import_segments

Pair = tuple[str, str]  # (segment key, contact key)


def report(label: str, latencies: list[float], elapsed: float) -> float:
    rate = len(latencies) / elapsed
    print(
        f"  {label:<44} {len(latencies):>7} checks in {elapsed:6.2f} s  {rate:8.0f} checks/s  "
        f"p50 {percentile(latencies, 0.5) * 1000:6.2f} ms  p99 {percentile(latencies, 0.99) * 1000:6.2f} ms"
    )
    return rate


def seed(url: str, args: argparse.Namespace) -> tuple[str, list[Pair], dict[Pair, bool]]:
    """Store and recompute the workload; an API key, the check pairs and their in-process answers."""
    engine = make_engine(url)
    try:
        migrate(engine)
        now = datetime.now(UTC)
        contexts = [parse_context(c) for c in make_contexts(args.contacts, args.seed)]
        segments = parse_segments(make_segments(args.segments, args.seed))
        with Session(engine) as session, session.begin():
            import_segments(recompute=False, session=session, segments=segments, now=now)
            upsert_contacts(session=session, contexts=contexts, now=now)
            _, token = create_key(session=session, scopes=["segments:read"], name="bench", now=now)
        recompute_all(engine)
        rng = random.Random(f"{args.seed}:pairs")
        keys = [s.key for s in segments]
        pairs = [(rng.choice(keys), rng.choice(contexts).fully_qualified_key) for _ in range(args.pairs)]
        expected: dict[Pair, bool] = {}
        with Session(engine) as session:
            for pair in set(pairs):
                expected[pair] = check_membership(
                    session=session, segment_ref=pair[0], contact_key=pair[1]
                ).is_member
        return token, pairs, expected
    finally:
        engine.dispose()


def in_process(url: str, pairs: list[Pair], args: argparse.Namespace) -> float:
    engine = make_engine(url)
    latencies: list[float] = []
    try:
        start = time.perf_counter()
        for i in range(min(args.requests, len(pairs) * 4)):
            segment, contact = pairs[i % len(pairs)]
            t0 = time.perf_counter()
            with Session(engine) as session, session.begin():
                check_membership(session=session, segment_ref=segment, contact_key=contact)
            latencies.append(time.perf_counter() - t0)
            if time.perf_counter() - start > args.seconds:
                break
        return report("in process (service, 1 thread)", latencies, time.perf_counter() - start)
    finally:
        engine.dispose()


# The peer server: the same app with the membership check left to its FastAPI route (`fast_check=False`),
# which is how every check was served before the fast path; uvicorn run as `segmentflow serve` runs it.
_ROUTED_SERVER = """
import sys, uvicorn
from segmentflow.api import create_app
from segmentflow.settings import Settings
app = create_app(Settings(database_url=sys.argv[1]), fast_check=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=False)
"""


@contextmanager
def server(url: str, *, fast_check: bool = True) -> Iterator[tuple[int, int]]:
    """`segmentflow serve` in its own process (or the routed-only peer); its port and pid once /healthz
    answers."""
    port = free_port()
    command = (
        [sys.executable, "-m", "segmentflow.cli", "--database-url", url, "serve", "--port", str(port)]
        if fast_check
        else [sys.executable, "-c", _ROUTED_SERVER, url, str(port)]
    )
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"the server exited: {process.stderr.read().decode() if process.stderr else ''}"
                )
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server did not come up in 60 s")
            time.sleep(0.1)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def _client(
    port: int, requests: list[bytes], expected: list[bool], order: range, stop_at: float, out: _Results
) -> None:
    """One keep-alive connection sending the requests of `order` one after another; it stops at `stop_at`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in order:
            i = n % len(requests)
            t0 = time.perf_counter()
            writer.write(requests[i])
            status = int((await reader.readline()).split(b" ", 2)[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            out.latencies.append(time.perf_counter() - t0)
            if status != 200 or json.loads(body)["isMember"] is not expected[i]:
                out.wrong.append(f"{requests[i].split(b' ')[1].decode()}: {status} {body[:200]!r}")
            if t0 > stop_at:
                return
    finally:
        writer.close()


@dataclass
class _Results:
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def over_http(
    port: int,
    token: str,
    pairs: list[Pair],
    expected: dict[Pair, bool],
    args: argparse.Namespace,
    clients: int,
    label: str = "",
    *,
    pid: int | None = None,
) -> float:
    """`clients` concurrent keep-alive connections from one asyncio loop, each waiting for its answer before
    sending the next request (HTTP/1.1 requests prepared up front, so the client spends little CPU)."""
    requests = [
        (
            f"GET /contacts/segments/{quote(s, safe='')}/contacts/{quote(c, safe='')} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        for s, c in pairs
    ]
    answers = [expected[p] for p in pairs]
    out = _Results()
    budget = args.requests // clients

    async def run() -> float:
        warm = _Results()
        await asyncio.gather(
            *(_client(port, requests, answers, range(w, w + 1), 0, warm) for w in range(clients))
        )
        start = time.perf_counter()
        stop_at = start + args.seconds
        await asyncio.gather(
            *(
                _client(port, requests, answers, range(w, w + budget * clients, clients), stop_at, out)
                for w in range(clients)
            )
        )
        return time.perf_counter() - start

    cpu, server_cpu = time.process_time(), _cpu_seconds(pid)
    elapsed = asyncio.run(run())
    cpu, server_cpu = time.process_time() - cpu, _cpu_seconds(pid) - server_cpu
    if out.wrong:
        print(f"  WRONG ANSWERS: {len(out.wrong)}, first: {out.wrong[0]}")
    label = f"{label or 'HTTP loopback'} ({clients} connection{'s' if clients > 1 else ''})"
    rate = report(label, out.latencies, elapsed)
    if pid is not None:
        print(
            f"    CPU, share of one core: load generator {cpu / elapsed:.0%}, "
            f"server {server_cpu / elapsed:.0%} (the rest of the 2 cores: the database, other users)"
        )
    return rate


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc), 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_database(name: str, url: str, args: argparse.Namespace) -> float:
    print(f"\n{name}: {args.contacts} contacts, {args.segments} segments, {args.pairs} distinct check pairs")
    token, pairs, expected = seed(url, args)
    print(f"  members among the pairs: {sum(expected.values())}/{len(expected)}")
    local = in_process(url, pairs, args)
    with server(url) as (port, pid):
        over_http(port, token, pairs, expected, args, 1)
        loaded = over_http(port, token, pairs, expected, args, args.concurrency, pid=pid)
    with server(url, fast_check=False) as (port, pid):
        routed = over_http(
            port, token, pairs, expected, args, args.concurrency, "peer: routed, no fast path", pid=pid
        )
    print(f"  in-process / HTTP throughput ratio: {local / loaded:.1f}x")
    print(f"  fast path / routed peer at {args.concurrency} connections: {loaded / routed:.2f}x")
    print(f"  load average: {_load()}")
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segmentflow membership checks over HTTP vs in process")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--segments", type=int, default=30)
    parser.add_argument("--pairs", type=int, default=5000, help="distinct (segment, contact) pairs to check")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads for the loaded run")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit of each run")
    parser.add_argument("--requests", type=int, default=20_000, help="request limit of each run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    print(f"load average at start: {_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = run_database("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args)
    if not args.skip_postgres:
        with scratch_postgres(args.postgres_admin_url) as url:
            postgres = run_database("PostgreSQL", url, args)
        print(
            f"\nPostgreSQL / SQLite at {args.concurrency} connections: {postgres / sqlite:.2f}x "
            f"(target >= 0.8x, and >= 1,500 checks/s with p99 < 20 ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
