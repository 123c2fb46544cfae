"""The edges of message handling: responders that choose an action (built-in trigger phrases, or an
OpenAI-compatible chat-completions endpoint over httpx), the reply rendered from a sandboxed Jinja2
template, and the action webhook (an httpx POST).

A 4xx answer is the caller's problem and raises `RejectedError` (never worth a retry); a 5xx answer or a
transport error propagates as httpx's own exception so Temporal retries it."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from jinja2.sandbox import SandboxedEnvironment

from segmentflow.workflows.message_models import AppliedInstruction, OfferedAction

__all__ = [
    "DEFAULT_REPLY_TEMPLATE",
    "Choice",
    "RejectedError",
    "ResponderError",
    "call_webhook",
    "choose_by_trigger",
    "choose_with_chat_completions",
    "render_reply",
    "tool_name",
]

DEFAULT_REPLY_TEMPLATE = (
    "{% if refused %}Sorry, {{ refused }} is not available to you."
    "{% elif responder_reply %}{{ responder_reply }}"
    "{% elif ran %}Done: {{ action.name if action else ran }}."
    "{% else %}Thanks for your message. How can I help?{% endif %}"
)


class RejectedError(Exception):
    """The remote end refused the request (HTTP 4xx): retrying would not help."""


class ResponderError(Exception):
    """The responder answered something that is not a chat completion."""


@dataclass(frozen=True)
class Choice:
    action: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    reply: str | None = None


def choose_by_trigger(text: str, actions: Sequence[OfferedAction]) -> Choice:
    """Pure. The built-in responder: the offered action whose trigger phrase occurs earliest in the text
    (case-insensitive; on a tie the longer phrase, then the earlier action). Only offered actions are
    considered, so it never names one the contact may not use."""
    lowered = text.casefold()
    best: tuple[int, int, int] | None = None
    chosen: str | None = None
    for order, action in enumerate(actions):
        for phrase in action.trigger_phrases:
            phrase = phrase.strip().casefold()
            at = lowered.find(phrase) if phrase else -1
            if at < 0:
                continue
            rank = (at, -len(phrase), order)
            if best is None or rank < best:
                best, chosen = rank, action.key
    return Choice(action=chosen)


_TOOL_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(action_key: str) -> str:
    """The function name OpenAI's API accepts for an action key (letters, digits, `_`, `-`; 64 at most)."""
    return _TOOL_CHARS.sub("_", action_key)[:64]


def _check(response: httpx.Response, what: str) -> None:
    if 400 <= response.status_code < 500:
        raise RejectedError(f"{what} answered HTTP {response.status_code}: {response.text[:200]}")
    response.raise_for_status()


async def choose_with_chat_completions(
    client: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str | None,
    model: str,
    text: str,
    actions: Sequence[OfferedAction],
    instructions: Sequence[AppliedInstruction],
    timeout: float,
) -> Choice:
    """Ask an OpenAI-compatible `/chat/completions` endpoint: the offered actions become tools, the applied
    instructions the system prompt. The first tool call names the action (mapped back to its key; a name
    that maps to no offered action is passed on unchanged, for the enforcement to refuse)."""
    names = {tool_name(a.key): a.key for a in actions}
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": "\n\n".join(i.text for i in instructions)})
    messages.append({"role": "user", "content": text})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if actions:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool_name(a.key),
                    "description": a.description or a.name,
                    "parameters": a.parameters or {"type": "object", "properties": {}},
                },
            }
            for a in actions
        ]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = await client.post(
        f"{base_url.rstrip('/')}/chat/completions", json=body, headers=headers, timeout=timeout
    )
    _check(response, "the chat-completions endpoint")
    try:
        message = response.json()["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        content = message.get("content") or None
        if not calls:
            return Choice(reply=content)
        function = calls[0]["function"]
        raw = function.get("arguments") or "{}"
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ResponderError(f"not a chat completion: {exc!r}") from None
    if not isinstance(arguments, dict):
        raise ResponderError("tool call arguments are not a JSON object")
    name = str(function["name"])
    return Choice(action=names.get(name, name), arguments=arguments, reply=content)


@functools.lru_cache(maxsize=16)
def _template(source: str) -> Any:
    return SandboxedEnvironment(autoescape=False).from_string(source)


def render_reply(source: str, variables: Mapping[str, Any]) -> str:
    """Render the reply in Jinja2's sandbox (a template cannot reach Python internals)."""
    return str(_template(source).render(**variables)).strip()


async def call_webhook(
    client: httpx.AsyncClient, webhook: Mapping[str, Any], payload: Mapping[str, Any], *, timeout: float
) -> tuple[int, Any]:
    """POST the payload as JSON; the status and the JSON answer (or its text)."""
    response = await client.post(
        str(webhook["url"]), json=dict(payload), headers=dict(webhook.get("headers") or {}), timeout=timeout
    )
    _check(response, f"the webhook {webhook['url']}")
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text
