"""Shared HTTP clients live as long as a worker of the plugin needs them: stopping one worker of the
process neither closes the client another worker is using, nor leaves a closed client for the next one
(`RuntimeError: Cannot send a request, as the client has been closed`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from segmentflow.plugins import SegmentsPlugin
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.sla.conftest import WebhookServer
from tests.sla.host_workflows import PostsSlaWebhook


def _notice(url: str, ticket: str) -> dict[str, object]:
    due = datetime(2026, 11, 27, 10, tzinfo=UTC).isoformat()
    event = {
        "ticketId": ticket,
        "contactKey": "u0",
        "policy": "vip",
        "metric": "first_reply",
        "kind": "breach",
        "dueAt": due,
        "firedAt": due,
    }
    return {"url": url, "event": event, "segments": ["vip"]}


async def test_sla_webhooks_go_out_after_another_worker_of_the_process_stopped(
    dev_env: WorkflowEnvironment, engine: Engine, webhook: WebhookServer
) -> None:
    config = dev_env.client.config()
    config["plugins"] = [SegmentsPlugin(engine=engine)]
    client = Client(**config)
    first, second = f"tq-{uuid.uuid4()}", f"tq-{uuid.uuid4()}"

    async def post(queue: str, ticket: str) -> None:
        await client.execute_workflow(
            PostsSlaWebhook.run, _notice(webhook.url, ticket), id=f"sla-{uuid.uuid4()}", task_queue=queue
        )

    staying = Worker(client, task_queue=second, workflows=[PostsSlaWebhook])
    async with staying:
        async with Worker(client, task_queue=first, workflows=[PostsSlaWebhook]):
            await post(first, "t-1")
            await post(second, "t-2")
        await post(second, "t-3")  # the first worker stopped: this one still sends
    async with Worker(client, task_queue=first, workflows=[PostsSlaWebhook]):
        await post(first, "t-4")  # every worker stopped once: a new one opens a new client
    assert [body["ticketId"] for _, _, body in webhook.requests] == ["t-1", "t-2", "t-3", "t-4"]
    assert {status for status, _, _ in webhook.requests} == {200}
