"""One membership read on SQLite and PostgreSQL: the autocommit read (`read_membership`) answers exactly as
`check_membership` in a transaction, is one statement for a computed contact, and computes a contact never
computed in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from segmentflow.db.tables import change_table, contact_table, membership_table
from segmentflow.rules import parse_context, parse_segments
from segmentflow.services.contacts import upsert_contacts
from segmentflow.services.membership import (
    UnknownContactError,
    UnknownSegmentError,
    check_membership,
    peek_membership,
    read_membership,
    recompute_all,
)
from segmentflow.services.segment_admin import import_segments
from segmentflow.services.segments import load_index

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
SEGMENTS: list[dict[str, Any]] = [
    {"key": "vip", "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["vip"]}]}]},
    {
        "key": "eu",
        "included": ["u3"],
        "rules": [{"clauses": [{"attribute": "eu", "op": "in", "values": [True]}]}],
    },
    {
        "key": "vip-eu",
        "rules": [
            {"clauses": [{"op": "segmentMatch", "values": ["vip"]}, {"op": "segmentMatch", "values": ["eu"]}]}
        ],
    },
]
CONTEXTS: list[dict[str, Any]] = [
    {"key": "u1", "plan": "vip", "eu": True},
    {"key": "u2", "plan": "free", "eu": True},
    {"key": "u3", "plan": "vip"},
    {"kind": "org", "key": "o1", "plan": "vip"},
]


def _store(engine: Engine, contexts: list[dict[str, Any]], *, compute: bool) -> None:
    with Session(engine) as session, session.begin():
        import_segments(recompute=False, session=session, segments=parse_segments(SEGMENTS), now=NOW)
        upsert_contacts(session=session, contexts=[parse_context(c) for c in contexts], now=NOW)
    if compute:
        recompute_all(engine)


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[int, str]]]:
    """(connection id, SQL) of every statement sent while inside, and `COMMIT` at each commit."""
    seen: list[tuple[int, str]] = []

    def statement(conn: sa.Connection, _cursor: Any, sql: str, *_args: Any) -> None:
        seen.append((id(conn.connection.dbapi_connection), sql))

    def commit(conn: sa.Connection) -> None:
        seen.append((id(conn.connection.dbapi_connection), "COMMIT"))

    sa.event.listen(engine, "before_cursor_execute", statement)
    sa.event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", statement)
        sa.event.remove(engine, "commit", commit)


def test_the_autocommit_read_answers_exactly_as_the_transactional_check(engine: Engine) -> None:
    _store(engine, CONTEXTS, compute=True)
    with Session(engine) as session:
        ids = {key: str(segment_id) for key, segment_id in load_index(session=session).ids.items()}
    refs = [*ids, *ids.values()]
    contacts = [parse_context(c).fully_qualified_key for c in CONTEXTS]
    members = 0
    for ref in refs:
        for contact in contacts:
            with Session(engine) as session, session.begin():
                expected = check_membership(session=session, segment_ref=ref, contact_key=contact)
            assert read_membership(engine=engine, segment_ref=ref, contact_key=contact) == expected
            members += expected.is_member
    assert 0 < members < len(refs) * len(contacts)  # both answers occur
    for ref, contact, error in [("nope", "u1", UnknownSegmentError), ("vip", "ghost", UnknownContactError)]:
        with pytest.raises(error):
            read_membership(engine=engine, segment_ref=ref, contact_key=contact)


def test_a_computed_contact_is_read_with_one_statement_and_no_commit(engine: Engine) -> None:
    _store(engine, CONTEXTS, compute=True)
    with _statements(engine) as seen:
        assert read_membership(engine=engine, segment_ref="vip", contact_key="u1").is_member
    assert len(seen) == 1 and seen[0][1].lstrip().upper().startswith("SELECT"), seen


def test_peek_leaves_a_contact_never_computed_alone(engine: Engine) -> None:
    _store(engine, CONTEXTS[:1], compute=False)
    with engine.connect() as connection:
        assert peek_membership(db=connection, segment_ref="vip", contact_key="u1") is None
    with engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(membership_table)).scalar() == 0


def test_a_contact_never_computed_is_computed_in_one_transaction_on_its_first_read(engine: Engine) -> None:
    _store(engine, CONTEXTS, compute=False)
    with _statements(engine) as seen:
        result = read_membership(engine=engine, segment_ref="vip-eu", contact_key="u1")
    assert result.is_member
    writes = [
        (conn, sql) for conn, sql in seen if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    commits = [conn for conn, sql in seen if sql == "COMMIT"]
    assert writes and len(commits) == 1, seen
    assert {conn for conn, _ in writes} == set(commits)  # every write on the connection that committed once
    with engine.connect() as connection:
        stored = connection.execute(
            sa.select(contact_table.c.computed_at).where(contact_table.c.key == "u1")
        ).scalar_one()
        entries = connection.execute(
            sa.select(change_table.c.segment_key).where(change_table.c.contact_key == "u1")
        ).scalars()
        assert sorted(entries) == ["eu", "vip", "vip-eu"]
    assert stored is not None and result.computed_at == stored.replace(tzinfo=stored.tzinfo or UTC)
    with _statements(engine) as seen:  # computed now: the next read is the one-statement path
        again = read_membership(engine=engine, segment_ref="vip-eu", contact_key="u1")
    assert again == result and len(seen) == 1
