"""The API guard: a request without a valid token is refused before a byte of its body is read; a body over
the limit gets 413 having been read no further than the limit (on `Content-Length`, or counted as it
streams); import endpoints take larger bodies; and a client past its limit of 401s gets 429 with
`Retry-After`. The body tests drive the ASGI app directly with a `receive` that counts what it hands over."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from segmentflow.api import create_app
from segmentflow.api.guard import AuthFailureLimiter
from segmentflow.settings import Settings
from tests.api.conftest import bearer

MIB = 1024 * 1024
CHUNK = 64 * 1024
NINE_MB = 9_000_000


@dataclass
class Exchange:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    read: int = 0  # body bytes the app pulled through `receive`


async def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    token: str | None,
    size: int,
    content_length: bool,
    root_path: str = "",
) -> Exchange:
    """`method path` with a `size`-byte JSON-ish body offered in 64 KiB chunks."""
    exchange = Exchange()
    headers = [(b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if content_length:
        headers.append((b"content-length", str(size).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers,
        "client": ("192.0.2.1", 40000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        if exchange.read >= size:
            return {"type": "http.disconnect"}
        chunk = b" " * min(CHUNK, size - exchange.read)
        exchange.read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": exchange.read < size}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")

    await app(scope, receive, send)
    return exchange


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("token", [None, "sf_000000000000_" + "A" * 43, "not-a-token"])
async def test_a_9mb_body_without_a_valid_token_is_refused_before_any_of_it_is_read(
    app: FastAPI, token: str | None, content_length: bool
) -> None:
    exchange = await call(
        app, "POST", "/contacts/segments", token=token, size=NINE_MB, content_length=content_length
    )
    assert exchange.status == 401
    assert exchange.headers["www-authenticate"] == "Bearer"
    assert exchange.read == 0


async def test_a_declared_9mb_body_is_413_before_any_of_it_is_read(
    app: FastAPI, tokens: dict[str, str]
) -> None:
    exchange = await call(
        app, "POST", "/contacts/segments", token=tokens["all"], size=NINE_MB, content_length=True
    )
    assert exchange.status == 413
    assert exchange.read == 0


async def test_a_streamed_9mb_body_is_413_once_past_the_limit(app: FastAPI, tokens: dict[str, str]) -> None:
    exchange = await call(
        app, "POST", "/contacts/segments", token=tokens["all"], size=NINE_MB, content_length=False
    )
    assert exchange.status == 413
    assert json.loads(exchange.body) == {"detail": "Content Too Large"}
    assert MIB < exchange.read <= MIB + CHUNK  # read up to the limit and one chunk past it, no further


@pytest.fixture
def small_client(engine: Engine, database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url, max_body_bytes=1000, max_import_body_bytes=3 * MIB))
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def test_the_body_limits_are_settings_and_imports_get_the_larger_one(
    small_client: TestClient, tokens: dict[str, str]
) -> None:
    auth = bearer(tokens["all"])
    padded = {"key": "padded", "description": "x" * 2000}
    assert small_client.post("/contacts/segments", json=padded, headers=auth).status_code == 413
    assert small_client.post("/contacts/segments", json={"key": "small"}, headers=auth).status_code == 201
    big_import = [{"key": "big", "description": "x" * (2 * MIB)}]
    response = small_client.post("/messages/actions", json=big_import, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["imported"] == ["big"]
    too_big = [{"key": "big", "description": "x" * (4 * MIB)}]
    assert small_client.post("/messages/actions", json=too_big, headers=auth).status_code == 413


def test_public_paths_need_no_token(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/no/such/path").status_code == 401  # the guard runs before routing


async def test_paths_are_matched_below_the_root_path(app: FastAPI) -> None:
    def get(path: str) -> Any:
        return call(app, "GET", path, token=None, size=0, content_length=False, root_path="/api")

    assert (await get("/api/healthz")).status == 200
    assert (await get("/api/contacts/segments")).status == 401


# --- the limit on failed authentications ---------------------------------------------------------------


@pytest.fixture
def strict_app(engine: Engine, database_url: str) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=database_url, auth_failure_limit=3))
    yield app
    app.state.engine.dispose()


def test_a_client_past_its_limit_of_401s_gets_429_with_retry_after(
    strict_app: FastAPI, tokens: dict[str, str]
) -> None:
    with (
        TestClient(strict_app, client=("198.51.100.7", 1)) as attacker,
        TestClient(strict_app, client=("198.51.100.8", 1)) as bystander,
    ):
        forged = tokens["all"][:-4] + "AAAA"
        codes = [attacker.get("/contacts/segments", headers=bearer(forged)).status_code for _ in range(3)]
        assert codes == [401, 401, 401]
        blocked = attacker.get("/contacts/segments", headers=bearer(tokens["all"]))
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["Retry-After"]) <= 60
        assert "retry in" in blocked.json()["detail"]
        assert attacker.get("/contacts/segments").status_code == 429  # no token: still refused
        assert attacker.get("/healthz").status_code == 200  # public paths stay open
        assert bystander.get("/contacts/segments", headers=bearer(tokens["all"])).status_code == 200


def test_the_limit_of_401s_can_be_turned_off(engine: Engine, database_url: str) -> None:
    app = create_app(Settings(database_url=database_url, auth_failure_limit=0))
    with TestClient(app) as client:
        assert {client.get("/contacts/segments").status_code for _ in range(30)} == {401}
    app.state.engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_blocked_client_may_try_again_when_its_window_ends() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(2, 60, clock=clock)
    limiter.record_failure("a")
    clock.now += 30
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")
    assert limiter.retry_after("a") == 30  # the window opened at the first failure
    assert limiter.retry_after("b") is None
    clock.now += 29.5
    assert limiter.retry_after("a") == 1
    clock.now += 0.5
    assert limiter.retry_after("a") is None
    limiter.record_failure("a")  # a new window
    assert limiter.retry_after("a") is None


def test_the_limiter_tracks_a_bounded_number_of_clients() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(1, 60, clock=clock, max_clients=100)
    for i in range(1000):
        limiter.record_failure(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._windows) == 100
    assert limiter.retry_after("10.0.3.231") == 60  # the newest are kept
    assert limiter.retry_after("10.0.0.0") is None
