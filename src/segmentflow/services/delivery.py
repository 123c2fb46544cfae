"""Channels over httpx: the `webhook` channel POSTs JSON with an `Idempotency-Key` header.

"Exactly once" is a contract between two parties. Our half: a send row unique per (enrollment, step) is
committed before the provider is called, the key sent is derived from that row and never changes, a row
marked sent is never sent again, and a pending row (we crashed after writing it, maybe after the provider
got it) is sent again with the same key. The provider's half: a request repeating an `Idempotency-Key` it
has already accepted is acknowledged without a second delivery (as Stripe's, Postmark's and most webhook
receivers' APIs do). The tests' local HTTP server records every request and deduplicates by that header,
and they check that each member got each step exactly once after the worker was killed mid-batch.

Outcomes: 2xx sent; 4xx (but 408 and 429) failed for good with the response recorded; 5xx, 408, 429,
timeouts and connection errors are retried here with exponential backoff, then reported as `retry` so the
caller reschedules the send (same row, same key) instead of blocking the rest of the batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import httpx

__all__ = ["Delivery", "post_webhook"]

_TRANSIENT_STATUS = frozenset({408, 425, 429})
_RECORDED_BODY = 2000


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
) -> Delivery:
    """POST `payload` as JSON to `url` with the `Idempotency-Key` header, retrying transient failures up
    to `attempts` times (waiting `backoff`, then twice that, ...)."""
    last = Delivery("retry")
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
        try:
            response = await client.post(url, json=payload, headers={"Idempotency-Key": idempotency_key})
        except httpx.TransportError as exc:  # timeouts, refused connections, resets
            last = Delivery("retry", None, f"{type(exc).__name__}: {exc}"[:_RECORDED_BODY])
            continue
        code = response.status_code
        if 200 <= code < 300:
            return Delivery("sent", code, None)
        text = response.text[:_RECORDED_BODY]
        if 400 <= code < 500 and code not in _TRANSIENT_STATUS:
            return Delivery("failed", code, text)
        last = Delivery("retry", code, text)
    return last
