"""The activities' shared httpx clients: one per event loop, opened on first use, and opened again once
closed, so a client closed when one worker stopped is never used by the next call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import httpx

__all__ = ["HttpClients"]


class HttpClients:
    """httpx clients of one activity class. A client's pool is bound to the event loop it was first used
    on, so each loop gets its own; `aclose` closes them all (a later call opens a new one)."""

    def __init__(self) -> None:
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}

    def get(self, make: Callable[[], httpx.AsyncClient]) -> httpx.AsyncClient:
        """This loop's client, made with `make` when there is none or it has been closed."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            client = self._clients[loop] = make()
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        current = asyncio.get_running_loop()
        for loop, client in clients.items():
            if loop is current:
                await client.aclose()
            elif loop.is_running():  # closed on its own loop (another thread), where its connections live
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop)
            # A client of a loop no longer running is dropped: its connections went with that loop.
