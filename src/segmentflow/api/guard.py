"""The API's front door, a plain ASGI middleware: before an API request reaches FastAPI (which reads and
parses the whole body before any dependency runs), it refuses a client over its limit of failed
authentications (429), checks the Bearer token (401), and then lets the body stream through a size limit
(413 on `Content-Length`, or once the counted chunks pass it), so no unauthenticated or oversized body is
ever buffered.

What is not the API is left alone: the public paths (`/healthz`, the OpenAPI schema and docs) get the body
limit but no token check, and a prefix such as the web console's `/ui` gets neither (it has its own cookie
sessions and sets its own limits)."""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

import sqlalchemy as sa
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from segmentflow.services.keys import VerifiedKey

__all__ = ["ApiGuard", "AuthFailureLimiter", "Authenticator", "verified_key"]

#: Checks a presented token: the live key it belongs to, or None.
Authenticator = Callable[[str], Awaitable[VerifiedKey | None]]

_STATE_KEY = "segmentflow.api_key"


def verified_key(scope: Scope) -> VerifiedKey | None:
    """The key the guard verified for this request (None: the request did not pass the guard)."""
    key: VerifiedKey | None = scope.get("state", {}).get(_STATE_KEY)
    return key


class AuthFailureLimiter:
    """In-process count of failed authentications per client address, in fixed windows: the `limit`-th
    failure within `window` seconds of a client's first one blocks it until that window ends. Clients are
    kept in the order their windows opened, so expired ones are dropped from the front, and at most
    `max_clients` are tracked (the oldest window goes first): memory stays bounded whatever the number of
    addresses an attacker uses. `limit` 0 turns it off."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()  # client -> (opened, failures)

    def _prune(self, now: float) -> None:
        while self._windows:
            opened, _ = next(iter(self._windows.values()))
            if now - opened < self.window and len(self._windows) <= self._max_clients:
                return
            self._windows.popitem(last=False)

    def retry_after(self, client: str) -> int | None:
        """Whole seconds until `client` may try again, or None when it is not blocked."""
        if self.limit == 0:
            return None
        now = self._clock()
        self._prune(now)
        opened, failures = self._windows.get(client, (now, 0))
        if failures < self.limit:
            return None
        return max(1, math.ceil(opened + self.window - now))

    def record_failure(self, client: str) -> None:
        if self.limit == 0:
            return
        now = self._clock()
        self._prune(now)
        opened, failures = self._windows.get(client, (now, 0))
        self._windows[client] = (opened, failures + 1)  # a new client goes last: its window opens now
        self._prune(now)


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            token = credentials.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


async def _answer(send: Send, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class ApiGuard:
    """See the module docstring. `larger_bodies` maps (method, path) of the import endpoints to their own
    body limit; `public_paths` need no token; paths under an `unguarded_prefixes` entry pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticator,
        limiter: AuthFailureLimiter,
        max_body_bytes: int,
        larger_bodies: Mapping[tuple[str, str], int],
        public_paths: Collection[str],
        unguarded_prefixes: Collection[str] = (),
    ) -> None:
        self.app = app
        self._authenticate = authenticate
        self._limiter = limiter
        self._public = frozenset(public_paths)
        self._unguarded = tuple(p.rstrip("/") for p in unguarded_prefixes)
        self._default = RequestBodyLimitMiddleware(app, max_body_bytes)
        self._larger = {
            route: RequestBodyLimitMiddleware(app, limit) for route, limit in larger_bodies.items()
        }

    def _is_unguarded(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self._unguarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # served under a prefix (`--root-path`): match the app's paths
            path = path[len(root) :] or "/"
        if self._is_unguarded(path):
            await self.app(scope, receive, send)
            return
        if path not in self._public:  # unknown paths too: the guard runs before routing
            key = await self._check(scope, send)
            if key is None:
                return
            scope.setdefault("state", {})[_STATE_KEY] = key
        limited = self._larger.get((scope["method"], path), self._default)
        await limited(scope, receive, send)

    async def _check(self, scope: Scope, send: Send) -> VerifiedKey | None:
        """The request's verified key, or None once a refusal has been sent."""
        client: Any = scope.get("client")
        address = str(client[0]) if client else "-"
        wait = self._limiter.retry_after(address)
        if wait is not None:
            detail = f"too many failed authentications from this client: retry in {wait} s"
            await _answer(send, 429, detail, {"Retry-After": str(wait)})
            return None
        token = _bearer_token(scope)
        try:
            key = await self._authenticate(token) if token is not None else None
        except sa.exc.OperationalError:
            await _answer(send, 503, "the database is unavailable")
            return None
        if key is None:
            self._limiter.record_failure(address)
            detail = "missing Bearer token" if token is None else "unknown or revoked API key"
            await _answer(send, 401, detail, {"WWW-Authenticate": "Bearer"})
        return key
