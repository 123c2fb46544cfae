"""The edges of message handling: responders that choose an action (built-in trigger phrases, or an
OpenAI-compatible chat-completions endpoint over httpx), the reply rendered from a sandboxed Jinja2
template, and the action webhook (an httpx POST with an `Idempotency-Key` stable across retries).

Answers are classified as the delivery channels classify them (`services.delivery.transient_status`): a
4xx other than 408/425/429 is the caller's problem and raises `RejectedError` (never worth a retry); 5xx,
408, 425, 429 and transport errors propagate as httpx's own exceptions so Temporal retries them. An answer
that is not a usable chat completion raises `ResponderError` (not retried either)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from jinja2 import Template

from segmentflow.services.delivery import transient_status
from segmentflow.services.templates import (
    DEFAULT_LIMITS,
    TemplateError,
    TemplateLimits,
    compile_template,
    render_variables,
)
from segmentflow.workflows.message_models import ACTION_KEY_MAX, AppliedInstruction, OfferedAction

__all__ = [
    "DEFAULT_REPLY_TEMPLATE",
    "Choice",
    "RejectedError",
    "ResponderError",
    "TemplateError",
    "call_webhook",
    "choose_by_trigger",
    "choose_with_chat_completions",
    "compile_reply_template",
    "render_reply",
    "tool_name",
]

#: The refusal sentence names nothing: the contact may not even see the action (the key stays in the
#: workflow's result, `refused`).
DEFAULT_REPLY_TEMPLATE = (
    "{% if refused %}Sorry, I can't do that for you."
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
    code = response.status_code
    if 400 <= code < 500 and not transient_status(code):
        raise RejectedError(f"{what} answered HTTP {code}: {response.text[:200]}")
    response.raise_for_status()  # 5xx, 408, 425, 429 (and anything else not 2xx): retried


def _content(value: Any) -> str | None:
    """A message's `content`: a string, or a list of parts whose texts are joined (None when empty)."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list):
        texts = []
        for part in value:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise ResponderError(f"a content part that is not text: {str(part)[:100]}")
        return "".join(texts) or None
    raise ResponderError(f"content is neither a string nor a list of parts: {type(value).__name__}")


def _unknown_name(name: str) -> str:
    """A tool name that maps to no offered action, as an action key can hold it (NUL escaped, cut to
    256 characters): passed on for the enforcement to refuse and audit."""
    name = name.replace("\x00", "\\x00")
    return name if len(name) <= ACTION_KEY_MAX else name[: ACTION_KEY_MAX - 1] + "…"


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
        content = _content(message.get("content"))
        if not calls:
            return Choice(reply=content)
        function = calls[0]["function"]
        name = function.get("name")
        raw = function.get("arguments") or "{}"
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ResponderError(f"not a chat completion: {exc!r}") from None
    if not isinstance(name, str) or not name:
        raise ResponderError("the tool call names no function")
    if not isinstance(arguments, dict):
        raise ResponderError("tool call arguments are not a JSON object")
    return Choice(action=names.get(name) or _unknown_name(name), arguments=arguments, reply=content)


def compile_reply_template(source: str) -> Template:
    """The reply template, compiled once in the sandbox with `StrictUndefined` (the environment of
    `services.templates`); a template that does not parse raises `TemplateError`."""
    return compile_template(source)


def render_reply(
    template: Template | str, variables: Mapping[str, Any], *, limits: TemplateLimits = DEFAULT_LIMITS
) -> str:
    """Render the reply in the bounded sandbox of `services.templates` (a template cannot reach Python
    internals; an undefined variable is an error; `limits` bound its size, loops and work). Any failure
    raises `TemplateError` (`TemplateLimitError` for a limit)."""
    compiled = compile_reply_template(template) if isinstance(template, str) else template
    return render_variables(compiled, variables, limits=limits).strip()


async def call_webhook(
    client: httpx.AsyncClient,
    webhook: Mapping[str, Any],
    payload: Mapping[str, Any],
    *,
    timeout: float,
    idempotency_key: str | None = None,
) -> tuple[int, Any]:
    """POST the payload as JSON with the webhook's headers and `Idempotency-Key` (the same key on every
    retry of one action run, so the receiver performs it once); the status and the JSON answer (or its
    text)."""
    headers = dict(webhook.get("headers") or {})
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    response = await client.post(str(webhook["url"]), json=dict(payload), headers=headers, timeout=timeout)
    _check(response, f"the webhook {webhook['url']}")
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text
