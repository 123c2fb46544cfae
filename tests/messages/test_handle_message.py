"""`segmentflow.HandleMessage` and the enforced path of `segmentflow.RunAction` on the real dev server, with
the real plugin on the client (and so on its workers), over SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from segmentflow.activities import MessageActivities
from segmentflow.plugins import SegmentsPlugin, serving_contact
from segmentflow.workflows.message_models import HANDLE_MESSAGE, HandleMessageInput, HandleMessageResult
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from segmentflow.rules import parse_context
from segmentflow.services.membership import upsert_and_recompute
from segmentflow.services.messages import load_catalog, resolve_message
from segmentflow.services.segments import load_index
from segmentflow.settings import Settings
from tests.legacy import remove_segment_row
from tests.messages.conftest import StandIn, handle, plugin_client, refusals, tool_call
from tests.messages.host_workflows import AsksWhoIsServed, HostRunsAction, who_is_served

pytestmark = pytest.mark.timeout(60)


async def _host(client: Client, task_queue: str, **args: Any) -> dict[str, Any]:
    result: dict[str, Any] = await client.execute_workflow(
        HostRunsAction.run, args, id=f"host-{uuid.uuid4()}", task_queue=task_queue
    )
    return result


async def test_empty_restriction_is_everyone_and_non_empty_needs_one_listed_segment(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        vip = await handle(client, task_queue, "u-vip", "hello")
        eu = await handle(client, task_queue, "u-eu", "hello")
        free = await handle(client, task_queue, "u-free", "hello")
    # u-vip is in vip and beta; u-eu in eu; u-free in none.
    assert vip.actions == ["beta-feature", "book-call", "order-status", "refund"]
    assert vip.instructions == ["beta-note", "tone", "vip-tone"]
    assert eu.actions == ["book-call", "order-status"]
    assert eu.instructions == ["gdpr", "tone"]
    assert free.actions == ["order-status"]
    assert free.instructions == ["tone"]
    assert (vip.ran, vip.refused, free.ran) == (None, None, None)
    assert vip.reply == "Thanks for your message. How can I help?"


async def test_anonymous_and_unknown_contacts_get_unrestricted_items_only(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        anonymous = await handle(client, task_queue, None, "hello")
        unknown = await handle(client, task_queue, "nobody", "hello")
        # A restricted action asked for directly is refused for both.
        anonymous_run = await _host(client, task_queue, action="refund", contactKey=None)
        unknown_run = await _host(client, task_queue, action="refund", contactKey="nobody")
    for result in (anonymous, unknown):
        assert result.actions == ["order-status"]
        assert result.instructions == ["tone"]
    assert anonymous_run["outcome"] == unknown_run["outcome"] == "SegmentRestricted"
    assert refusals(engine) == [(None, "refund", "workflow"), ("nobody", "refund", "workflow")]


async def test_trigger_phrase_runs_offered_action_through_webhook_and_renders_reply(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        result = await handle(client, task_queue, "u-vip", "I would like a REFUND please")
    assert (result.ran, result.refused) == ("refund", None)
    assert result.reply == "Done: Refund."
    assert stand_in.hooks() == [
        ("/hooks/refund", {"action": "refund", "contactKey": "u-vip", "arguments": {}})
    ]
    assert refusals(engine) == []


async def test_restriction_naming_deleted_segment_fails_closed_and_is_reported(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    """book-call names vip and eu; with eu deleted it is withheld from vip members too, not opened."""
    with Session(engine) as session, session.begin():
        remove_segment_row(session, "eu")  # the API refuses: actions still name it
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        result = await handle(client, task_queue, "u-vip", "book a call")
        direct = await _host(client, task_queue, action="book-call", contactKey="u-vip")
    assert "book-call" not in result.actions and "gdpr" not in result.instructions
    assert result.actions == ["beta-feature", "order-status", "refund"]
    assert result.ran is None
    assert direct["outcome"] == "SegmentRestricted"
    assert stand_in.hooks() == []
    with Session(engine) as session:
        found = resolve_message(session=session, catalog=load_catalog(session=session), contact_key="u-vip")
    assert [(kind, w.key, w.missing_segments) for kind, w in found.withheld] == [
        ("action", "book-call", ("eu",)),
        ("instruction", "gdpr", ("eu",)),
    ]


async def test_contact_leaving_a_segment_loses_the_action_at_the_next_message(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        first = await handle(client, task_queue, "u-vip", "refund")
        with Session(engine) as session, session.begin():
            context = parse_context({"key": "u-vip", "plan": "free", "country": "US"})
            upsert_and_recompute(session=session, contexts=[context], index=load_index(session=session))
        second = await handle(client, task_queue, "u-vip", "refund")
        direct = await _host(client, task_queue, action="refund", contactKey="u-vip")
    assert first.ran == "refund" and "refund" in first.actions
    assert second.actions == ["order-status"] and second.ran is None
    assert direct["outcome"] == "SegmentRestricted"
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/refund"]


async def test_host_workflow_calling_run_action_is_refused_on_the_workflow_side(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        refused = await _host(client, task_queue, action="refund", contactKey="u-free")
        allowed = await _host(client, task_queue, action="refund", contactKey="u-vip")
    assert refused == {
        "outcome": "SegmentRestricted",
        "nonRetryable": True,
        "side": "workflow",
        "activity": "segmentflow.RefuseAction",
    }
    assert allowed == {"outcome": "ran"}
    assert stand_in.hooks() == [
        ("/hooks/refund", {"action": "refund", "contactKey": "u-vip", "arguments": {}})
    ]
    assert refusals(engine) == [("u-free", "refund", "workflow")]


async def test_host_workflow_without_the_plugin_is_refused_on_the_worker_side(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    """The host's own worker has no plugin (no workflow-side check); the action runs on ours."""
    host = Client(**{**dev_env.client.config(), "data_converter": pydantic_data_converter})
    ours = plugin_client(dev_env, engine)
    host_queue = f"{task_queue}-host"
    async with (
        Worker(ours, task_queue=task_queue),
        Worker(host, task_queue=host_queue, workflows=[HostRunsAction]),
    ):
        refused = await _host(host, host_queue, action="refund", contactKey="u-eu", taskQueue=task_queue)
        allowed = await _host(host, host_queue, action="book-call", contactKey="u-eu", taskQueue=task_queue)
    assert refused == {
        "outcome": "SegmentRestricted",
        "nonRetryable": True,
        "side": "worker",
        "activity": "segmentflow.RunAction",
    }
    assert allowed == {"outcome": "ran"}
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/book-call"]
    assert refusals(engine) == [("u-eu", "refund", "worker")]


