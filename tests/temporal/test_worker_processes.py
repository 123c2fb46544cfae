"""`python worker.py --processes N`: N worker processes serve the task queue, one that dies is replaced,
and SIGTERM stops them all cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment

from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, kill, load


async def _poller_pids(env: WorkflowEnvironment, task_queue: str) -> set[int]:
    """The pids of the workers polling the queue for activities (identities are `pid@host`)."""
    answer = await env.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=env.client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return {int(p.identity.split("@", 1)[0]) for p in answer.pollers}


async def _until(check: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_processes_serve_the_queue_replace_a_dead_one_and_stop_on_sigterm(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, repo_root: Path
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("process supervision does not depend on the database (SQLite covers it)")
    load(engine, contexts(200))
    environment = {
        **os.environ,
        "SEGMENTFLOW_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "SEGMENTFLOW_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "SEGMENTFLOW_TASK_QUEUE": task_queue,
        "SEGMENTFLOW_WORKER_DB_CONNECTIONS": "4",
    }
    supervisor = subprocess.Popen(
        [sys.executable, str(repo_root / "worker.py"), "--processes", "2", "--no-schedule"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first: set[int] = set()

        async def two_workers() -> bool:
            first.update(await _poller_pids(dev_env, task_queue))
            return len(first) == 2

        await _until(two_workers, "two worker processes polling")
        assert supervisor.pid not in first  # the supervisor itself serves nothing

        client = await plugin_client(dev_env, engine)
        result = await client.execute_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(range_size=20, page_size=10, parallelism=4),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        assert result.contacts == 201

        dead = min(first)
        os.kill(dead, signal.SIGKILL)

        async def replaced() -> bool:
            return bool(await _poller_pids(dev_env, task_queue) - first)

        await _until(replaced, "a new worker process in place of the killed one")
        workers = first | await _poller_pids(dev_env, task_queue)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
        assert not any(_alive(pid) for pid in workers)
    finally:
        kill(supervisor)
