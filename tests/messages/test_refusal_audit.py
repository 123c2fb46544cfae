"""The refusal audit: one row per refusing activity (a retry after the commit writes none), and
`segmentflow.RefuseAction` runs only when the plugin's workflow interceptor scheduled it."""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.services.messages import list_refusals, record_refusal
from tests.messages.conftest import NOW, plugin_client, refusals
from tests.messages.host_workflows import HostForgesRefusal, HostRunsAction


def _record(engine: Engine, *, run_id: str | None, activity_id: str | None) -> bool:
    with Session(engine) as session, session.begin():
        return record_refusal(
            session=session,
            action_key="refund",
            contact_key="u-free",
            reason="not offered",
            side="workflow",
            now=NOW,
            workflow_id="host-1",
            run_id=run_id,
            activity_id=activity_id,
        )


def test_a_retried_refusal_of_the_same_activity_writes_no_second_row(engine: Engine) -> None:
    assert _record(engine, run_id="run-1", activity_id="3")
    assert not _record(engine, run_id="run-1", activity_id="3")  # the retry after the commit
    assert _record(engine, run_id="run-1", activity_id="4")  # another activity of the same run
    assert _record(engine, run_id="run-2", activity_id="3")  # the same activity id in the next run
    with Session(engine) as session:
        rows = list_refusals(session=session)
    assert sorted((r.run_id, r.activity_id) for r in rows) == [("run-1", "3"), ("run-1", "4"), ("run-2", "3")]


def test_refusals_outside_an_activity_are_all_kept(engine: Engine) -> None:
    assert _record(engine, run_id=None, activity_id=None)
    assert _record(engine, run_id=None, activity_id=None)
    with Session(engine) as session:
        assert len(list_refusals(session=session)) == 2


async def test_an_unmarked_refuse_action_call_is_refused_and_writes_nothing(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostForgesRefusal, HostRunsAction]):
        forged = await client.execute_workflow(
            HostForgesRefusal.run,
            {"action": "refund", "contactKey": "u-vip"},
            id=f"forge-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        # The interceptor's own refusal still goes through, recorded once with its activity's key.
        run_id = f"host-{uuid.uuid4()}"
        refused = await client.execute_workflow(
            HostRunsAction.run, {"action": "refund", "contactKey": "u-free"}, id=run_id, task_queue=task_queue
        )
    assert forged == "InvalidInput: True"
    assert refused["outcome"] == "SegmentRestricted"
    assert refusals(engine) == [("u-free", "refund", "workflow")]
    with Session(engine) as session:
        (row,) = list_refusals(session=session)
    assert row.workflow_id == run_id and row.run_id and row.activity_id
