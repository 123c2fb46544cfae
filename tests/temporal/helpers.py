"""Data loading shared by the Temporal tests (through the services, as an operator's import would)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.rules import compile_segments, memberships, parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.exports import iter_memberships
from segmentflow.services.segments import upsert_segments

SEGMENTS: list[dict[str, Any]] = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {"key": "eu", "rules": [{"clauses": [{"attribute": "country", "op": "in", "values": ["DE", "FR"]}]}]},
    {
        "key": "vip-eu",
        "rules": [
            {"clauses": [{"op": "segmentMatch", "values": ["vip"]}, {"op": "segmentMatch", "values": ["eu"]}]}
        ],
    },
    {
        "key": "big-orgs",
        "rules": [
            {
                "clauses": [
                    {
                        "contextKind": "organization",
                        "attribute": "seats",
                        "op": "greaterThan",
                        "values": [100],
                    }
                ]
            }
        ],
    },
]


def contexts(n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        out.append(
            {
                "kind": "user",
                "key": f"u{i}",
                "plan": "vip" if i % 3 == 0 else "free",
                "country": "DE" if i % 2 == 0 else "US",
            }
        )
    out.append({"kind": "organization", "key": "o1", "seats": 500})
    return out


def load(engine: Engine, items: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS) -> None:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        upsert_segments(session=session, segments=parse_segments(segments), now=now)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in items], now=now)


def stored(engine: Engine) -> dict[str, list[str]]:
    with Session(engine) as session:
        return dict(iter_memberships(session=session))


def expected(items: list[dict[str, Any]], segments: list[dict[str, Any]] = SEGMENTS) -> dict[str, list[str]]:
    compiled = compile_segments(parse_segments(segments))
    return {parse_context(c).fully_qualified_key: memberships(compiled, parse_context(c)) for c in items}
