"""A background heartbeat for long activities, so a dead worker's attempt is noticed within the activity's
(short) heartbeat timeout whatever the body is doing: a database step in a thread, a slow provider call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

__all__ = ["HEARTBEAT_EVERY", "heartbeating"]

#: The longest gap between two background beats, in seconds (shorter for a short heartbeat timeout).
HEARTBEAT_EVERY = 5.0


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat (without details) every quarter of the heartbeat timeout, at most every
    `HEARTBEAT_EVERY` seconds, while the body runs (beats also carry cancellation to the activity)."""
    timeout = activity.info().heartbeat_timeout
    every = HEARTBEAT_EVERY if not timeout else max(0.1, min(HEARTBEAT_EVERY, timeout.total_seconds() / 4))

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
