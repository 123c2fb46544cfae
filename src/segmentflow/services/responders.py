"""The edges of message handling: responders that choose an action (built-in trigger phrases, or an
OpenAI-compatible chat-completions endpoint over httpx), the reply rendered from a sandboxed Jinja2
template, and the action webhook (an httpx POST with an `Idempotency-Key` stable across retries).

Both go through `services.egress` (`post_json`: the egress policy of the client's transport, bodies read
up to `max_body` bytes, never whole). Answers are classified as the delivery channels classify them
(`services.delivery.transient_status`): a 4xx other than 408/425/429 and a 3xx (redirects are never
followed) are final and raise `RejectedError` (never worth a retry); an egress refusal raises
`EgressRefusedError` (final too); 5xx, 408, 425, 429 and other transport errors (malformed or oversized
answers included) propagate as httpx's own exceptions so Temporal retries them. An answer that is not a
usable chat completion (a truncated one included) raises `ResponderError` (not retried either). URLs in
error messages have their secrets redacted (`policies.egress.redact_url`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from jinja2 import Template

from segmentflow.policies.egress import redact_url
from segmentflow.services.delivery import transient_status
from segmentflow.services.egress import DEFAULT_MAX_RESPONSE_BYTES, Answer, post_json, redirect_refusal
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


def _check(answer: Answer, url: str, what: str) -> None:
    code = answer.status_code
    redirect = redirect_refusal(answer, url)
    if redirect is not None:
        raise RejectedError(f"{what} {redirect}")
    if 400 <= code < 500 and not transient_status(code):
        raise RejectedError(f"{what} {redact_url(url)} answered HTTP {code}: {answer.summary(200)}")
    if not 200 <= code < 300:  # 5xx, 408, 425, 429 (and anything else): retried
        request = httpx.Request("POST", url)
        response = httpx.Response(code, headers=answer.headers, content=answer.body, request=request)
        raise httpx.HTTPStatusError(
            f"{what} {redact_url(url)} answered HTTP {code}", request=request, response=response
        )


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
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
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
    url = f"{base_url.rstrip('/')}/chat/completions"
    answer = await post_json(client, url, body, headers=headers, timeout=timeout, max_body=max_body)
    _check(answer, url, "the chat-completions endpoint")
    if answer.truncated:
        raise ResponderError(
            f"the chat completion is larger than {max_body} bytes (SEGMENTFLOW_MAX_RESPONSE_BYTES)"
        )
    try:
        message = json.loads(answer.body)["choices"][0]["message"]
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
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> tuple[int, Any, bool]:
    """POST the payload as JSON with the webhook's headers and `Idempotency-Key` (the same key on every
    retry of one action run, so the receiver performs it once); the status, the JSON answer (or its text)
    and whether the body was cut at `max_body` bytes (then it is the text read so far: it goes into
    workflow history and the reply template, so it is never larger)."""
    headers = dict(webhook.get("headers") or {})
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    url = str(webhook["url"])
    answer = await post_json(client, url, dict(payload), headers=headers, timeout=timeout, max_body=max_body)
    _check(answer, url, "the webhook")
    if answer.truncated:
        return answer.status_code, answer.text, True
    try:
        return answer.status_code, json.loads(answer.body), False
    except ValueError:
        return answer.status_code, answer.text, False
