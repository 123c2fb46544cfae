"""Responders and the reply template: the built-in trigger phrases, the chat-completions client (against
httpx.MockTransport standing in for the remote endpoint) and Jinja2's sandbox."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from jinja2.exceptions import SecurityError
from segmentflow.workflows.message_models import AppliedInstruction, OfferedAction

from segmentflow.services.responders import (
    DEFAULT_REPLY_TEMPLATE,
    RejectedError,
    ResponderError,
    call_webhook,
    choose_by_trigger,
    choose_with_chat_completions,
    render_reply,
)
from tests.messages.conftest import tool_call


def _action(key: str, *phrases: str) -> OfferedAction:
    return OfferedAction(
        key=key, name=key.title(), description="", parameters={}, trigger_phrases=list(phrases)
    )


ACTIONS = [_action("order-status", "where is my order", "order"), _action("refund", "refund", "money back")]


@pytest.mark.parametrize(
    ("text", "chosen"),
    [
        ("Where is my ORDER?", "order-status"),  # case-insensitive
        ("I want my money back for this order", "refund"),  # the earliest phrase in the text wins
        ("where is my order, or a refund", "order-status"),  # longer phrase on a tie of position
        ("hello", None),
        ("", None),
    ],
)
def test_built_in_responder_picks_the_earliest_trigger_phrase(text: str, chosen: str | None) -> None:
    assert choose_by_trigger(text, ACTIONS).action == chosen


def test_built_in_responder_never_names_an_action_not_offered() -> None:
    assert choose_by_trigger("refund please", ACTIONS[:1]).action is None


def _mock(answer: Any, status: int = 200, seen: list[dict[str, Any]] | None = None) -> httpx.AsyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(
                {
                    "url": str(request.url),
                    "headers": dict(request.headers),
                    "body": json.loads(request.content),
                }
            )
        return httpx.Response(status, json=answer)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


async def _choose(client: httpx.AsyncClient, actions: list[OfferedAction] = ACTIONS) -> Any:
    async with client:
        return await choose_with_chat_completions(
            client,
            base_url="http://llm.test/v1/",
            api_key="sk-1",
            model="m",
            text="hi",
            actions=actions,
            instructions=[AppliedInstruction(key="tone", text="Be brief.")],
            timeout=5,
        )


async def test_chat_completions_maps_tool_names_back_to_action_keys() -> None:
    seen: list[dict[str, Any]] = []
    actions = [_action("orders.lookup v2")]
    choice = await _choose(_mock(tool_call("orders_lookup_v2", {"id": 7}), seen=seen), actions)
    assert (choice.action, choice.arguments) == ("orders.lookup v2", {"id": 7})
    request = seen[0]
    assert request["url"] == "http://llm.test/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-1"
    assert request["body"]["tools"][0]["function"]["name"] == "orders_lookup_v2"
    assert request["body"]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_chat_completions_without_tool_call_is_a_plain_reply_and_no_actions_send_no_tools() -> None:
    seen: list[dict[str, Any]] = []
    answer = {"choices": [{"message": {"role": "assistant", "content": "Hello!"}}]}
    choice = await _choose(_mock(answer, seen=seen), [])
    assert (choice.action, choice.reply) == (None, "Hello!")
    assert "tools" not in seen[0]["body"]


async def test_chat_completions_unknown_tool_name_is_passed_on_for_enforcement() -> None:
    choice = await _choose(_mock(tool_call("delete_everything")))
    assert choice.action == "delete_everything"


ARRAY_ARGUMENTS = {
    "choices": [{"message": {"tool_calls": [{"function": {"name": "refund", "arguments": "[1]"}}]}}]
}


@pytest.mark.parametrize("answer", [{"choices": []}, {"nope": 1}, ARRAY_ARGUMENTS])
async def test_chat_completions_malformed_answers_raise_responder_error(answer: Any) -> None:
    with pytest.raises(ResponderError):
        await _choose(_mock(answer))


async def test_client_errors_are_rejected_and_server_errors_propagate_for_retry() -> None:
    with pytest.raises(RejectedError, match="HTTP 401"):
        await _choose(_mock({"error": "bad key"}, status=401))
    with pytest.raises(httpx.HTTPStatusError):
        await _choose(_mock({"error": "down"}, status=503))
    async with _mock({}, status=404) as client:
        with pytest.raises(RejectedError, match="webhook"):
            await call_webhook(client, {"url": "http://hook.test/x"}, {"action": "a"}, timeout=5)


async def test_webhook_posts_payload_with_configured_headers() -> None:
    seen: list[dict[str, Any]] = []
    async with _mock({"status": "shipped"}, seen=seen) as client:
        status, body = await call_webhook(
            client, {"url": "http://hook.test/x", "headers": {"X-Key": "k"}}, {"action": "a"}, timeout=5
        )
    assert (status, body) == (200, {"status": "shipped"})
    assert seen[0]["headers"]["x-key"] == "k" and seen[0]["body"] == {"action": "a"}


def test_default_reply_template_covers_each_outcome() -> None:
    base: dict[str, Any] = {"refused": None, "responder_reply": None, "ran": None, "action": None}
    assert render_reply(DEFAULT_REPLY_TEMPLATE, base | {"refused": "refund"}) == (
        "Sorry, refund is not available to you."
    )
    assert render_reply(DEFAULT_REPLY_TEMPLATE, base | {"ran": "refund", "action": {"name": "Refund"}}) == (
        "Done: Refund."
    )
    assert render_reply(DEFAULT_REPLY_TEMPLATE, base | {"responder_reply": "Hi!"}) == "Hi!"


def test_reply_template_runs_in_jinja2_sandbox() -> None:
    with pytest.raises(SecurityError):
        render_reply("{{ text.__class__.__mro__[1].__subclasses__() }}", {"text": "x"})
