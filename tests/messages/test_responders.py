"""Responders and the reply template: the built-in trigger phrases, the chat-completions client (against
httpx.MockTransport standing in for the remote endpoint) and Jinja2's sandbox."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from segmentflow.workflows.message_models import AppliedInstruction, OfferedAction

from segmentflow.services.responders import (
    DEFAULT_REPLY_TEMPLATE,
    RejectedError,
    ResponderError,
    TemplateError,
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
    """A client whose every request is answered by `answer` with `status`."""

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


def _calls(function: Any, content: Any = None) -> dict[str, Any]:
    return {"choices": [{"message": {"content": content, "tool_calls": [{"function": function}]}}]}


ARRAY_ARGUMENTS = _calls({"name": "refund", "arguments": "[1]"})


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"choices": []}, "not a chat completion"),
        ({"nope": 1}, "not a chat completion"),
        (ARRAY_ARGUMENTS, "not a JSON object"),
        (_calls({"arguments": "{}"}), "names no function"),  # no name: not a bare KeyError
        (_calls({"name": None, "arguments": "{}"}), "names no function"),  # not the action "None"
        (_calls({"name": "", "arguments": "{}"}), "names no function"),
        (_calls({"name": 7}), "names no function"),
        (_calls({"name": "refund"}, content=[{"type": "image_url"}]), "content part"),
        (_calls({"name": "refund"}, content={"text": "x"}), "neither a string nor a list"),
        ({"choices": [{"message": {"tool_calls": [{"id": "c"}]}}]}, "not a chat completion"),
    ],
)
async def test_chat_completions_malformed_answers_raise_responder_error(answer: Any, message: str) -> None:
    with pytest.raises(ResponderError, match=message):
        await _choose(_mock(answer))


async def test_chat_completions_content_parts_are_joined_into_the_reply() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there."}]
    answer = {"choices": [{"message": {"role": "assistant", "content": parts}}]}
    assert (await _choose(_mock(answer), [])).reply == "Hello, there."
    choice = await _choose(_mock(_calls({"name": "refund", "arguments": "{}"}, content=parts)))
    assert (choice.action, choice.reply) == ("refund", "Hello, there.")


async def test_chat_completions_unknown_name_is_bounded_to_an_action_key() -> None:
    """A made-up name longer than any key, or with NUL, still reaches the enforcement as a storable key."""
    choice = await _choose(_mock(tool_call("x" * 1000)))
    assert choice.action is not None and len(choice.action) == 256 and choice.action.endswith("…")
    choice = await _choose(_mock(tool_call("evil\x00name")))
    assert choice.action == "evil\\x00name"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_rejected(status: int) -> None:
    with pytest.raises(RejectedError, match=f"HTTP {status}"):
        await _choose(_mock({"error": "bad"}, status=status))


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
async def test_transient_answers_propagate_for_retry(status: int) -> None:
    """Classified as the delivery channels do: 429 (rate limited) is retried, not a failed message."""
    with pytest.raises(httpx.HTTPStatusError):
        await _choose(_mock({"error": "later"}, status=status))
    async with _mock({}, status=status) as client:
        with pytest.raises(httpx.HTTPStatusError):
            await call_webhook(client, {"url": "http://hook.test/x"}, {"action": "a"}, timeout=5)


async def test_webhook_client_errors_are_rejected() -> None:
    async with _mock({}, status=404) as client:
        with pytest.raises(RejectedError, match="webhook"):
            await call_webhook(client, {"url": "http://hook.test/x"}, {"action": "a"}, timeout=5)


async def test_webhook_posts_payload_with_configured_headers() -> None:
    seen: list[dict[str, Any]] = []
    async with _mock({"status": "shipped"}, seen=seen) as client:
        status, body, truncated = await call_webhook(
            client, {"url": "http://hook.test/x", "headers": {"X-Key": "k"}}, {"action": "a"}, timeout=5
        )
    assert (status, body, truncated) == (200, {"status": "shipped"}, False)
    assert seen[0]["headers"]["x-key"] == "k" and seen[0]["body"] == {"action": "a"}
    assert "idempotency-key" not in seen[0]["headers"]
    async with _mock({}, seen=seen) as client:
        await call_webhook(client, {"url": "http://hook.test/x"}, {}, timeout=5, idempotency_key="wf/run/1")
    assert seen[1]["headers"]["idempotency-key"] == "wf/run/1"


def test_default_reply_template_covers_each_outcome() -> None:
    base: dict[str, Any] = {"refused": None, "responder_reply": None, "ran": None, "action": None}
    refused = render_reply(DEFAULT_REPLY_TEMPLATE, base | {"refused": "secret-refund"})
    assert refused == "Sorry, I can't do that for you." and "secret-refund" not in refused
    assert render_reply(DEFAULT_REPLY_TEMPLATE, base | {"ran": "refund", "action": {"name": "Refund"}}) == (
        "Done: Refund."
    )
    assert render_reply(DEFAULT_REPLY_TEMPLATE, base | {"responder_reply": "Hi!"}) == "Hi!"


def test_reply_template_runs_in_jinja2_sandbox_with_strict_undefined() -> None:
    with pytest.raises(TemplateError, match="SecurityError"):
        render_reply("{{ text.__class__.__mro__[1].__subclasses__() }}", {"text": "x"})
    with pytest.raises(TemplateError, match="UndefinedError"):
        render_reply("Hi {{ nobody.name }}", {"text": "x"})
    with pytest.raises(TemplateError, match="line 1"):
        render_reply("{% if %}", {})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_rejected_naming_it_and_never_followed(status: int) -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(status, headers={"Location": "http://169.254.169.254/latest?token=s3cret"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        with pytest.raises(
            RejectedError, match=f"HTTP {status}: redirect to http://169.254.169.254/latest"
        ) as e:
            await call_webhook(client, {"url": "http://hook.test/x"}, {"action": "a"}, timeout=5)
        assert "s3cret" not in str(e.value)
    with pytest.raises(RejectedError, match="redirect"):
        await _choose(httpx.AsyncClient(transport=httpx.MockTransport(handle)))
    assert seen == ["http://hook.test/x", "http://llm.test/v1/chat/completions"]


async def test_a_webhook_answer_over_the_cap_comes_back_cut_and_marked_truncated() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"blob": "A" * 50_000})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        status, body, truncated = await call_webhook(
            client, {"url": "http://hook.test/x"}, {}, timeout=5, max_body=4096
        )
        assert (status, truncated, len(body)) == (200, True, 4096)
        assert isinstance(body, str) and body.startswith('{"blob":"AAA')
        status, body, truncated = await call_webhook(client, {"url": "http://hook.test/x"}, {}, timeout=5)
        assert truncated is False and len(body["blob"]) == 50_000


async def test_a_chat_completion_over_the_cap_is_a_responder_error() -> None:
    big = {"choices": [{"message": {"content": "x" * 10_000}}]}
    with pytest.raises(ResponderError, match="larger than 2048 bytes"):
        await choose_with_chat_completions(
            _mock(big),
            base_url="http://llm.test/v1",
            api_key=None,
            model="m",
            text="hi",
            actions=[],
            instructions=[],
            timeout=5,
            max_body=2048,
        )
