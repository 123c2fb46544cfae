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


def _with_code(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"code": schema}}


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        (r"(a+)+$", "a" * 40 + "!"),
        (r"(a|aa)+$", "a" * 40 + "!"),
        (r"(a|a)*b", "a" * 40),
        (r"(.*a){20}", "a" * 19 + "b" * 5000),
    ],
)
def test_a_catastrophic_schema_pattern_checks_model_arguments_at_once(pattern: str, value: str) -> None:
    # `re.search` would take minutes to years on each of these; the per-test timeout is 60 s.
    [action] = parse_actions(
        [{"key": "refund", "parameters": _with_code({"type": "string", "pattern": pattern})}]
    )
    schema = action.parameters
    assert argument_errors(schema, {"code": value}) == [f"/code: {value!r} does not match {pattern!r}"]
    props = {
        "type": "object",
        "patternProperties": {pattern: {"type": "integer"}},
        "additionalProperties": False,
    }
    assert argument_errors(props, {value: 1}) == [
        f"/: {value!r} does not match any of the regexes: {pattern!r}"
    ]


@pytest.mark.parametrize(
    ("schema", "arguments"),
    [
        (_with_code({"type": "string", "pattern": r"^[A-Z]{2}-\d+$"}), {"code": "AB-12"}),
        (_with_code({"type": "string", "pattern": r"^[A-Z]{2}-\d+$"}), {"code": "ab-12"}),
        (_with_code({"type": "string", "pattern": r"(?i)^ok"}), {"code": "OK then"}),
        (_with_code({"type": "string", "pattern": r"\d"}), {"code": "٣"}),  # Python's Unicode digits
        (
            {
                "type": "object",
                "patternProperties": {"^x-": {"type": "string"}},
                "additionalProperties": False,
            },
            {"x-a": "1", "y": 2},
        ),
        (
            {
                "type": "object",
                "patternProperties": {"^n": {"type": "integer"}},
                "additionalProperties": {"type": "string"},
            },
            {"n1": "one", "other": 3, "fine": "yes"},
        ),
    ],
)
def test_schema_regexes_give_jsonschemas_own_answers(
    schema: dict[str, Any], arguments: dict[str, Any]
) -> None:
    from jsonschema import Draft202012Validator

    want = sorted(
        f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in Draft202012Validator(schema).iter_errors(arguments)
    )
    assert argument_errors(schema, arguments) == want


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (_with_code({"type": "string", "pattern": r"(a)\1"}), "/properties/code/pattern: regex"),
        (_with_code({"type": "string", "pattern": r"^(?=x)"}), "lookahead"),
        (_with_code({"type": "string", "pattern": "("}), "/properties/code/pattern: '(' is not a 'regex'"),
        ({"type": "object", "patternProperties": {r"(?<=a)b": {}}}, "/patternProperties: regex"),
        (
            {"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False},
            "unevaluatedProperties beside patternProperties",
        ),
    ],
)
def test_a_schema_regex_that_cannot_run_in_linear_time_is_refused_at_import(
    parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=r'action "refund": parameters: ') as info:
        parse_actions([{"key": "refund", "parameters": parameters}])
    assert message in str(info.value)


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
