"""Data loading shared by the Temporal tests (through the services, as an operator's import would)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from segmentflow.rules import compile_segments, memberships, parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.exports import iter_memberships
from segmentflow.services.segment_admin import import_segments

#: Issue 12: after a worker is killed, work resumes within this many seconds of a new worker's start.
RESUME_BOUND = 30.0

SEGMENTS: list[dict[str, Any]] = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {"key": "eu", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}]}]},
    {
        "key": "vip-eu",
        "rules": [
            {"clauses": [{"op": "segmentMatch", "values": ["vip"]}, {"op": "segmentMatch", "values": ["eu"]}]}
        ],
    },
    {
        "key": "big-orgs",
        "rules": [
            {
                "clauses": [
                    {
                        "contextKind": "organization",
                        "attribute": "seats",
                        "op": "greaterThan",
                        "values": [100],
                    }
                ]
            }
        ],
    },
]


def contexts(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(
            {
                "kind": "user",
                "key": f"u{i}",
                "plan": "vip" if i % 3 == 0 else "free",
                "country": "DE" if i % 2 == 0 else "US",
            }
        )
    out.append({"kind": "organization", "key": "o1", "seats": 500})
    return out


def load(engine: Engine, items: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(segments), now=now)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in items], now=now)


def stored(engine: Engine) -> dict[str, list[str]]:
    with Session(engine) as session:
        return dict(iter_memberships(session=session))


def expected(items: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS) -> dict[str, list[str]]:
    compiled = compile_segments(parse_segments(segments))
    return {parse_context(c).fully_qualified_key: memberships(compiled, parse_context(c)) for c in items}


def worker_process(
    env: WorkflowEnvironment, engine: Engine, task_queue: str, repo_root: Path
) -> subprocess.Popen[bytes]:
    """`python worker.py --no-schedule` in its own process, on `env`'s server, `engine`'s database and
    `task_queue`: a worker a test can kill."""
    environment = {
        **os.environ,
        "SEGMENTFLOW_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "SEGMENTFLOW_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SEGMENTFLOW_TASK_QUEUE": task_queue,
    }
    return subprocess.Popen(
        [sys.executable, str(repo_root / "worker.py"), "--no-schedule"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Stop a worker process (SIGKILL: as a crash; SIGTERM: a clean shutdown) and reap it."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
