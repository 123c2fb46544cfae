"""Edges of the enforced path on the real dev server with the real plugin, over SQLite and PostgreSQL:
restrictions tightened by a writer with a slower clock, host inputs of the host's own types or malformed,
a contact leaving a segment after the host resolved it, oversized names, webhook retries with one
`Idempotency-Key`, a rate-limited responder, and the reply template."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from segmentflow.activities import MessageActivities
from segmentflow.plugins import SegmentsPlugin
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from segmentflow.rules import parse_context
from segmentflow.services.membership import upsert_and_recompute
from segmentflow.services.messages import list_refusals, parse_actions, upsert_actions
from segmentflow.services.segments import load_index
from segmentflow.settings import Settings
from tests.messages.conftest import NOW, StandIn, handle, plugin_client, refusals, tool_call
from tests.messages.host_workflows import HostResolvesThenRuns, HostRunsAction, HostRunsActionWithOwnTypes

pytestmark = pytest.mark.timeout(60)


async def _run(client: Client, task_queue: str, workflow: str, args: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await client.execute_workflow(
        workflow, args, id=f"host-{uuid.uuid4()}", task_queue=task_queue
    )
    return result


async def test_restriction_tightened_by_a_writer_with_an_earlier_clock_is_refused(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    """The workers' caches are warm with order-status open to all; a re-import back-dated a day restricts
    it to vip. The next message does not offer it and a direct run is refused."""
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        before = await handle(client, task_queue, "u-free", "where is my order")
        with Session(engine) as session, session.begin():
            tightened = [{"key": "order-status", "restricted_to_segments": ["vip"]}]
            upsert_actions(session=session, actions=parse_actions(tightened), now=NOW - timedelta(days=1))
        after = await handle(client, task_queue, "u-free", "where is my order")
        direct = await _run(
            client, task_queue, "tests.HostRunsAction", {"action": "order-status", "contactKey": "u-free"}
        )
    assert before.ran == "order-status"
    assert after.actions == [] and after.ran is None
    assert direct["outcome"] == "SegmentRestricted"
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/order-status"]


async def test_host_input_of_its_own_dataclass_is_checked_on_the_workflow_side(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    own = "tests.HostRunsActionWithOwnTypes"
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsActionWithOwnTypes]):
        refused = await _run(client, task_queue, own, {"action": "refund", "contactKey": "u-free"})
        allowed = await _run(client, task_queue, own, {"action": "refund", "contactKey": "u-vip"})
    assert (refused["outcome"], refused["side"], refused["activity"]) == (
        "SegmentRestricted",
        "workflow",
        "segmentflow.RefuseAction",
    )
    assert allowed == {"outcome": "ran"}
    assert stand_in.hooks() == [
        ("/hooks/refund", {"action": "refund", "contactKey": "u-vip", "arguments": {}})
    ]
    assert refusals(engine) == [("u-free", "refund", "workflow")]


@pytest.mark.parametrize(
    ("raw", "audited"),
    [
        ([{"action": "refund", "contactKey": "u-vip"}, {"extra": 1}], ("u-vip", "refund")),  # two arguments
        ([{"action": "x" * 300, "contactKey": "u-vip"}], ("u-vip", "x" * 255 + "…")),  # key too long
        ([{"contactKey": "u-vip"}], ("u-vip", "(unknown)")),  # no action
        ([{"action": "refund", "contactKey": "u-vip", "colour": "red"}], ("u-vip", "refund")),
    ],
)
async def test_malformed_run_action_input_is_refused_on_the_workflow_side(
    dev_env: WorkflowEnvironment,
    engine: Engine,
    task_queue: str,
    seeded: None,
    stand_in: StandIn,
    raw: list[Any],
    audited: tuple[str, str],
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsActionWithOwnTypes]):
        result = await _run(client, task_queue, "tests.HostRunsActionWithOwnTypes", {"raw": raw})
    assert result == {
        "outcome": "SegmentRestricted",
        "side": "workflow",
        "reason": "malformed RunAction input",
        "activity": "segmentflow.RefuseAction",
    }
    assert stand_in.hooks() == []
    assert refusals(engine) == [(*audited, "workflow")]


async def test_host_that_resolved_then_runs_after_the_contact_left_is_refused_on_the_worker_side(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    """The host resolves u-vip through `segmentflow.workflows.resolve_message` (refund offered, so the
    workflow-side check lets it through); u-vip then leaves vip; the worker-side check refuses."""
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostResolvesThenRuns]):
        handle = await client.start_workflow(
            "tests.HostResolvesThenRuns",
            {"action": "refund", "contactKey": "u-vip"},
            id=f"host-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        offered = None
        for _ in range(200):
            offered = await handle.query("offered")
            if offered is not None:
                break
            await asyncio.sleep(0.05)
        assert offered is not None and "refund" in offered
        with Session(engine) as session, session.begin():
            context = parse_context({"key": "u-vip", "plan": "free", "country": "US"})
            upsert_and_recompute(session=session, contexts=[context], index=load_index(session=session))
        await handle.signal("go")
        result = await handle.result()
    assert (result["outcome"], result["side"], result["activity"]) == (
        "SegmentRestricted",
        "worker",
        "segmentflow.RunAction",
    )
    assert stand_in.hooks() == []
    assert refusals(engine) == [("u-vip", "refund", "worker")]


async def test_responder_naming_an_oversized_tool_is_refused_and_audited(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    stand_in.completion = tool_call("t" * 400 + "\x00")
    client = plugin_client(dev_env, engine, Settings(openai_base_url=stand_in.url))
    async with Worker(client, task_queue=task_queue):
        result = await handle(client, task_queue, "u-free", "do the thing")
    assert result.ran is None and result.refused == "t" * 255 + "…"
    with Session(engine) as session:
        (row,) = list_refusals(session=session)
    assert (row.contact_key, row.action_key, row.side) == ("u-free", "t" * 255 + "…", "workflow")


async def test_handle_message_with_an_oversized_contact_key_fails_instead_of_retrying(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    """Plain JSON from a caller without our models: the run fails with the validation error."""
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        with pytest.raises(WorkflowFailureError) as failure:
            await client.execute_workflow(
                HANDLE_MESSAGE,
                {"contactKey": "c" * 600, "conversationId": "c", "text": "hi"},
                id=f"msg-{uuid.uuid4()}",
                task_queue=task_queue,
                execution_timeout=timedelta(seconds=30),
            )
    assert "contactKey" in str(failure.value.cause) or "contact_key" in str(failure.value.cause)


async def test_webhook_retried_after_a_5xx_sends_the_same_idempotency_key(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    stand_in.statuses = [500]
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        first = await handle(client, task_queue, "u-vip", "refund")
        second = await handle(client, task_queue, "u-vip", "refund")
    assert first.ran == second.ran == "refund"
    keys = [h.get("idempotency-key") for h in stand_in.headers]
    assert [p for p, _ in stand_in.requests] == ["/hooks/refund"] * 3
    assert keys[0] is not None and keys[0] == keys[1]  # the 500, then the retry: one action
    assert keys[2] is not None and keys[2] != keys[0]  # another message: another action run


async def test_rate_limited_chat_endpoint_is_retried(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    stand_in.completion = tool_call("refund")
    stand_in.statuses = [429]
    client = plugin_client(dev_env, engine, Settings(openai_base_url=stand_in.url))
    async with Worker(client, task_queue=task_queue):
        result = await handle(client, task_queue, "u-vip", "money please")
    assert result.ran == "refund"
    assert stand_in.paths() == ["/chat/completions", "/chat/completions", "/hooks/refund"]


def test_a_reply_template_that_does_not_parse_is_refused_when_the_plugin_starts(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"SEGMENTFLOW_REPLY_TEMPLATE.*line 1"):
        SegmentsPlugin(engine=engine, settings=Settings(reply_template="{% if %}"))


async def test_a_reply_template_failing_to_render_fails_the_message_without_retries(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    client = plugin_client(dev_env, engine, Settings(reply_template="Hi {{ contact.name }}"))
    async with Worker(client, task_queue=task_queue):
        handle = await client.start_workflow(
            HANDLE_MESSAGE,
            HandleMessageInput(contact_key="u-vip", conversation_id="c", text="hello"),
            id=f"msg-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    chain: list[BaseException] = []
    error: BaseException | None = failure.value.cause
    while error is not None:
        chain.append(error)
        error = error.__cause__
    assert any(getattr(e, "type", None) == "ReplyTemplateFailed" for e in chain)
    history = await handle.fetch_history()
    attempts = [e for e in history.events if e.HasField("marker_recorded_event_attributes")]
    assert len(attempts) <= 3  # resolve, respond, one failed render: no retry loop


@pytest.mark.parametrize(
    ("action", "contact", "audited"),
    [
        ("x" * 300, "u-vip", ("u-vip", "x" * 255 + "…")),
        ("refund", "u\x00vip", ("u\\x00vip", "refund")),
    ],
)
async def test_malformed_input_from_a_host_without_the_plugin_is_refused_once_by_run_action(
    dev_env: WorkflowEnvironment,
    engine: Engine,
    task_queue: str,
    seeded: None,
    stand_in: StandIn,
    action: str,
    contact: str,
    audited: tuple[str, str],
) -> None:
    """No workflow-side check and no interceptor: RunAction reads the input itself and refuses it for
    good (not Temporal's retryable "Failed decoding arguments"), with its audit row."""
    host = Client(**{**dev_env.client.config(), "data_converter": pydantic_data_converter})
    activities = MessageActivities(engine, Settings())
    try:
        async with Worker(
            host, task_queue=task_queue, workflows=[HostRunsAction], activities=activities.all()
        ):
            result = await _run(
                host, task_queue, "tests.HostRunsAction", {"action": action, "contactKey": contact}
            )
    finally:
        await activities.aclose()
    assert (result["outcome"], result["side"], result["nonRetryable"]) == (
        "SegmentRestricted",
        "activity",
        True,
    )
    assert stand_in.hooks() == []
    assert refusals(engine) == [(*audited, "activity")]
