"""Starting a sequence's runner: one signal-with-start call starts it (woken) or wakes the one running;
waking a runner that is not running answers False."""

from __future__ import annotations

import uuid

from segmentflow.plugins import start_sequence_runner, wake_sequence_runner
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from tests.temporal.conftest import dev_env, task_queue  # noqa: F401  (the shared Temporal fixtures)


def _client(env: WorkflowEnvironment) -> Client:
    return Client(**{**env.client.config(), "data_converter": pydantic_data_converter})


async def _wakes(handle: WorkflowHandle[object, object]) -> list[str]:
    names = []
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_signaled_event_attributes"):
            names.append(event.workflow_execution_signaled_event_attributes.signal_name)
    return names


async def test_start_starts_the_runner_woken_and_a_second_start_wakes_the_same_run(
    dev_env: WorkflowEnvironment,  # noqa: F811
    task_queue: str,  # noqa: F811
) -> None:
    client = _client(dev_env)
    key = f"s-{uuid.uuid4()}"  # no worker serves the queue: the runner stays open for the test
    first = await start_sequence_runner(client, sequence_key=key, task_queue=task_queue)
    try:
        again = await start_sequence_runner(client, sequence_key=key, task_queue=task_queue)
        assert again.id == first.id and again.result_run_id == first.result_run_id
        assert await wake_sequence_runner(client, sequence_key=key)
        assert await _wakes(first) == ["wake", "wake", "wake"]
    finally:
        await first.terminate()
    assert not await wake_sequence_runner(dev_env.client, sequence_key=key)  # no runner running
    assert not await wake_sequence_runner(dev_env.client, sequence_key=f"never-{uuid.uuid4()}")
