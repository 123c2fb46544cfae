"""A small pool of asynchronous psycopg connections in autocommit, kept beside an engine's own pool, for
reads served on the event loop itself (the API's membership check on PostgreSQL): no worker thread, no
thread switch per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy.engine import Engine

from segmentflow.db.engine import psycopg_connect_kwargs

__all__ = ["AsyncReadPool"]


class AsyncReadPool:
    """Connections to `engine`'s PostgreSQL database, in autocommit, opened on first need and kept (at
    most `size` idle) for the next borrower. It does not bound how many are borrowed at once: callers do
    (the API under its read slots). A connection that fails, or whose borrower is cancelled, is closed,
    never lent again. Used from one event loop (no lock)."""

    def __init__(self, engine: Engine, size: int) -> None:
        self._kwargs = psycopg_connect_kwargs(engine)
        self._size = size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """How many connections wait for a borrower."""
        return len(self._idle)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        connection = self._idle.pop() if self._idle else await self._connect()
        try:
            yield connection
        except BaseException:
            with anyio.CancelScope(shield=True):
                await connection.close()
            raise
        idle = not connection.closed and connection.info.transaction_status == TransactionStatus.IDLE
        if idle and not self._closed and len(self._idle) < self._size:
            self._idle.append(connection)
        else:
            await connection.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(**self._kwargs, autocommit=True)

    async def close(self) -> None:
        """Close the idle connections (a borrowed one is closed when it comes back, or by its borrower)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.close()
