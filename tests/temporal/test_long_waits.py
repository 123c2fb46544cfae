"""Long waits on the time-skipping test server: membership read before and after three days of sleep."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.rules import parse_context
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.membership import recompute_all, recompute_contacts
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import CheckAgainLater


async def test_membership_change_during_a_three_day_sleep_is_seen_afterwards(
    skipping_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(3))
    recompute_all(engine)
    client = await plugin_client(skipping_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[CheckAgainLater]):
        handle = await client.start_workflow(
            CheckAgainLater.run, "u1", id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
        for _ in range(500):
            history = await handle.fetch_history()
            if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the workflow never reached its sleep")
        with Session(engine) as session, session.begin():
            ids = upsert_contacts(
                session=session, contexts=[parse_context({"key": "u1", "plan": "vip"})], now=datetime.now(UTC)
            )
            recompute_contacts(session=session, contact_ids=ids)
        started = await skipping_env.get_current_time()
        assert await handle.result() == [False, True]
        assert (await skipping_env.get_current_time() - started).days >= 3
