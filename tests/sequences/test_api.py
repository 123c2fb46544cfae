"""The sequences API: save (the JSON file format), read with status, launch, pause, and scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.services.keys import create_key
from segmentflow.settings import Settings
from tests.sequences.helpers import load_segments, now, put_contacts

SEGMENTS = [{"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]}]
DEFINITION: dict[str, Any] = {
    "name": "Welcome",
    "segment": "vip",
    "steps": [{"type": "send", "channel": "webhook", "url": "http://127.0.0.1:1/ok", "template": "Hi"}],
}


@pytest.fixture
def client(engine: Engine, database_url: str) -> Iterator[TestClient]:
    app = create_app(Settings(database_url=database_url))
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def headers(engine: Engine, *scopes: str) -> dict[str, str]:
    with Session(engine) as session, session.begin():
        _, token = create_key(session=session, scopes=scopes, name="t", now=now())
    return {"Authorization": f"Bearer {token}"}


def test_save_launch_read_and_pause(engine: Engine, client: TestClient) -> None:
    load_segments(engine, SEGMENTS)
    put_contacts(engine, [{"kind": "user", "key": f"u{i}", "plan": "vip"} for i in range(3)])
    auth = headers(engine, "sequences:read", "sequences:write")
    created = client.put("/sequences/welcome", json=DEFINITION, headers=auth)
    assert created.status_code == 201 and created.json()["status"] == "draft"
    assert client.put("/sequences/welcome", json=DEFINITION, headers=auth).status_code == 200
    launched = client.post("/sequences/welcome/launch", headers=auth).json()
    assert (launched["enrolled"], launched["changed"]) == (3, True)
    body = client.get("/sequences/welcome", headers=auth).json()
    assert body["definition"]["steps"][0]["template"] == "Hi"
    assert body["report"]["active"] == 3 and body["report"]["steps"][0]["enrolled"] == 3
    assert [s["key"] for s in client.get("/sequences", headers=auth).json()["data"]] == ["welcome"]
    paused = client.post("/sequences/welcome/pause", headers=auth).json()
    assert (paused["status"], paused["changed"]) == ("paused", True)


def test_bad_definitions_and_unknown_keys(engine: Engine, client: TestClient) -> None:
    auth = headers(engine, "sequences:read", "sequences:write")
    load_segments(engine, SEGMENTS)
    broken = {**DEFINITION, "steps": [{**DEFINITION["steps"][0], "template": "{% if %}"}]}
    refused = client.put("/sequences/welcome", json=broken, headers=auth)
    assert refused.status_code == 422 and "template" in refused.json()["detail"][0]["msg"]
    assert client.get("/sequences/welcome", headers=auth).status_code == 404  # nothing was written
    assert client.get("/sequences", headers=auth).json()["data"] == []
    assert (
        client.put("/sequences/welcome", json={**DEFINITION, "key": "other"}, headers=auth).status_code == 422
    )
    assert client.get("/sequences/nope", headers=auth).status_code == 404
    assert client.post("/sequences/nope/launch", headers=auth).status_code == 404


def test_unknown_segments_and_out_of_range_values_are_refused_on_save(
    engine: Engine, client: TestClient
) -> None:
    auth = headers(engine, "sequences:read", "sequences:write")
    load_segments(engine, SEGMENTS)
    branch = {"type": "branch", "segment": "ghost", "then": [DEFINITION["steps"][0]]}
    cases = [
        ({**DEFINITION, "segment": "ghost"}, 'segment "ghost" is not stored'),
        ({**DEFINITION, "steps": [*DEFINITION["steps"], branch]}, 'step 1: branch segment "ghost"'),
        ({**DEFINITION, "steps": [{"type": "wait", "duration": "P9999999999D"}]}, "longest duration"),
        ({**DEFINITION, "reentry": "P999999999D"}, "longest duration"),
        ({**DEFINITION, "reentry": "PT0S"}, "longer than zero"),
        ({**DEFINITION, "frequency_cap": {"max": 1, "period": "P0D"}}, "longer than zero"),
    ]
    for body, message in cases:
        refused = client.put("/sequences/welcome", json=body, headers=auth)
        assert refused.status_code == 422, body
        assert message in refused.json()["detail"][0]["msg"]
    for rate in ("NaN", "Infinity"):  # JSON extensions Python's parser accepts
        raw = json.dumps({**DEFINITION, "rate_limit": {"webhook": 1}}).replace(
            '"webhook": 1', f'"webhook": {rate}'
        )
        refused = client.put(
            "/sequences/welcome", content=raw, headers={**auth, "Content-Type": "application/json"}
        )
        assert refused.status_code == 422, rate
    assert client.get("/sequences", headers=auth).json()["data"] == []
    # An active sequence keeps its segment: a new one is refused, the old one stays.
    load_segments(engine, [{**SEGMENTS[0], "key": "eu"}])
    assert client.put("/sequences/welcome", json=DEFINITION, headers=auth).status_code == 201
    assert client.post("/sequences/welcome/launch", headers=auth).status_code == 200
    moved = client.put("/sequences/welcome", json={**DEFINITION, "segment": "eu"}, headers=auth)
    assert moved.status_code == 422 and "cannot move" in moved.json()["detail"][0]["msg"]
    assert client.get("/sequences/welcome", headers=auth).json()["segment"] == "vip"


def test_scopes_are_required(engine: Engine, client: TestClient) -> None:
    reader = headers(engine, "sequences:read")
    assert client.get("/sequences").status_code == 401
    assert client.put("/sequences/welcome", json=DEFINITION, headers=reader).status_code == 403
    assert client.get("/sequences", headers=headers(engine, "segments:read")).status_code == 403
