"""Channels: the `webhook` channel POSTs JSON with an `Idempotency-Key` header; the `email` channel mails
through SMTP. Both connect only through `services.egress` (the egress policy, response-size cap).

"Exactly once" is a contract between two parties. Our half: a send row unique per (enrollment, step) is
committed before the provider is called, the key sent is derived from that row and never changes, a row
marked sent is never sent again, and a pending row (we crashed after writing it, maybe after the provider
got it) is sent again with the same key. The provider's half: a request repeating an `Idempotency-Key` it
has already accepted is acknowledged without a second delivery (as Stripe's, Postmark's and most webhook
receivers' APIs do). The tests' local HTTP server records every request and deduplicates by that header,
and they check that each member got each step exactly once after the worker was killed mid-batch.

Outcomes: 2xx sent; 4xx other than 408, 425 and 429 failed for good with the response recorded (its first
2,000 characters; the body is read up to `SEGMENTFLOW_MAX_RESPONSE_BYTES` and marked `[truncated]` past
that); a 3xx failed for good naming the redirect (never followed); an egress refusal failed for good with
its reason; 5xx, 408, 425, 429, timeouts, refused connections, unresolvable hosts and malformed or
oversized answers are retried here with exponential backoff (transport errors only, when the caller paces
requests), then reported as `retry` so the caller reschedules the send (same row, same key) instead of
blocking the rest of the batch. The transport raises only `httpx.TransportError` subclasses.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
import httpx
from email_validator import EmailNotValidError, validate_email

from segmentflow.policies.egress import EgressPolicy
from segmentflow.services.egress import (
    DEFAULT_MAX_RESPONSE_BYTES,
    EgressRefusedError,
    Resolver,
    connect_socket,
    egress_client,
    post_json,
    redirect_refusal,
    system_resolver,
)

__all__ = [
    "Delivery",
    "SmtpServer",
    "post_webhook",
    "recipient_refusal",
    "send_email",
    "transient_status",
    "webhook_client",
]

_TRANSIENT_STATUS = frozenset({408, 425, 429})
_RECORDED_BODY = 2000


def transient_status(code: int) -> bool:
    """Whether an HTTP error status is worth retrying: 5xx, 408, 425 and 429 are; other 4xx are the
    caller's problem and permanent. (The one classification of webhook and other HTTP answers.)"""
    return code >= 500 or code in _TRANSIENT_STATUS


@dataclass(frozen=True, slots=True)
class Delivery:
    outcome: Literal["sent", "failed", "retry"]
    status_code: int | None = None
    response: str | None = None