async def test_run_action_refuses_by_itself_on_a_worker_without_the_plugin(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    host = Client(**{**dev_env.client.config(), "data_converter": pydantic_data_converter})
    activities = MessageActivities(engine, Settings())
    try:
        async with Worker(
            host, task_queue=task_queue, workflows=[HostRunsAction], activities=activities.all()
        ):
            refused = await _host(host, task_queue, action="refund", contactKey="u-free")
            allowed = await _host(host, task_queue, action="order-status", contactKey="u-free")
    finally:
        await activities.aclose()
    assert refused["outcome"] == "SegmentRestricted" and refused["side"] == "activity"
    assert allowed == {"outcome": "ran"}
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/order-status"]
    assert refusals(engine) == [("u-free", "refund", "activity")]


async def test_workflow_serving_one_contact_cannot_run_an_action_as_another(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        with serving_contact("u-free"):
            borrowed = await _host(client, task_queue, action="refund", contactKey="u-vip")
            own = await _host(client, task_queue, action="order-status", contactKey="u-free")
    assert borrowed["outcome"] == "SegmentRestricted" and borrowed["side"] == "workflow"
    assert own == {"outcome": "ran"}
    assert refusals(engine) == [("u-vip", "refund", "workflow")]


async def test_chat_completions_responder_gets_filtered_tools_and_instructions(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    stand_in.completion = tool_call("book-call", {"when": "tomorrow"}, content="Booked for tomorrow.")
    settings = Settings(openai_base_url=f"{stand_in.url}/v1", openai_api_key="sk-test", openai_model="m")
    client = plugin_client(dev_env, engine, settings)
    async with Worker(client, task_queue=task_queue):
        result = await handle(client, task_queue, "u-eu", "can we talk?")
    assert (result.ran, result.refused, result.reply) == ("book-call", None, "Booked for tomorrow.")
    path, request = stand_in.requests[0]
    assert path == "/v1/chat/completions" and request["model"] == "m"
    assert [t["function"]["name"] for t in request["tools"]] == ["book-call", "order-status"]
    assert request["messages"] == [
        {"role": "system", "content": "Mention GDPR rights.\n\nBe brief."},
        {"role": "user", "content": "can we talk?"},
    ]
    assert stand_in.hooks() == [
        ("/hooks/book-call", {"action": "book-call", "contactKey": "u-eu", "arguments": {"when": "tomorrow"}})
    ]


async def test_responder_naming_an_action_not_offered_is_refused(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    stand_in.completion = tool_call("refund", {"amount": 100})
    client = plugin_client(dev_env, engine, Settings(openai_base_url=stand_in.url))
    async with Worker(client, task_queue=task_queue):
        result = await handle(client, task_queue, "u-free", "give me money")
    assert result.actions == ["order-status"]
    assert (result.ran, result.refused) == (None, "refund")
    assert result.reply == "Sorry, I can't do that for you."  # the key is not echoed to the contact
    assert stand_in.hooks() == []
    assert refusals(engine) == [("u-free", "refund", "workflow")]


async def test_run_action_as_a_local_activity_is_checked_on_the_workflow_side_too(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[HostRunsAction]):
        refused = await _host(client, task_queue, action="refund", contactKey="u-eu", local=True)
        allowed = await _host(client, task_queue, action="book-call", contactKey="u-eu", local=True)
    assert refused["outcome"] == "SegmentRestricted" and refused["side"] == "workflow"
    assert allowed == {"outcome": "ran"}
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/book-call"]
    assert refusals(engine) == [("u-eu", "refund", "workflow")]


async def test_handle_message_histories_replay_with_the_plugin(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None, stand_in: StandIn
) -> None:
    """Determinism, interceptors included: a run that ran an action and one whose action was refused."""
    stand_in.completion = tool_call("refund")
    client = plugin_client(dev_env, engine, Settings(openai_base_url=stand_in.url))
    handles = []
    async with Worker(client, task_queue=task_queue):
        for contact in ("u-vip", "u-free"):
            handle = await client.start_workflow(
                HANDLE_MESSAGE,
                HandleMessageInput(contact_key=contact, conversation_id="c", text="refund"),
                id=f"msg-{uuid.uuid4()}",
                task_queue=task_queue,
                result_type=HandleMessageResult,
            )
            handles.append(handle)
            await handle.result()
    assert [p for p, _ in stand_in.hooks()] == ["/hooks/refund"]
    replayer = Replayer(workflows=[], plugins=[SegmentsPlugin(engine=engine)])  # the plugin adds ours
    for handle in handles:
        await replayer.replay_workflow(await handle.fetch_history())


async def test_current_contact_travels_to_activities_and_child_workflows(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue, workflows=[AsksWhoIsServed], activities=[who_is_served]):
        with serving_contact("u-eu"):
            served = await client.execute_workflow(
                AsksWhoIsServed.run, 1, id=f"who-{uuid.uuid4()}", task_queue=task_queue
            )
        nobody = await client.execute_workflow(
            AsksWhoIsServed.run, 0, id=f"who-{uuid.uuid4()}", task_queue=task_queue
        )
    assert served == ["u-eu", "u-eu"]
    assert nobody == [None]


async def test_a_field_a_newer_client_added_does_not_fail_the_message(
    dev_env: WorkflowEnvironment, engine: Engine, task_queue: str, seeded: None
) -> None:
    client = plugin_client(dev_env, engine)
    async with Worker(client, task_queue=task_queue):
        result = await client.execute_workflow(
            HANDLE_MESSAGE,
            {"contactKey": "u-vip", "conversationId": "c-1", "text": "hello", "channel": "chat"},
            id=f"msg-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=HandleMessageResult,
        )
    assert "refund" in result.actions and result.reply
