"""Kill a real worker process in the middle of a recompute page loop; a fresh worker resumes from the
durable cursor and the store ends exactly as a clean run leaves it, with no duplicate change events."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import MembershipChange, progress_table
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, expected, load, stored, worker_process


def _progressed(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(progress_table.c.contacts), 0))) or 0)


async def test_worker_killed_mid_run_resumes_from_cursor_without_duplicate_events(
    dev_env: WorkflowEnvironment, engine: Engine, database_url: str, task_queue: str, repo_root: Path
) -> None:
    items = contexts(3000)
    load(engine, items)
    process = worker_process(dev_env, engine, task_queue, repo_root)
    client = await plugin_client(dev_env, engine)
    try:
        handle = await client.start_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(
                range_size=1500, page_size=20, parallelism=2, range_heartbeat_timeout=timedelta(seconds=2)
            ),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        deadline = time.monotonic() + 90
        while _progressed(engine) == 0:
            assert time.monotonic() < deadline, "the worker process never made progress"
            assert process.poll() is None, "the worker process exited early"
            await asyncio.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    at_kill = _progressed(engine)
    assert 0 < at_kill < len(items), "the kill must land mid-run"

    async with Worker(client, task_queue=task_queue):
        result = await handle.result()

    want = expected(items)
    assert stored(engine) == want
    total = sum(len(v) for v in want.values())
    with Session(engine) as session:
        events = [
            (c.segment_key, c.contact_key, c.change) for c in session.exec(select(MembershipChange)).all()
        ]
    assert len(events) == len(set(events)) == total
    assert (result.contacts, result.entered, result.exited) == (len(items), total, 0)
