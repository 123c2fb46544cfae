"""An action's `parameters` is a JSON Schema: refused at import when it is not one, and every call's
arguments are checked against it (after the permission check, before the webhook)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from segmentflow.plugins import SegmentsPlugin
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.services.messages import SpecError, argument_errors, parse_actions
from segmentflow.settings import Settings
from tests.messages.conftest import StandIn
from tests.messages.host_workflows import HostRunsAction

pytestmark = pytest.mark.timeout(60)


def test_a_parameters_object_that_is_not_a_json_schema_is_refused_naming_where() -> None:
    bad = [{"key": "refund", "parameters": {"type": "object", "properties": {"amount": {"type": "money"}}}}]
    with pytest.raises(
        SpecError, match=r'action "refund": parameters: .*not a JSON Schema at /properties/amount'
    ):
        parse_actions(bad)


@pytest.mark.parametrize(
    ("arguments", "errors"),
    [
        ({"order": "A-1"}, []),
        ({}, ["/: 'order' is a required property"]),
        ({"order": 7}, ["/order: 7 is not of type 'string'"]),
        ({"order": "A-1", "extra": 1}, ["/: Additional properties are not allowed ('extra' was unexpected)"]),
    ],
)
def test_argument_errors_name_the_path_and_the_rule(arguments: dict[str, Any], errors: list[str]) -> None:
    schema = {
        "type": "object",
        "properties": {"order": {"type": "string"}},
        "required": ["order"],
        "additionalProperties": False,
    }
    assert argument_errors(schema, arguments) == errors


async def test_run_action_with_arguments_outside_the_schema_fails_without_calling_the_webhook(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    config = dev_env.client.config()
    config["plugins"] = [SegmentsPlugin(engine=engine, settings=Settings())]
    client = Client(**config)

    async def run(arguments: dict[str, Any]) -> dict[str, Any]:
        args = {"action": "order-status", "contactKey": "u-free", "arguments": arguments}
        result: dict[str, Any] = await client.execute_workflow(
            HostRunsAction.run, args, id=f"host-{uuid.uuid4()}", task_queue=task_queue
        )
        return result

    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        wrong = await run({"order": 7})
        right = await run({"order": "A-1"})
    assert wrong["outcome"] == "InvalidActionArguments" and wrong["nonRetryable"] is True
    assert right == {"outcome": "ran"}
    assert [body for _, body in stand_in.hooks()] == [
        {"action": "order-status", "contactKey": "u-free", "arguments": {"order": "A-1"}}
    ]
