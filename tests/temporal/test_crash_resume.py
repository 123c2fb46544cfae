"""Kill a real worker process (SIGKILL) in the middle of a recompute page loop and start a new worker
process at once: with the default timeouts it resumes from the durable cursor within 30 s of its start,
and the store ends exactly as a clean run leaves it, with no duplicate change events."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from segmentflow.db.tables import MembershipChange, progress_table
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import RESUME_BOUND, contexts, expected, kill, load, stored, worker_process


def _progressed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(progress_table.c.contacts), 0))) or 0)


async def test_worker_killed_mid_run_resumes_within_bound_from_cursor_without_duplicate_events(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, task_queue: str, repo_root: Path
) -> None:
    items = contexts(3000)
    load(engine, items)
    process = worker_process(dev_env, engine, task_queue, repo_root)
    client = await plugin_client(dev_env, engine)
    try:
        handle = await client.start_workflow(
            RecomputeMemberships.run,
            # The default heartbeat timeout: what a deployment runs with.
            RecomputeMembershipsInput(range_size=1500, page_size=20, parallelism=2),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        deadline = time.monotonic() + 90
        while _progressed(engine) == 0:
            assert time.monotonic() < deadline, "the worker process never made progress"
            assert process.poll() is None, "the worker process exited early"
            await asyncio.sleep(0.02)
    finally:
        kill(process)
    at_kill = _progressed(engine)
    assert 0 < at_kill < len(items), "the kill must land mid-run"

    started = time.monotonic()
    replacement = worker_process(dev_env, engine, task_queue, repo_root)
    try:
        while _progressed(engine) == at_kill:
            assert time.monotonic() - started < RESUME_BOUND, "the recompute did not resume in time"
            assert replacement.poll() is None, "the new worker process exited early"
            await asyncio.sleep(0.05)
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        kill(replacement, signal.SIGTERM)

    want = expected(items)
    assert stored(engine) == want
    total = sum(len(v) for v in want.values())
    with Session(engine) as session:
        events = [
            (c.segment_key, c.contact_key, c.change) for c in session.exec(select(MembershipChange)).all()
        ]
    assert len(events) == len(set(events)) == total
    assert (result.contacts, result.entered, result.exited) == (len(items), total, 0)
