"""The console under FastAPI's test client, on the `engine` fixture's database (SQLite and PostgreSQL):
seeded segments, contacts (one with a hostile name), a sequence and SLA policies; operators signed in
with keys of chosen scopes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.policies.sequences import parse_sequences
from segmentflow.policies.sla import parse_policies
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.keys import SCOPES, create_key
from segmentflow.services.membership import recompute_all
from segmentflow.services.messages import (
    parse_actions,
    parse_instructions,
    record_refusal,
    upsert_actions,
    upsert_instructions,
)
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.sequences import import_sequences
from segmentflow.services.sla import import_policies
from segmentflow.settings import Settings

NOW = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
HOSTILE = "<img src=x onerror=alert(1)>"
READ_SCOPES = ("segments:read", "sequences:read", "sla:read", "messages:read")

SEGMENTS: list[dict[str, Any]] = [
    {
        "key": "vip",
        "name": "VIPs",
        "rules": [{"id": "r-plan", "clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}],
    },
    {
        "key": "vip-eu",
        "rules": [
            {
                "clauses": [
                    {"op": "segmentMatch", "values": ["vip"]},
                    {"attribute": "region", "op": "in", "values": ["eu"]},
                ]
            }
        ],
    },
]
CONTEXTS: list[dict[str, Any]] = [
    {"key": "u1", "name": "Ada", "plan": "vip", "region": "eu", "email": "ada@example.com"},
    {"key": "u2", "name": HOSTILE, "plan": "vip", "region": "us"},
    {"key": "u3", "name": "Cy", "plan": "free"},
    {"kind": "organization", "key": "o/1", "name": "Org One"},
]
SEQUENCE: dict[str, Any] = {
    "key": "welcome",
    "name": "Welcome",
    "segment": "vip",
    "steps": [
        {
            "type": "send",
            "channel": "webhook",
            "url": "http://127.0.0.1:9/hook",
            "template": "Hi {{ contact.name }}",
        }
    ],
}
POLICIES: list[dict[str, Any]] = [
    {
        "key": "vip-sla",
        "conditions": {"segments_any": ["vip"]},
        "targets": {"high": {"first_reply": "PT1H"}, "normal": {"first_reply": "PT4H"}},
        "calendar": {
            "timezone": "Europe/Berlin",
            "hours": {day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        },
    },
    {
        "key": "default",
        "targets": {"high": {"first_reply": "PT8H"}, "normal": {"first_reply": "P1D"}},
        "calendar": "24/7",
    },
]


ACTIONS: list[dict[str, Any]] = [
    {"key": "refund", "name": "Refund", "restricted_to_segments": ["vip"]},
    {"key": "faq", "name": "Answer from the FAQ"},
]
INSTRUCTIONS: list[dict[str, Any]] = [
    {"key": "eu-tone", "text": "Mention the EU support hours.", "restricted_to_segments": ["vip-eu"]}
]


#: Tables the shared `engine` fixture does not empty, and this seed writes.
_OTHER_TABLES = ("action_refusal", "action", "instruction", "sla_event", "ticket", "sla_policy")


def seed(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in _OTHER_TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in CONTEXTS], now=NOW)
    recompute_all(engine)
    with Session(engine) as session, session.begin():
        import_sequences(session=session, sequences=parse_sequences(SEQUENCE), now=NOW)
        import_policies(session=session, policies=parse_policies(POLICIES), now=NOW)
        upsert_actions(session=session, actions=parse_actions(ACTIONS), now=NOW)
        upsert_instructions(session=session, instructions=parse_instructions(INSTRUCTIONS), now=NOW)
        record_refusal(
            session=session, action_key="refund", contact_key="u3", reason="not in vip", side="agent", now=NOW
        )


def make_token(engine: Engine, *scopes: str) -> str:
    with Session(engine) as session, session.begin():
        return create_key(session=session, scopes=scopes, name="operator", now=NOW)[1]


@pytest.fixture
def app(engine: Engine, database_url: str) -> Iterator[FastAPI]:
    seed(engine)
    app = create_app(Settings(database_url=database_url))
    yield app
    app.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def sign_in(client: TestClient, engine: Engine) -> Callable[..., str]:
    """Sign in with a new key of these scopes (all by default); returns the session's CSRF token."""

    def sign(*scopes: str) -> str:
        token = make_token(engine, *(scopes or SCOPES))
        form = client.get("/ui/")
        response = client.post(
            "/ui/sign-in",
            data={"token": token, "csrf": csrf_of(form.text), "next": ""},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return csrf_of(client.get("/ui/segments").text)

    return sign
