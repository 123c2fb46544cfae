"""`segmentflow.RecomputeMemberships` on the real dev server: equals the direct service call, fans out over
ranges, continues as new, scales over two workers, recomputes one segment on demand."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from segmentflow.plugins import start_recompute
from segmentflow.workflows import RecomputeMemberships, RecomputeMembershipsInput
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.db.tables import MembershipChange, RecomputeProgress
from segmentflow.rules import parse_segments
from segmentflow.services.segment_admin import import_segments
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import SEGMENTS, contexts, expected, load, stored


async def test_recompute_workflow_stores_what_the_evaluator_says_and_reports_counts(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    items = contexts(40)
    load(engine, items)
    client = await plugin_client(dev_env, engine)
    params = RecomputeMembershipsInput(parallelism=3, range_size=7, page_size=3)
    async with Worker(client, task_queue=task_queue):
        result = await client.execute_workflow(
            RecomputeMemberships.run, params, id=f"rc-{uuid.uuid4()}", task_queue=task_queue
        )
        again = await client.execute_workflow(
            RecomputeMemberships.run, params, id=f"rc-{uuid.uuid4()}", task_queue=task_queue
        )
    want = expected(items)
    assert stored(engine) == want
    assert (result.contacts, result.entered, result.exited, result.ranges) == (
        41,
        sum(len(v) for v in want.values()),
        0,
        6,
    )
    assert (again.contacts, again.entered, again.exited) == (41, 0, 0)
    with Session(engine) as session:
        assert session.exec(select(RecomputeProgress)).all() == []  # cursors cleaned up


async def test_recompute_continues_as_new_and_keeps_counting(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    items = contexts(30)
    load(engine, items)
    client = await plugin_client(dev_env, engine)
    workflow_id = f"rc-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(range_size=5, ranges_per_run=2, parallelism=2),
            id=workflow_id,
            task_queue=task_queue,
        )
        result = await handle.result()
    assert result.ranges == 7 and result.contacts == 31
    assert result.entered == sum(len(v) for v in expected(items).values())
    first = client.get_workflow_handle(workflow_id, run_id=handle.first_execution_run_id)
    assert (await first.describe()).status == WorkflowExecutionStatus.CONTINUED_AS_NEW


async def test_two_workers_share_the_ranges_of_one_recompute(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    items = contexts(60)
    load(engine, items)
    one = await plugin_client(dev_env, engine, identity="worker-one")
    two = await plugin_client(dev_env, engine, identity="worker-two")
    async with (
        Worker(one, task_queue=task_queue, max_concurrent_activities=1),
        Worker(two, task_queue=task_queue, max_concurrent_activities=1),
    ):
        result = await one.execute_workflow(
            RecomputeMemberships.run,
            RecomputeMembershipsInput(range_size=4, page_size=2, parallelism=4),
            id=f"rc-{uuid.uuid4()}",
            task_queue=task_queue,
        )
    assert result.workers == ["worker-one", "worker-two"]
    assert stored(engine) == expected(items)


async def test_recompute_one_segment_now_reaches_its_dependents_only(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    items = contexts(12)
    load(engine, items)
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        await (await start_recompute(client, task_queue=task_queue)).result()
        changed = [dict(s) for s in SEGMENTS]
        changed[0] = {
            "key": "vip",
            "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["free"]}]}],
        }
        changed[1] = {"key": "eu", "rules": []}
        with Session(engine) as session, session.begin():
            import_segments(
                recompute=False, session=session, segments=parse_segments(changed[:2]), now=datetime.now(UTC)
            )
        result = await (await start_recompute(client, task_queue=task_queue, segment_keys=["vip"])).result()
    assert result.entered > 0 and result.exited > 0
    now = stored(engine)
    # eu changed as well but was not asked for: its stale members stay until the next full run.
    # vip-eu (a dependent) is re-evaluated with the current eu rules, which match nobody now.
    assert now["u0"] == ["eu"] and now["u2"] == ["eu", "vip"]
    with Session(engine) as session:
        keys = {c.segment_key for c in session.exec(select(MembershipChange)).all()}
    assert "big-orgs" in keys


async def test_recompute_of_unknown_segment_fails_without_retrying(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(3))
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                RecomputeMemberships.run,
                RecomputeMembershipsInput(segment_keys=["missing"]),
                id=f"rc-{uuid.uuid4()}",
                task_queue=task_queue,
            )
    cause = failure.value.cause
    assert isinstance(cause, ActivityError) and isinstance(cause.cause, ApplicationError)
    assert cause.cause.type == "SegmentNotFound" and "missing" in cause.cause.message
