"""Check Contact In Segment and friends on the real dev server, with the plugin on the client only."""

from __future__ import annotations

import uuid

import pytest
from segmentflow.workflows import CheckContactInSegmentResult
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.services.membership import recompute_all
from tests.temporal.conftest import plugin_client
from tests.temporal.helpers import contexts, load
from tests.temporal.user_workflows import (
    CheckWithHelper,
    ChooseTemplateByName,
    ChooseTemplateWithHelper,
    SandboxModules,
)


async def test_user_workflow_branches_on_is_member_from_activity_called_by_name(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(6))
    recompute_all(engine)
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateByName]):
        results = [
            await client.execute_workflow(
                ChooseTemplateByName.run, key, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
            )
            for key in ("u0", "u1", "u3")
        ]
    assert results == ["vip-template", "standard-template", "vip-template"]


async def test_is_member_helper_reads_segment_and_dependent_memberships(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(4))
    recompute_all(engine)
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateWithHelper]):

        async def ask(segment: str, contact: str) -> str:
            return await client.execute_workflow(
                ChooseTemplateWithHelper.run,
                [segment, contact],
                id=f"wf-{uuid.uuid4()}",
                task_queue=task_queue,
            )

        assert await ask("vip-eu", "u0") == "member"  # vip and DE
        assert await ask("vip-eu", "u3") == "not-member"  # vip, US
        assert await ask("big-orgs", "organization:o1") == "member"


async def test_check_result_carries_segment_key_id_contact_and_computed_time(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(2))
    recompute_all(engine)
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[CheckWithHelper]):
        result = await client.execute_workflow(
            CheckWithHelper.run,
            ["big-orgs", "o1", "organization"],
            id=f"wf-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=CheckContactInSegmentResult,
        )
    assert result.is_member and result.segment_key == "big-orgs"
    assert result.contact_key == "organization:o1"
    assert result.computed_at.tzinfo is not None
    wire = result.model_dump(mode="json")
    assert {"isMember", "segmentKey", "segmentId", "contactKey", "computedAt"} <= set(wire)


@pytest.mark.parametrize(
    ("segment", "contact", "error_type"),
    [
        ("nope", "u0", "SegmentNotFound"),
        ("vip", "u-missing", "ContactNotFound"),
    ],
)
async def test_unknown_segment_or_contact_fails_at_once_without_retries(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, segment: str, contact: str, error_type: str
) -> None:
    load(engine, contexts(2))
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateWithHelper]):
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                ChooseTemplateWithHelper.run,
                [segment, contact],
                id=f"wf-{uuid.uuid4()}",
                task_queue=task_queue,
            )
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    app_error = activity_error.cause
    assert isinstance(app_error, ApplicationError)
    assert app_error.type == error_type and app_error.non_retryable
    assert (segment if error_type == "SegmentNotFound" else contact) in app_error.message


async def test_contact_never_computed_is_computed_on_first_read(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    load(engine, contexts(4))  # stored, never recomputed
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[ChooseTemplateWithHelper]):
        result = await client.execute_workflow(
            ChooseTemplateWithHelper.run, ["vip", "u3"], id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
    assert result == "member"


async def test_plugin_keeps_sql_http_and_templates_out_of_the_workflow_sandbox(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = await plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[SandboxModules]):
        heavy = await client.execute_workflow(
            SandboxModules.run, id=f"wf-{uuid.uuid4()}", task_queue=task_queue
        )
    assert heavy == []
