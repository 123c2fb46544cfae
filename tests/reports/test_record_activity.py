"""`segmentflow.RecordConversation` on the real dev server, called by a host workflow through the plugin."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import conversation_event_table
from tests.reports.host_workflows import SupportConversation
from tests.temporal.conftest import plugin_client


async def test_host_workflow_records_the_end_of_a_conversation_once(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[SupportConversation]):
        first = await client.execute_workflow(
            SupportConversation.run, "alice", id="conv-1", task_queue=task_queue
        )
        again = await client.execute_workflow(
            SupportConversation.run, "alice", id="conv-1", task_queue=task_queue
        )
    assert (first.recorded, first.duplicates) == (1, 0)
    assert (again.recorded, again.duplicates) == (0, 1)
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(
                    conversation_event_table.c.id,
                    conversation_event_table.c.contact_key,
                    conversation_event_table.c.csat,
                )
            )
        )
    assert rows == [("conv-1", "alice", 5)]
