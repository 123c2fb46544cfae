"""Benchmark: how long the operator console takes to render each page, against the HTTP API's JSON for the
same data measured in the same run.

On a scratch PostgreSQL database (and a scratch SQLite file with --sqlite) the seeded workload of
bench/common.py (--contacts contexts, --segments segments) is stored and recomputed, and a sequence and
two SLA policies are imported. Then FastAPI's test client (in process: no network, the app's whole request
path) signs in and requests each page --rounds times; the peers are the API's
`GET /contacts/segments?limit=100` (the segment list as JSON) and `GET /contacts/segments/{key}`. The
segment list caches its 30-day trends until the change feed or the segments change, so it is also timed
after a change (each round first changes --changed contacts, untimed; the render then folds the new
feed rows into the rollup and reads it), against the straight computation over the feed
(`segment_trends_from_feed`, the peer) in the same run; the very first render, which folds the whole
seeded feed, is printed apart. The Reports page is timed over --events conversations of the last 30 days
(its first render, which builds the report's daily rollup, printed apart). Prints p50 and p95 per page
and the page/API ratios; asserts nothing about speed. Target from the issue: every page under 200 ms
(p95) with 100,000 contacts and 50 segments on PostgreSQL. The audience preview (it evaluates every
stored contact) is timed apart: it is an operation, not a page; as a plain post and as the browser runs
it (a job whose progress the page polls every 0.5 s). The Reports page's member counts are checked against
the straight computation over the membership stretches (`members_at`) in the same run.

Usage: .venv/bin/python bench/console.py [--contacts 100000] [--segments 50] [--rounds 20] [--sqlite]
       [--changed 20] [--events 20000] [--skip-postgres] [--postgres-admin-url URL]
"""

from __future__ import annotations

import argparse
import html
import random
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from common import make_contexts, make_segments, mutate_context, percentile, scratch_postgres
from fastapi.testclient import TestClient
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.db.engine import make_engine, migrate
from segmentflow.policies.sequences import parse_sequences
from segmentflow.policies.sla import parse_policies
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.conversations import parse_event, record_conversations
from segmentflow.services.keys import SCOPES, create_key
from segmentflow.services.membership import recompute_all, upsert_and_recompute
from segmentflow.services.reports import segment_trends_from_feed
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import load_index
from segmentflow.services.sequences import import_sequences
from segmentflow.services.sla import import_policies
from segmentflow.settings import Settings