async def post_webhook(
    client: httpx.AsyncClient,
    *,
    url: str,
    payload: dict[str, Any],
    idempotency_key: str,
    attempts: int = 3,
    backoff: float = 0.2,
    retry_status: bool = True,
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Delivery:
    """POST `payload` as JSON to `url` with the `Idempotency-Key` header, retrying transient failures up
    to `attempts` times (waiting `backoff`, then twice that, ...). With `retry_status=False` only
    transport errors are retried here; a transient status (5xx, 408, 425, 429) is reported as `retry` at
    once, so a caller pacing its requests (a rate limit) re-paces the next try instead of this function
    sending it outside the pace. An egress refusal and a 3xx (never followed) fail at once, for good;
    the answer's body is read up to `max_body` bytes."""
    last = Delivery("retry")
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        try:
            answer = await post_json(
                client, url, payload, headers={"Idempotency-Key": idempotency_key}, max_body=max_body
            )
        except EgressRefusedError as exc:
            return Delivery("failed", None, str(exc)[:_RECORDED_BODY])
        except httpx.TransportError as exc:  # timeouts, refused connections, unknown hosts, resets
            last = Delivery("retry", None, f"{type(exc).__name__}: {exc}"[:_RECORDED_BODY])
            continue
        except httpx.InvalidURL as exc:
            return Delivery("failed", None, f"not a URL: {exc}"[:_RECORDED_BODY])
        code = answer.status_code
        if 200 <= code < 300:
            return Delivery("sent", code, None)
        redirect = redirect_refusal(answer, url)
        if redirect is not None:
            return Delivery("failed", code, redirect[:_RECORDED_BODY])
        text = answer.summary(_RECORDED_BODY)
        if 400 <= code < 500 and not transient_status(code):
            return Delivery("failed", code, text)
        last = Delivery("retry", code, text)
        if not retry_status:
            break
    return last


def webhook_client(
    *,
    policy: EgressPolicy,
    max_connections: int = 64,
    timeout: float = 10.0,
    max_body: int = DEFAULT_MAX_RESPONSE_BYTES,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The httpx client the webhook channel sends with: `services.egress.egress_client` (an
    `EgressTransport` under `policy` unless a test gives a stand-in transport)."""
    return egress_client(
        policy=policy,
        max_connections=max_connections,
        timeout=timeout,
        max_body=max_body,
        transport=transport,
    )


@dataclass(frozen=True, slots=True)
class SmtpServer:
    """Where the email channel sends, and the egress policy its host is checked against (on the address
    actually connected to, as for HTTP)."""

    host: str
    port: int = 25
    sender: str = "segmentflow@localhost"
    username: str | None = None
    password: str | None = None
    start_tls: bool = False
    timeout: float = 10.0
    policy: EgressPolicy = field(default_factory=EgressPolicy)
    resolve: Resolver = system_resolver


def recipient_refusal(to: object) -> str | None:
    """Why `to` is not exactly one email address (None: it is). A list (`"a@x, b@y"`), a display name,
    CR/LF or any other header syntax is refused: one contact's send must reach one mailbox."""
    if not isinstance(to, str) or not to.strip():
        return "no recipient address"
    if any(c in to for c in "\r\n\x00"):
        return "the recipient address contains CR, LF or NUL"
    try:
        validate_email(to.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return f"not exactly one email address ({to[:200]!r}): {exc}"
    return None


async def send_email(
    smtp: SmtpServer | None,
    *,
    to: str,
    subject: str,
    body: str,
    idempotency_key: str,
    attempts: int = 3,
    backoff: float = 0.2,
) -> Delivery:
    """Mail `body` to `to` through `smtp`. SMTP has no idempotency contract: the key goes out as the
    `Message-ID` (`<key@segmentflow>`, which mail stores and many receivers deduplicate on) and as an
    `Idempotency-Key` header, so after a crash between the server's acceptance and our record the same
    message can be delivered twice unless the receiving side deduplicates. 5xx replies fail the send;
    4xx replies and connection errors are retried. A recipient that is not exactly one address, a subject
    with CR/LF, and an SMTP host the egress policy refuses fail the send for good (never retried)."""
    if smtp is None:
        return Delivery("failed", None, "no SMTP server configured (SEGMENTFLOW_SMTP_HOST)")
    refusal = recipient_refusal(to)
    if refusal is not None:
        return Delivery("failed", None, refusal[:_RECORDED_BODY])
    if any(c in subject for c in "\r\n"):
        return Delivery("failed", None, "the subject contains CR or LF")
    message = EmailMessage()
    try:
        message["From"] = smtp.sender
        message["To"] = to.strip()
        message["Subject"] = subject
        message["Message-ID"] = f"<{idempotency_key}@segmentflow>"
        message["Idempotency-Key"] = idempotency_key
        message.set_content(body)
    except (ValueError, TypeError) as exc:  # header syntax the email package refuses: not worth a retry
        return Delivery("failed", None, f"{type(exc).__name__}: {exc}"[:_RECORDED_BODY])
    last = Delivery("retry")
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        try:
            sock = await connect_socket(
                smtp.host, smtp.port, policy=smtp.policy, resolve=smtp.resolve, timeout=smtp.timeout
            )
        except EgressRefusedError as exc:
            return Delivery("failed", None, f"SMTP host {smtp.host}: {exc}"[:_RECORDED_BODY])
        except (OSError, TimeoutError) as exc:
            last = Delivery("retry", None, f"{type(exc).__name__}: {exc}"[:_RECORDED_BODY])
            continue
        try:
            await aiosmtplib.send(
                message,
                hostname=smtp.host,  # TLS verifies this name; the socket is already at a checked address
                sock=sock,
                username=smtp.username,
                password=smtp.password,
                start_tls=smtp.start_tls,
                timeout=smtp.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [reply.code for reply in exc.recipients]
            code = codes[0] if codes else None
            outcome: Literal["failed", "retry"] = "failed" if code is None or code >= 500 else "retry"
            last = Delivery(outcome, code, str(exc)[:_RECORDED_BODY])
        except aiosmtplib.SMTPResponseException as exc:
            outcome = "failed" if exc.code >= 500 else "retry"
            last = Delivery(outcome, exc.code, exc.message[:_RECORDED_BODY])
        except (aiosmtplib.SMTPException, OSError) as exc:
            last = Delivery("retry", None, f"{type(exc).__name__}: {exc}"[:_RECORDED_BODY])
        else:
            return Delivery("sent", 250, None)
        finally:
            sock.close()
        if last.outcome == "failed":
            return last
    return last
