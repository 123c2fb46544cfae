"""Reporting tests: the engine also empties the SLA events; a small world of segments whose memberships
change at known times, built through the real services (each change lands in the feed at its `now`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.api import create_app
from segmentflow.db.tables import sla_event_table
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.conversations import parse_event, record_conversations
from segmentflow.services.keys import create_key
from segmentflow.services.membership import upsert_and_recompute
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import load_index
from segmentflow.settings import Settings
from tests.temporal.conftest import dev_env, task_queue

__all__ = ["dev_env", "task_queue"]

#: Day 0, midnight UTC: the world's memberships change on days 1 and 3.
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SEGMENTS: list[dict[str, Any]] = [
    {
        "key": "vip",
        "name": "VIPs",
        "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}],
    },
    {
        "key": "eu",
        "name": "Europe",
        "rules": [{"clauses": [{"attribute": "region", "op": "in", "values": ["eu"]}]}],
    },
]


@pytest.fixture
def engine(engine: Engine) -> Engine:
    with engine.begin() as conn:
        for table in ("sla_event", "ticket", "sla_policy", "sla_watch"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return engine


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def save_contacts(engine: Engine, contexts: list[dict[str, Any]], when: datetime) -> None:
    with Session(engine) as session, session.begin():
        index = load_index(session=session)
        upsert_and_recompute(
            session=session, contexts=[parse_context(c) for c in contexts], index=index, now=when
        )


def record(engine: Engine, *events: dict[str, Any]) -> None:
    with Session(engine) as session, session.begin():
        record_conversations(session=session, events=[parse_event(e) for e in events], now=at(30))


def sla_event(engine: Engine, ticket: str, kind: str, segments: list[str], fired: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(
            sla_event_table.insert().values(
                ticket_id=ticket,
                contact_key=None,
                segments=segments,
                policy_key="p",
                metric="first_reply",
                kind=kind,
                due_at=fired,
                fired_at=fired,
            )
        )


@pytest.fixture
def world(engine: Engine) -> Engine:
    """- alice: vip and eu from day 1; leaves vip on day 3 (stays in eu).
    - bob: eu from day 1 to day 3, then in no segment.
    - carol: a contact in no segment.
    - dave: first stored on day 3, as a vip."""
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=at(0))
    save_contacts(
        engine,
        [
            {"key": "alice", "plan": "vip", "region": "eu"},
            {"key": "bob", "plan": "free", "region": "eu"},
            {"key": "carol", "plan": "free", "region": "us"},
        ],
        at(1),
    )
    save_contacts(
        engine,
        [
            {"key": "alice", "plan": "free", "region": "eu"},
            {"key": "bob", "plan": "free", "region": "us"},
            {"key": "dave", "plan": "vip", "region": "us"},
        ],
        at(3),
    )
    return engine


@pytest.fixture
def app(engine: Engine, database_url: str) -> Iterator[FastAPI]:
    app = create_app(Settings(database_url=database_url))
    yield app
    app.state.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def token(engine: Engine, *scopes: str) -> dict[str, str]:
    with Session(engine) as session, session.begin():
        _, secret = create_key(session=session, scopes=scopes, name="test", now=T0)
    return {"Authorization": f"Bearer {secret}"}
