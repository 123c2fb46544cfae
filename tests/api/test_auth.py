"""Bearer API keys: every endpoint x no token / wrong scope / right scope, unknown and revoked tokens, only a
hash stored, and the `segmentflow keys` commands."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import api_key_table
from segmentflow.services.keys import SCOPES, revoke_key
from tests.api.conftest import SEQUENCE, bearer
from tests.test_cli import run


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    scope: str | None  # None: any valid key
    path: str = ""  # the template filled in with seeded data
    json: Any = None

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


ENDPOINTS = [
    Endpoint("GET", "/contacts/segments", "segments:read"),
    Endpoint("GET", "/contacts/segments/{segment_id}", "segments:read", "/contacts/segments/vip"),
    Endpoint(
        "GET", "/contacts/segments/contacts/{contact_id}", "segments:read", "/contacts/segments/contacts/u1"
    ),
    Endpoint(
        "GET",
        "/contacts/segments/{segment_id}/contacts/{contact_id}",
        "segments:read",
        "/contacts/segments/vip/contacts/u1",
    ),
    Endpoint(
        "GET", "/contacts/segments/{segment_id}/members", "segments:read", "/contacts/segments/vip/members"
    ),
    Endpoint("GET", "/contacts/segments/changes", "segments:read"),
    Endpoint("GET", "/contacts/segments/report", "segments:read"),
    Endpoint("POST", "/contacts/segments", "segments:write", json={"key": "new"}),
    Endpoint(
        "PUT",
        "/contacts/segments/{segment_id}",
        "segments:write",
        "/contacts/segments/orgs",
        {"definition": {}},
    ),
    Endpoint(
        "PATCH",
        "/contacts/segments/{segment_id}",
        "segments:write",
        "/contacts/segments/vip",
        {"instructions": [{"kind": "updateName", "value": "V"}]},
    ),
    Endpoint("DELETE", "/contacts/segments/{segment_id}", "segments:write", "/contacts/segments/vip-org"),
    Endpoint("PUT", "/contacts/{contact_id}", "contacts:write", "/contacts/u7", {"key": "u7"}),
    Endpoint("DELETE", "/contacts/{contact_id}", "contacts:write", "/contacts/u3"),
    Endpoint("GET", "/metrics", None),
    Endpoint("GET", "/sla/policies", "sla:read"),
    Endpoint("PUT", "/sla/policies", "sla:write", json=[]),
    Endpoint(
        "POST",
        "/sla/select",
        "sla:read",
        json={"contactKey": "u1", "ticket": {"priority": "high", "createdAt": "2026-11-27T16:30:00Z"}},
    ),
    Endpoint("GET", "/sla/tickets/{ticket_id}/events", "sla:read", "/sla/tickets/t1/events"),
    Endpoint("GET", "/sla/report", "sla:read"),
    Endpoint("GET", "/messages/actions", "messages:read"),
    Endpoint("POST", "/messages/actions", "messages:write", json=[]),
    Endpoint("GET", "/messages/instructions", "messages:read"),
    Endpoint("POST", "/messages/instructions", "messages:write", json=[]),
    Endpoint("POST", "/messages/resolve", "messages:read", json={"contactKey": "u1"}),
    Endpoint("GET", "/messages/refusals", "messages:read"),
    Endpoint("GET", "/sequences", "sequences:read"),
    Endpoint("GET", "/sequences/{key}", "sequences:read", "/sequences/welcome"),
    Endpoint("PUT", "/sequences/{key}", "sequences:write", "/sequences/welcome", SEQUENCE),
    Endpoint("POST", "/sequences/{key}/launch", "sequences:write", "/sequences/welcome/launch"),
    Endpoint("POST", "/sequences/{key}/pause", "sequences:write", "/sequences/welcome/pause"),
    # Reporting (issue 14)
    Endpoint("POST", "/events", "events:write", json=[]),
    Endpoint(
        "GET",
        "/reports/segments",
        "reports:read",
        "/reports/segments?since=2026-01-01T00:00:00Z&until=2026-01-02T00:00:00Z",
    ),
]
MATRIX = [
    pytest.param(endpoint, token, id=f"{endpoint}-{token}")
    for endpoint in ENDPOINTS
    for token in ("none", "wrong-scope", "right-scope")
    if not (token == "wrong-scope" and endpoint.scope is None)  # any valid key may read the metrics
]


def test_the_matrix_covers_every_operation_but_health(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["paths"]
    operations = {(method.upper(), path) for path, item in schema.items() for method in item}
    assert operations - {(e.method, e.template) for e in ENDPOINTS} == {("GET", "/healthz")}


def call(client: TestClient, endpoint: Endpoint, headers: dict[str, str]) -> Any:
    path = endpoint.path or endpoint.template
    return client.request(endpoint.method, path, json=endpoint.json, headers=headers)


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize(("endpoint", "token"), MATRIX)
def test_scope_matrix(
    client: TestClient, make_token: Callable[..., str], endpoint: Endpoint, token: str
) -> None:
    if token == "none":
        response = call(client, endpoint, {})
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        return
    if token == "wrong-scope":
        assert endpoint.scope is not None
        others = [s for s in SCOPES if s != endpoint.scope]
        response = call(client, endpoint, bearer(make_token(*others)))
        assert response.status_code == 403
        assert endpoint.scope in response.json()["detail"]
        return
    response = call(client, endpoint, bearer(make_token(endpoint.scope or "segments:read")))
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer sf_000000000000_" + "A" * 43,  # well-formed, unknown
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
    ],
)
def test_unknown_or_malformed_tokens_are_401(client: TestClient, authorization: str) -> None:
    response = client.get("/contacts/segments", headers={"Authorization": authorization})
    assert response.status_code == 401


def test_a_token_with_a_wrong_secret_is_401(client: TestClient, tokens: dict[str, str]) -> None:
    token = tokens["segments:read"]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert client.get("/contacts/segments", headers=bearer(forged)).status_code == 401
    assert client.get("/contacts/segments", headers=bearer(token)).status_code == 200


def test_only_a_hash_of_the_token_is_stored(engine: Engine, tokens: dict[str, str]) -> None:
    token = tokens["segments:read"]
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(sa.select(api_key_table))]
    assert all(token not in str(row) for row in rows)
    assert hashlib.sha256(token.encode()).hexdigest() in {r["token_hash"] for r in rows}


def test_keys_create_list_revoke_through_the_command(
    capsys: pytest.CaptureFixture[str], client: TestClient, database_url: str
) -> None:
    db = ("--database-url", database_url)
    code, out, _ = run(
        capsys, *db, "keys", "create", "--scope", "segments:read", "--scope", "contacts:write", "--name", "ci"
    )
    assert code == 0
    token = out.strip().splitlines()[-1]
    assert client.get("/contacts/segments", headers=bearer(token)).status_code == 200
    assert client.post("/contacts/segments", json={"key": "k"}, headers=bearer(token)).status_code == 403
    key_id = token.split("_")[1]
    code, out, _ = run(capsys, *db, "keys", "list")
    assert code == 0 and key_id in out and "ci" in out and token not in out
    code, out, _ = run(capsys, *db, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    assert refused_within(client, token, seconds=1.0)


def refused_within(client: TestClient, token: str, *, seconds: float) -> bool:
    """Whether a request with `token` gets 401 within `seconds` (the app trusts a verified key 0.5 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.get("/contacts/segments", headers=bearer(token)).status_code == 401:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.usefixtures("seeded")
def test_a_revoked_key_is_refused_within_a_second_though_it_was_cached(
    client: TestClient, engine: Engine, make_token: Callable[..., str]
) -> None:
    token = make_token("segments:read")
    for _ in range(3):  # the first request reads the key; the next ones find it in the app's cache
        assert client.get("/contacts/segments/vip/contacts/u1", headers=bearer(token)).status_code == 200
    with Session(engine) as session, session.begin():  # revoked by another connection, as the CLI does
        revoke_key(session=session, key_id=token.split("_")[1], now=datetime.now(UTC))
    started = time.monotonic()
    assert refused_within(client, token, seconds=1.0)
    assert time.monotonic() - started < 1.0
    response = client.get("/contacts/segments/vip/contacts/u1", headers=bearer(token))
    assert response.status_code == 401 and response.json() == {"detail": "unknown or revoked API key"}


@pytest.mark.usefixtures("seeded")
def test_a_cached_key_gets_the_same_answers_as_a_key_read_afresh(
    client: TestClient, make_token: Callable[..., str]
) -> None:
    """Each path is asked first with a key never seen (read from the database), then again and again with
    it cached: statuses and bodies identical, the scope check (403) included."""
    paths = [
        ("/contacts/segments/vip/contacts/u1", 200),  # member
        ("/contacts/segments/vip/contacts/u3", 200),  # not a member
        ("/contacts/segments/nope/contacts/u1", 404),  # unknown segment
        ("/contacts/segments/vip/contacts/ghost", 404),  # unknown contact
        ("/contacts/segments", 200),
    ]
    for scopes in (("segments:read",), ("sla:read",)):
        for path, status in paths:
            fresh = client.get(path, headers=bearer(make_token(*scopes)))
            token = make_token(*scopes)
            answers = [client.get(path, headers=bearer(token)) for _ in range(3)]
            assert {(r.status_code, r.text) for r in answers} == {(fresh.status_code, fresh.text)}
            assert fresh.status_code == (403 if scopes == ("sla:read",) else status)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("keys", "create", "--scope", "segments:admin"), 'unknown scope "segments:admin"'),
        (("keys", "revoke", "ffffffffffff"), 'unknown API key "ffffffffffff"'),
    ],
)
def test_keys_command_refuses_bad_input_with_status_2(
    capsys: pytest.CaptureFixture[str], engine: Engine, database_url: str, args: tuple[str, ...], message: str
) -> None:
    code, _, err = run(capsys, "--database-url", database_url, *args)
    assert code == 2 and message in err
