"""The composition root of the HTTP API: `create_app(settings)` builds the engine, routers, error handlers
and metrics. Nothing is created at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from segmentflow.api import contacts, events, health, memberships, messages, reports, segments, sequences, sla
from segmentflow.api.errors import document_body_errors, install_error_handlers
from segmentflow.api.fast_check import CheckFastPath
from segmentflow.api.guard import ApiGuard, Authenticator, AuthFailureLimiter
from segmentflow.api.key_cache import KeyCache
from segmentflow.api.metrics import HttpMetrics
from segmentflow.db.async_pg import AsyncReadPool
from segmentflow.db.engine import make_engine, migrate, normalize_url
from segmentflow.services.keys import VerifiedKey, verify_token
from segmentflow.services.membership import (
    MembershipCheck,
    UnknownContactError,
    UnknownSegmentError,
    peek_membership,
    peek_membership_pg,
)
from segmentflow.services.segments import SegmentIndexCache
from segmentflow.settings import Settings

__all__ = ["create_app"]

_DESCRIPTION = """Contact segments in LaunchDarkly's rule model, with memberships precomputed into SQL.

Every endpoint but `/healthz` needs `Authorization: Bearer <token>` (from `segmentflow keys create`) with
the scope it names: 401 for a missing or unknown token, 403 for a token without the scope. The token is
checked before the body is read; bodies over the limit get 413, and a client with too many 401s gets 429
with `Retry-After`."""

#: The import endpoints: they take whole files, so they get `Settings.max_import_body_bytes`.
IMPORT_ROUTES = (
    ("POST", "/messages/actions"),
    ("POST", "/messages/instructions"),
    ("PUT", "/sla/policies"),
    ("POST", "/events"),
)
#: Paths of the web console, which has its own sessions and limits: the API guard leaves them alone.
CONSOLE_PREFIX = "/ui"


#: Requests using the database at once, readers and writers apart (segment writers queue on their lock
#: anyway, and must not take every connection from the readers). Each admitted request holds one
#: connection, and the pool has one for each, so none ever waits for a connection while it holds the event
#: loop or a worker thread (which could otherwise deadlock: the waiter blocking those who would release).
READ_SLOTS = 8
WRITE_SLOTS = 4
#: How long a verified API key is trusted without reading it again: a revocation (by any process) takes
#: effect within this time (`segmentflow.api.key_cache`).
KEY_CACHE_SECONDS = 0.5


def _engine(url: str) -> Engine:
    parsed = sa.engine.make_url(normalize_url(url))
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return make_engine(url)  # one shared connection: no pool to size
    # A connection for each admitted request; the overflow is a margin, not relied on. No ping before each
    # checkout (a round trip per request): after a database restart, the first request to find a dead
    # connection gets a 503 and SQLAlchemy then discards the whole pool, so one request pays, not all.
    return make_engine(url, pool_size=READ_SLOTS + WRITE_SLOTS, max_overflow=4, pool_pre_ping=False)


def _admission(app: FastAPI) -> None:
    """Fresh semaphores, bound to the loop that serves the app."""
    app.state.read_slots = asyncio.Semaphore(READ_SLOTS)
    app.state.write_slots = asyncio.Semaphore(WRITE_SLOTS)


def _verify(engine: Engine, token: str) -> VerifiedKey | None:
    # One read in autocommit: on PostgreSQL one round trip instead of BEGIN, SELECT and ROLLBACK.
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection,
        Session(bind=connection) as session,
    ):
        return verify_token(session=session, token=token)


def _authenticator(app: FastAPI) -> Authenticator:
    """A token proved less than `KEY_CACHE_SECONDS` ago is taken from the app's key cache, on the loop;
    others are checked in the threadpool, each under one of the app's read slots (one connection)."""

    async def authenticate(token: str) -> VerifiedKey | None:
        cache: KeyCache = app.state.key_cache
        key = cache.get(token)
        if key is not None:
            return key
        read_at = cache.now()  # before the read: its answer is trusted no longer than the TTL after it began
        async with app.state.read_slots:
            key = await run_in_threadpool(_verify, app.state.engine, token)
        if key is not None:
            cache.put(token, key, read_at=read_at)
        return key

    return authenticate


