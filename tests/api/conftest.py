"""The API under FastAPI's test client, on the `engine` fixture's database (SQLite and PostgreSQL), with one
API key per scope."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.policies.sequences import parse_sequences
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.keys import SCOPES, create_key
from segmentflow.services.membership import recompute_all
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.sequences import import_sequences
from segmentflow.settings import Settings

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)

SEGMENTS: list[dict[str, Any]] = [
    {
        "key": "vip",
        "name": "VIPs",
        "description": "Paying a lot",
        "rules": [
            {
                "id": "r-plan",
                "clauses": [{"id": "c-plan", "attribute": "plan", "op": "in", "values": ["vip"]}],
            }
        ],
    },
    {
        "key": "orgs",
        "rules": [
            {
                "clauses": [
                    {"contextKind": "organization", "attribute": "seats", "op": "greaterThan", "values": [10]}
                ]
            }
        ],
    },
    {
        "key": "vip-org",
        "rules": [
            {
                "clauses": [
                    {"op": "segmentMatch", "values": ["vip"]},
                    {"op": "segmentMatch", "values": ["orgs"]},
                ]
            }
        ],
    },
]
CONTEXTS: list[dict[str, Any]] = [
    {"key": "u1", "plan": "vip"},
    {"kind": "organization", "key": "o:1", "seats": 50},
    {"kind": "multi", "user": {"key": "u2", "plan": "vip"}, "organization": {"key": "o2", "seats": 11}},
    {"kind": "user", "key": "u3", "plan": "free"},
]

SEQUENCE: dict[str, Any] = {
    "key": "welcome",
    "name": "Welcome",
    "segment": "vip",
    "steps": [{"type": "send", "channel": "webhook", "url": "https://hooks.example/hook", "template": "Hi"}],
}


@pytest.fixture
def app(engine: Engine, database_url: str) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=database_url))
    yield app
    app.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_token(engine: Engine) -> Callable[..., str]:
    def make(*scopes: str) -> str:
        with Session(engine) as session, session.begin():
            _, token = create_key(session=session, scopes=scopes, name="test", now=NOW)
        return token

    return make


@pytest.fixture
def tokens(engine: Engine) -> dict[str, str]:
    """A token per scope, and `all` with every scope."""
    wanted = {s: [s] for s in SCOPES} | {"all": list(SCOPES)}
    with Session(engine) as session, session.begin():
        return {
            name: create_key(session=session, scopes=scopes, name=name, now=NOW)[1]
            for name, scopes in wanted.items()
        }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def seeded(engine: Engine) -> None:
    """The sample segments and contacts, stored and computed."""
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in CONTEXTS], now=NOW)
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        import_sequences(session=session, sequences=parse_sequences(SEQUENCE), now=NOW)
