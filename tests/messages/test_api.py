"""The message-handling endpoints under FastAPI's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.services.messages import record_refusal
from tests.api.conftest import bearer
from tests.messages.conftest import INSTRUCTIONS, StandIn, actions_json


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    return make_token("messages:read", "messages:write")


def test_actions_round_trip_with_missing_segments_reported(
    client: TestClient, token: str, seeded: None, stand_in: StandIn
) -> None:
    body = [{"key": "legacy", "restricted_to_segments": ["vip", "gone"]}]
    answer = client.post("/messages/actions", json=body, headers=bearer(token))
    assert answer.status_code == 200
    assert answer.json() == {"imported": ["legacy"], "unknown_segments": {"legacy": ["gone"]}}
    listed = client.get("/messages/actions", headers=bearer(token)).json()["data"]
    by_key = {a["key"]: a for a in listed}
    assert [a["key"] for a in listed] == sorted(by_key)
    assert set(by_key) == {a["key"] for a in actions_json(stand_in.url)} | {"legacy"}
    assert by_key["legacy"]["missing_segments"] == ["gone"] and by_key["legacy"]["name"] == "legacy"
    assert by_key["refund"]["webhook"] == {"url": f"{stand_in.url}/hooks/refund", "headers": {}}
    assert by_key["refund"]["missing_segments"] == []


def test_instructions_upsert_and_list(client: TestClient, token: str, seeded: None) -> None:
    answer = client.post(
        "/messages/instructions", json=[{"key": "tone", "text": "Be kind."}], headers=bearer(token)
    )
    assert answer.json() == {"imported": ["tone"], "unknown_segments": {}}
    listed = client.get("/messages/instructions", headers=bearer(token)).json()["data"]
    assert [i["key"] for i in listed] == sorted(i["key"] for i in INSTRUCTIONS)
    assert next(i for i in listed if i["key"] == "tone")["text"] == "Be kind."


def test_resolve_shows_what_applies_to_a_contact(client: TestClient, token: str, seeded: None) -> None:
    def resolve(contact: str | None) -> dict[str, object]:
        answer = client.post("/messages/resolve", json={"contactKey": contact}, headers=bearer(token))
        assert answer.status_code == 200
        return dict(answer.json())

    assert resolve("u-eu") == {
        "contact_key": "u-eu",
        "segments": ["eu"],
        "actions": ["book-call", "order-status"],
        "instructions": ["gdpr", "tone"],
        "withheld": [],
    }
    anonymous = resolve(None)
    assert (anonymous["segments"], anonymous["actions"]) == (None, ["order-status"])


@pytest.mark.parametrize(
    "body",
    [
        [{"key": "x"}, {"key": "x"}],
        [{"key": "x", "webhook": {"url": "not a url"}}],
        [{"key": "x", "webhook": {"url": "http://:80"}}],
        [{"key": "x", "webhook": {"url": "http://h.test", "headers": {"X-A": "v\r\nX-B: w"}}}],
        [{"key": "x", "restricted_to_segments": [""]}],
        [{"key": "x", "unknown": 1}],
        {"key": "x"},
    ],
)
def test_bad_action_bodies_are_422_and_store_nothing(client: TestClient, token: str, body: object) -> None:
    answer = client.post("/messages/actions", json=body, headers=bearer(token))
    assert answer.status_code == 422
    assert client.get("/messages/actions", headers=bearer(token)).json() == {"data": []}


def test_listed_webhooks_show_header_names_with_values_redacted(client: TestClient, token: str) -> None:
    body = [
        {"key": "x", "webhook": {"url": "https://h.test/x", "headers": {"Authorization": "Bearer s3cret"}}}
    ]
    assert client.post("/messages/actions", json=body, headers=bearer(token)).status_code == 200
    answer = client.get("/messages/actions", headers=bearer(token))
    assert answer.json()["data"][0]["webhook"] == {
        "url": "https://h.test/x",
        "headers": {"Authorization": "<redacted>"},
    }
    assert "s3cret" not in answer.text


def test_resolve_refuses_a_contact_key_with_nul(client: TestClient, token: str) -> None:
    answer = client.post("/messages/resolve", json={"contactKey": "a\x00b"}, headers=bearer(token))
    assert answer.status_code == 422


def test_refusals_newest_first(client: TestClient, token: str, engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        for n, side in enumerate(("workflow", "worker")):
            record_refusal(
                session=session,
                action_key="refund",
                contact_key=f"u{n}",
                reason="not in vip",
                side=side,
                now=datetime(2026, 11, 1, 12, n, tzinfo=UTC),
                workflow_id="wf",
            )
    data = client.get("/messages/refusals?limit=5", headers=bearer(token)).json()["data"]
    assert [(r["contact_key"], r["side"], r["action"]) for r in data] == [
        ("u1", "worker", "refund"),
        ("u0", "workflow", "refund"),
    ]


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/messages/actions", "messages:read"),
        ("POST", "/messages/actions", "messages:write"),
        ("GET", "/messages/instructions", "messages:read"),
        ("POST", "/messages/instructions", "messages:write"),
        ("POST", "/messages/resolve", "messages:read"),
        ("GET", "/messages/refusals", "messages:read"),
    ],
)
def test_each_endpoint_needs_its_scope(
    client: TestClient, make_token: Callable[..., str], method: str, path: str, scope: str
) -> None:
    body = {"contactKey": None} if path.endswith("resolve") else []
    kwargs = {} if method == "GET" else {"json": body}
    assert client.request(method, path, **kwargs).status_code == 401
    other = "messages:write" if scope == "messages:read" else "messages:read"
    assert client.request(method, path, headers=bearer(make_token(other)), **kwargs).status_code == 403
    assert client.request(method, path, headers=bearer(make_token(scope)), **kwargs).status_code == 200