def _peek(engine: Engine, segment_ref: str, contact_key: str) -> MembershipCheck | None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        try:
            return peek_membership(db=connection, segment_ref=segment_ref, contact_key=contact_key)
        except (UnknownSegmentError, UnknownContactError, sa.exc.SQLAlchemyError):
            return None  # the route reports it


def _check_reader(app: FastAPI) -> Callable[[str, str], Awaitable[MembershipCheck | None]]:
    """The fast path's read, under one of the app's read slots: on PostgreSQL on the loop, over the app's
    `AsyncReadPool` (open while the app runs); otherwise one autocommit read in the threadpool."""

    async def read(segment_ref: str, contact_key: str) -> MembershipCheck | None:
        pool: AsyncReadPool | None = app.state.read_pool
        async with app.state.read_slots:
            if pool is None:
                return await run_in_threadpool(_peek, app.state.engine, segment_ref, contact_key)
            try:
                async with pool.connection() as connection:
                    return await peek_membership_pg(
                        connection=connection, segment_ref=segment_ref, contact_key=contact_key
                    )
            except psycopg.Error:
                return None  # the route tries again through the engine, and reports what fails

    return read


def _fast_check(app: FastAPI) -> None:
    """The check's fast path (`segmentflow.api.fast_check`), just inside the guard: added before it."""
    routes = [r for r in memberships.router.routes if isinstance(r, APIRoute)]
    [check] = [r for r in routes if r.endpoint is memberships.check_contact]
    app.add_middleware(
        CheckFastPath, route=check, earlier=routes[: routes.index(check)], read=_check_reader(app)
    )


def _guard(app: FastAPI, settings: Settings) -> None:
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        ApiGuard,
        authenticate=_authenticator(app),
        limiter=AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window.total_seconds()),
        max_body_bytes=settings.max_body_bytes,
        larger_bodies={route: settings.max_import_body_bytes for route in IMPORT_ROUTES},
        public_paths=["/healthz", *(path for path in docs if path)],
        unguarded_prefixes=[CONSOLE_PREFIX],
    )


def create_app(settings: Settings, *, fast_check: bool = True) -> FastAPI:
    """The API over `settings.database_url`; the schema is migrated when the app starts. `fast_check=False`
    leaves the membership check to its route alone (the same answers, slower: bench/api.py's peer)."""
    engine = _engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, engine)  # may wait on a lock: not on the loop
        _admission(app)
        if engine.dialect.name == "postgresql":
            app.state.read_pool = AsyncReadPool(engine, READ_SLOTS)
        try:
            yield
        finally:
            pool, app.state.read_pool = app.state.read_pool, None
            if pool is not None:
                await pool.close()
            engine.dispose()

    app = FastAPI(title="segmentflow", version="0.1.0", description=_DESCRIPTION, lifespan=lifespan)
    registry = CollectorRegistry()
    app.state.engine = engine
    app.state.egress = settings.egress_policy()
    app.state.metrics_registry = registry
    app.state.segment_index = SegmentIndexCache()
    app.state.key_cache = KeyCache(KEY_CACHE_SECONDS)
    app.state.template_limits = settings.template_limits()
    app.state.read_pool = None  # the check's connections on PostgreSQL, while the app runs (lifespan)
    _admission(app)
    if fast_check:
        _fast_check(app)
    _guard(app, settings)
    app.add_middleware(HttpMetrics, registry=registry)  # added last: outermost, so it counts refusals too
    install_error_handlers(app)
    # memberships before segments: its fixed paths win over /{segment_id}
    for module in (health, memberships, segments, contacts, sla, messages, sequences):
        app.include_router(document_body_errors(module.router))
    # Reporting: conversation events in, the segment report out (issue 14).
    for module in (events, reports):
        app.include_router(document_body_errors(module.router))

    # The operator console (/ui/): its own routes, static files, headers and error pages. Imported here:
    # the console's pages use this package's dependencies.
    from segmentflow.console import install_console

    install_console(app, settings)
    return app
