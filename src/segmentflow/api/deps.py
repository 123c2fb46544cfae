"""Request dependencies as `Annotated` aliases: the request's session (one transaction, committed when the
endpoint returns, rolled back when it raises) and the Bearer API key holding a scope.

SQLAlchemy here is synchronous, so no database work runs on the event loop: a request that waits on the
database (SQLite's write lock held by another process, a slow PostgreSQL) holds one worker thread, never
the loop, and `/healthz` and every other request keep being answered. The endpoints given a session are
plain `def` (FastAPI runs them in its threadpool). `ReadSession` is created on the loop, where that costs
nothing (a session connects on its first statement, in the endpoint's thread), and committed and closed in
the threadpool; `WriteSession` is opened in the threadpool. Either first takes one of the app's read or
write slots (see `segmentflow.api.app`), so a request holds one connection at most and never waits for one.

The token itself is checked before FastAPI reads the body, by the `ApiGuard` middleware
(`segmentflow.api.guard`, in its own short session, or from the app's key cache for a key verified in the
last 0.5 s: `segmentflow.api.key_cache`): the key dependencies only look up the key it verified
and check its scope, with no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from segmentflow.api.guard import verified_key
from segmentflow.policies.egress import EgressPolicy
from segmentflow.services.keys import Scope, VerifiedKey
from segmentflow.services.segments import SegmentIndexCache

__all__ = [
    "CONTACT_ID_MAX",
    "SEGMENT_REF_MAX",
    "AnyKey",
    "ContactId",
    "ContactsKey",
    "Egress",
    "EventsWriteKey",
    "IndexCache",
    "MessagesReadKey",
    "MessagesWriteKey",
    "ReadEngine",
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


def _egress(request: Request) -> EgressPolicy:
    policy: EgressPolicy = request.app.state.egress
    return policy


#: The egress policy (`SEGMENTFLOW_EGRESS_ALLOW`) that URLs written through the API are checked against.
Egress = Annotated[EgressPolicy, Depends(_egress)]

#: One of the app's read slots, for an endpoint using a connection of its own (`/healthz`).
ReadSlot = Annotated[None, Depends(_read_slot, scope="function")]


async def _read_engine(request: Request) -> AsyncIterator[Engine]:
    async with request.app.state.read_slots:
        yield request.app.state.engine


#: The app's engine, holding one of its read slots until the endpoint returns: for an endpoint managing its
#: own connection and transactions, one connection at a time (the membership check).
ReadEngine = Annotated[Engine, Depends(_read_engine, scope="function")]


def _write_session(
    request: Request, _slot: Annotated[None, Depends(_write_slot, scope="function")]
) -> Iterator[Session]:
    engine: Engine = request.app.state.engine
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def _commit(session: Session) -> None:
    with session:
        session.commit()


async def _read_session(request: Request) -> AsyncIterator[Session]:
    # Takes its read slot itself rather than through `ReadSlot`: one dependency less on the hot path.
    engine: Engine = request.app.state.engine
    async with request.app.state.read_slots:
        session = Session(engine, expire_on_commit=False)  # no I/O yet: it connects on first use
        try:
            yield session
        except BaseException:
            with anyio.CancelScope(shield=True):  # a cancelled request still returns its connection
                await run_in_threadpool(session.close)  # rolls back
            raise
        await run_in_threadpool(_commit, session)


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


def _authenticate(request: Request) -> VerifiedKey:
    key = verified_key(request.scope)
    if key is None:  # only on a route the guard does not cover: refuse rather than trust
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing Bearer token", headers=_UNAUTHORIZED)
    return key


def _require(key: VerifiedKey, scope: Scope) -> VerifiedKey:
    if scope not in key.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f'this API key lacks the "{scope}" scope')
    return key


async def _any_key(request: Request, _credentials: Credentials) -> VerifiedKey:
    return _authenticate(request)


def _holding(scope: Scope) -> Callable[[Request, Credentials], Awaitable[VerifiedKey]]:
    # `_credentials` is unused (the guard read the header): it declares the Bearer scheme in the OpenAPI.
    async def require(request: Request, _credentials: Credentials) -> VerifiedKey:
        return _require(_authenticate(request), scope)

    return require


AnyKey = Annotated[VerifiedKey, Depends(_any_key)]
ReadKey = Annotated[VerifiedKey, Depends(_holding("segments:read"))]
WriteKey = Annotated[VerifiedKey, Depends(_holding("segments:write"))]
ContactsKey = Annotated[VerifiedKey, Depends(_holding("contacts:write"))]
SlaReadKey = Annotated[VerifiedKey, Depends(_holding("sla:read"))]
SlaWriteKey = Annotated[VerifiedKey, Depends(_holding("sla:write"))]
MessagesReadKey = Annotated[VerifiedKey, Depends(_holding("messages:read"))]
MessagesWriteKey = Annotated[VerifiedKey, Depends(_holding("messages:write"))]
SequencesReadKey = Annotated[VerifiedKey, Depends(_holding("sequences:read"))]
SequencesWriteKey = Annotated[VerifiedKey, Depends(_holding("sequences:write"))]
ReportsReadKey = Annotated[VerifiedKey, Depends(_holding("reports:read"))]
EventsWriteKey = Annotated[VerifiedKey, Depends(_holding("events:write"))]

#: The longest segment reference and contact key a path may carry (`SegmentRef`, `ContactId`).
SEGMENT_REF_MAX = 256
CONTACT_ID_MAX = 512

SegmentRef = Annotated[
    str,
    Path(pattern=_SEGMENT, max_length=SEGMENT_REF_MAX, description="The segment's UUID `id` or its `key`."),
]
ContactId = Annotated[
    str,
    Path(
        pattern=r"^[^\x00]+$",
        max_length=CONTACT_ID_MAX,
        description="The contact's fully-qualified key (a plain key for `user` contacts), percent-encoded; "
        "it may hold `/`.",
    ),
]


def now() -> datetime:
    return datetime.now(UTC)