def seed(url: str, args: argparse.Namespace) -> tuple[str, list[str], list[str]]:
    """Store and recompute the workload; an all-scopes key, the segment keys and some contact keys."""
    engine = make_engine(url)
    try:
        migrate(engine)
        now = datetime.now(UTC)
        contexts = [parse_context(c) for c in make_contexts(args.contacts, args.seed)]
        segments = parse_segments(make_segments(args.segments, args.seed))
        started = time.perf_counter()
        with Session(engine) as session, session.begin():
            import_segments(recompute=False, session=session, segments=segments, now=now)
            upsert_contacts(session=session, contexts=contexts, now=now)
            _, token = create_key(session=session, scopes=SCOPES, name="bench", now=now)
            sequence = {
                "key": "bench",
                "name": "Bench",
                "segment": segments[0].key,
                "steps": [
                    {"type": "send", "channel": "webhook", "url": "http://127.0.0.1:9/", "template": "Hi"}
                ],
            }
            import_sequences(session=session, sequences=parse_sequences(sequence), now=now)
            policies = [
                {
                    "key": "first",
                    "conditions": {"segments_any": [segments[0].key]},
                    "calendar": "24/7",
                    "targets": {"high": {"first_reply": "PT1H", "resolution": "P1D"}},
                },
                {"key": "default", "calendar": "24/7", "targets": {"high": {"first_reply": "PT4H"}}},
            ]
            import_policies(session=session, policies=parse_policies(policies), now=now)
        recompute_all(engine)
        rng = random.Random(args.seed)
        events = [
            parse_event(
                {
                    "id": f"e{n}",
                    "contactKey": rng.choice(contexts).fully_qualified_key,
                    "at": (now - timedelta(seconds=rng.uniform(0, 30 * 86400))).isoformat(),
                    "handoff": rng.random() < 0.2,
                    "csat": rng.choice([None, 1, 2, 3, 4, 5]),
                }
            )
            for n in range(args.events)
        ]
        with Session(engine) as session, session.begin():
            record_conversations(session=session, events=events, now=now)
        if engine.dialect.name == "postgresql":  # as autovacuum would soon: the report's plans need stats
            with engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        print(
            f"  seeded, recomputed and {args.events} events recorded in {time.perf_counter() - started:.1f} s"
        )
        keys = [c.fully_qualified_key for c in contexts[:: max(1, len(contexts) // 50)]]
        return token, [s.key for s in segments], keys
    finally:
        engine.dispose()


def timed(client: TestClient, path: str, rounds: int, headers: dict[str, str] | None = None) -> list[float]:
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append(time.perf_counter() - t0)
        assert response.status_code == 200, (path, response.status_code, response.text[:300])
    return samples


def after_changes(
    client: TestClient, url: str, contexts: list[Any], args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """The segment list as the first request after a membership change renders it (each round first
    changes `--changed` contacts, untimed), and the straight computation over the feed after the same
    change (the peer)."""
    engine = make_engine(url)
    rng = random.Random(args.seed + 1)
    pages, straight = [], []
    try:
        for _ in range(args.rounds):
            changed = [parse_context(mutate_context(rng.choice(contexts), rng)) for _ in range(args.changed)]
            with Session(engine) as session, session.begin():
                upsert_and_recompute(session=session, contexts=changed, index=load_index(session=session))
            with Session(engine) as session:
                t0 = time.perf_counter()
                segment_trends_from_feed(session=session, now=datetime.now(UTC))
                straight.append(time.perf_counter() - t0)
            pages.extend(timed(client, "/ui/segments", 1))
    finally:
        engine.dispose()
    return pages, straight


def same_members(url: str) -> str:
    """The Reports page's member counts (`members_from_rollup`, over the 30 day ends and the window's end)
    against the straight computation over the membership stretches (`members_at`), in one transaction."""
    from segmentflow.services.reporting import members_at, members_from_rollup

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    instants = [today + timedelta(days=1), *(today - timedelta(days=d) for d in range(-1, 29))]
    engine = make_engine(url)
    try:
        with Session(engine) as session, session.begin():
            new, old = members_from_rollup(session, instants), members_at(session, instants)
    finally:
        engine.dispose()
    same = {k: v for k, v in new.items() if v or k in old} == old
    overall = [new["", i] for i in range(len(instants))]
    return f"{'identical' if same else 'MISMATCH'} (overall at the window's end {overall[0]})"


def old_members_page(client: TestClient, rounds: int) -> list[float]:
    """The Reports page with the report's member counts from `members_at` (the stretch rewind the rollup
    replaced): the peer in the same run."""
    import segmentflow.services.reporting as reporting

    new = reporting.members_from_rollup
    reporting.members_from_rollup = reporting.members_at  # type: ignore[assignment]
    try:
        return timed(client, "/ui/reports", rounds)
    finally:
        reporting.members_from_rollup = new


def run_database(name: str, url: str, args: argparse.Namespace) -> None:
    print(f"\n{name}: {args.contacts} contacts, {args.segments} segments, {args.rounds} rounds per page")
    token, segment_keys, contact_keys = seed(url, args)
    app = create_app(Settings(database_url=url))
    with TestClient(app) as client:
        form = client.get("/ui/")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        # not following the redirect: the first segment list render is timed below
        client.post("/ui/sign-in", data={"token": token, "csrf": csrf.group(1)}, follow_redirects=False)
        first = timed(client, "/ui/segments", 1)[0]
        print(f"  first segment list render (folds the whole seeded feed): {first * 1000:.0f} ms")
        first = timed(client, "/ui/reports", 1)[0]
        print(f"  first reports render (builds the report's 30 rollup days): {first * 1000:.0f} ms")
        segment = quote(segment_keys[len(segment_keys) // 2], safe="")
        contact = quote(contact_keys[len(contact_keys) // 2], safe="")
        pages: dict[str, Callable[[], list[float]]] = {
            "/ui/segments": lambda: timed(client, "/ui/segments", args.rounds),
            "/ui/segments/{key}": lambda: timed(client, f"/ui/segments/{segment}", args.rounds),
            "/ui/segments/{key}/edit": lambda: timed(client, f"/ui/segments/{segment}/edit", args.rounds),
            "/ui/contacts/{key}": lambda: timed(client, f"/ui/contacts/{contact}", args.rounds),
            "/ui/sequences": lambda: timed(client, "/ui/sequences", args.rounds),
            "/ui/sequences/{key}?contact=": lambda: timed(
                client, f"/ui/sequences/bench?contact={contact}", args.rounds
            ),
            "/ui/sla (with what-if)": lambda: timed(
                client, f"/ui/sla?contact={contact}&priority=high", args.rounds
            ),
            "/ui/messages?contact=": lambda: timed(client, f"/ui/messages?contact={contact}", args.rounds),
        }
        pages["/ui/reports (30 days)"] = lambda: timed(client, "/ui/reports", args.rounds)
        pages["/ui/reports (30 days), old members_at"] = lambda: old_members_page(client, args.rounds)
        contexts = make_contexts(args.contacts, args.seed)
        changed_pages, straight = after_changes(client, url, contexts, args)
        pages["/ui/segments (after a change)"] = lambda: changed_pages
        bearer = {"Authorization": f"Bearer {token}"}
        peers = {
            "API GET /contacts/segments?limit=100": timed(
                client, "/contacts/segments?limit=100", args.rounds, bearer
            ),
            "API GET /contacts/segments/{key}": timed(
                client, f"/contacts/segments/{segment}", args.rounds, bearer
            ),
        }
        peers["straight trends over the feed (peer)"] = straight
        results = {label: run() for label, run in pages.items()}
        print(f"  report member counts vs members_at: {same_members(url)}")
        for label, samples in {**results, **peers}.items():
            p95 = percentile(samples, 0.95) * 1000
            flag = "" if not label.startswith("/ui") else ("  ok" if p95 < 200 else "  OVER 200 ms")
            print(f"  {label:<38} p50 {percentile(samples, 0.5) * 1000:7.1f} ms  p95 {p95:7.1f} ms{flag}")
        list_ratio = percentile(results["/ui/segments"], 0.5) / percentile(
            peers["API GET /contacts/segments?limit=100"], 0.5
        )
        page_ratio = percentile(results["/ui/segments/{key}"], 0.5) / percentile(
            peers["API GET /contacts/segments/{key}"], 0.5
        )
        print(f"  segments list page / API list (p50): {list_ratio:.1f}x")
        after = percentile(results["/ui/segments (after a change)"], 0.5) / percentile(straight, 0.5)
        print(f"  segment list after a change / straight trends alone (p50): {after:.2f}x")
        print(f"  segment page / API segment (p50): {page_ratio:.1f}x")
        t0 = time.perf_counter()
        editor = client.get(f"/ui/segments/{segment}/edit").text
        version = re.search(r'name="version" value="(\d+)"', editor)
        definition = re.search(r'name="definition"[^>]*>(.*?)</textarea>', editor, re.S)
        assert version is not None and definition is not None
        fields = {
            "csrf": re.search(r'name="csrf" value="([^"]+)"', editor).group(1),  # type: ignore[union-attr]
            "original": segment_keys[len(segment_keys) // 2],
            "version": version.group(1),
            "source": "json",
            "definition": html.unescape(definition.group(1)),
            "preview": "1",
        }
        preview = client.post("/ui/segments/editor", data=fields)
        count = re.search(r"data-preview-count>(\d+)<", preview.text)
        print(
            f"  audience preview over every contact (plain post): {time.perf_counter() - t0:.2f} s "
            f"({count.group(1) if count else '?'} would be members)"
        )
        # As the browser runs it: the post starts a job, the page polls its progress every 0.5 s.
        hx = {"HX-Request": "true"}
        t0 = time.perf_counter()
        started = client.post("/ui/segments/editor", data=fields, headers=hx)
        first = time.perf_counter() - t0
        token = re.search(r'hx-get="/ui/jobs/([^"]+)"', started.text)
        assert token is not None, started.text[:300]
        polls, seen = 0, []
        while True:
            time.sleep(0.5)
            t1 = time.perf_counter()
            answer = client.get(f"/ui/jobs/{token.group(1)}", headers=hx)
            polls += 1
            seen.append(time.perf_counter() - t1)
            done = re.search(r'data-job-done="(\d+)"', answer.text)
            if done is None:
                break
        count = re.search(r"data-preview-count>(\d+)<", answer.text)
        members = count.group(1) if count else "?"
        print(
            f"  audience preview as a job: first answer {first * 1000:.0f} ms, ended after "
            f"{time.perf_counter() - t0:.2f} s and {polls} progress polls "
            f"(p95 {percentile(seen, 0.95) * 1000:.0f} ms), {members} would be members"
        )
    app.state.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="segmentflow console page render times")
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--changed", type=int, default=20, help="contacts changed before each cold render")
    parser.add_argument("--events", type=int, default=20_000, help="conversation events for the report")
    parser.add_argument("--sqlite", action="store_true", help="also on a scratch SQLite file")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run_database("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", args)
    if not args.skip_postgres:
        with scratch_postgres(args.postgres_admin_url) as url:
            run_database("PostgreSQL", url, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
