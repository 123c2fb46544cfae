"""Request dependencies as `Annotated` aliases: the request's session (one transaction, committed when the
endpoint returns, rolled back when it raises) and the Bearer API key holding a scope.

Two kinds of session, because SQLAlchemy here is synchronous, and each request holds one connection.
`ReadSession` is opened on the event loop: the `async` endpoints of the hot path (a membership check, a
segment, a page of rows) run their indexed reads right there, where one costs less than the hops to and
from a worker thread (bench/api.py measures it); a plain `def` endpoint given one (the report's aggregate)
still runs in the threadpool. `WriteSession` is opened in FastAPI's threadpool, and the write endpoints
(`def`, so also in the threadpool) use it for everything, the API key included, so the event loop never
waits on a write or a recompute. A key is checked in the request's own session: `ReadKey` and `AnyKey` in
its `ReadSession`, `WriteKey` and `ContactsKey` in its `WriteSession`. Either session first takes one of
the app's read or write slots (see `segmentflow.api.app`), so a request holds one connection at most and
never waits for one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.services.keys import Scope, VerifiedKey, verify_token
from segmentflow.services.segments import SegmentIndexCache

__all__ = [
    "AnyKey",
    "ContactId",
    "ContactsKey",
    "EventsWriteKey",
    "IndexCache",
    "MessagesReadKey",
    "MessagesWriteKey",
    "ReadKey",
    "ReadSession",
    "ReadSlot",
    "ReportsReadKey",
    "SegmentRef",
    "SequencesReadKey",
    "SequencesWriteKey",
    "SlaReadKey",
    "SlaWriteKey",
    "WriteKey",
    "WriteSession",
    "now",
]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `segmentflow keys create`; each endpoint names the scope it needs.",
)
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
# A segment reference is one path segment: no slash; and no NUL, which PostgreSQL text cannot hold.
_SEGMENT = r"^[^/\x00]+$"


async def _write_slot(request: Request) -> AsyncIterator[None]:
    async with request.app.state.write_slots:
        yield


async def _read_slot(request: Request) -> AsyncIterator[None]:
    async with request.app.state.read_slots:
        yield


#: One of the app's read slots, for an endpoint using a connection of its own (`/healthz`).
ReadSlot = Annotated[None, Depends(_read_slot, scope="function")]


def _write_session(
    request: Request, _slot: Annotated[None, Depends(_write_slot, scope="function")]
) -> Iterator[Session]:
    engine: Engine = request.app.state.engine
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


async def _read_session(request: Request) -> AsyncIterator[Session]:
    # Takes its read slot itself rather than through `ReadSlot`: one dependency less on the hot path.
    engine: Engine = request.app.state.engine
    async with request.app.state.read_slots:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session


# scope="function": the transaction commits when the endpoint returns, before the response is sent, so a
# client's next request sees the write.
WriteSession = Annotated[Session, Depends(_write_session, scope="function")]
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]


def _index_cache(request: Request) -> SegmentIndexCache:
    cache: SegmentIndexCache = request.app.state.segment_index
    return cache


#: The app's compiled segments, reloaded only when the stored segments change.
IndexCache = Annotated[SegmentIndexCache, Depends(_index_cache)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authenticate(session: Session, credentials: HTTPAuthorizationCredentials | None) -> VerifiedKey:
    if credentials is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing Bearer token", headers=_UNAUTHORIZED)
    key = verify_token(session=session, token=credentials.credentials)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=_UNAUTHORIZED)
    return key


def _require(key: VerifiedKey, scope: Scope) -> VerifiedKey:
    if scope not in key.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f'this API key lacks the "{scope}" scope')
    return key


async def _read_key(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _authenticate(session, credentials)


async def _segments_reader(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _require(_authenticate(session, credentials), "segments:read")


async def _sla_reader(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _require(_authenticate(session, credentials), "sla:read")


async def _sequences_reader(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _require(_authenticate(session, credentials), "sequences:read")


async def _messages_reader(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _require(_authenticate(session, credentials), "messages:read")


async def _reports_reader(session: ReadSession, credentials: Credentials) -> VerifiedKey:
    return _require(_authenticate(session, credentials), "reports:read")


def _writer(scope: Scope) -> Callable[[Session, HTTPAuthorizationCredentials | None], VerifiedKey]:
    def require(session: WriteSession, credentials: Credentials) -> VerifiedKey:
        return _require(_authenticate(session, credentials), scope)

    return require


AnyKey = Annotated[VerifiedKey, Depends(_read_key)]
ReadKey = Annotated[VerifiedKey, Depends(_segments_reader)]
WriteKey = Annotated[VerifiedKey, Depends(_writer("segments:write"))]
ContactsKey = Annotated[VerifiedKey, Depends(_writer("contacts:write"))]
SlaReadKey = Annotated[VerifiedKey, Depends(_sla_reader)]
SlaWriteKey = Annotated[VerifiedKey, Depends(_writer("sla:write"))]
MessagesReadKey = Annotated[VerifiedKey, Depends(_messages_reader)]
MessagesWriteKey = Annotated[VerifiedKey, Depends(_writer("messages:write"))]
SequencesReadKey = Annotated[VerifiedKey, Depends(_sequences_reader)]
SequencesWriteKey = Annotated[VerifiedKey, Depends(_writer("sequences:write"))]
ReportsReadKey = Annotated[VerifiedKey, Depends(_reports_reader)]
EventsWriteKey = Annotated[VerifiedKey, Depends(_writer("events:write"))]

SegmentRef = Annotated[
    str, Path(pattern=_SEGMENT, max_length=256, description="The segment's UUID `id` or its `key`.")
]
ContactId = Annotated[
    str,
    Path(
        pattern=r"^[^\x00]+$",
        max_length=512,
        description="The contact's fully-qualified key (a plain key for `user` contacts), percent-encoded; "
        "it may hold `/`.",
    ),
]


def now() -> datetime:
    return datetime.now(UTC)
