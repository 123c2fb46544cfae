"""Stored contacts: bulk upsert by fully-qualified key, and reads. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from segmentflow.db.bulk import insert_on_conflict
from segmentflow.db.tables import Contact, contact_table
from segmentflow.rules import DEFAULT_KIND, Context, Individual

__all__ = ["contact_key", "get_contact", "upsert_contacts"]

_CHUNK = 1000


def _upsert_statement(dialect: str) -> Any:
    """Contact upserts: ON CONFLICT ... RETURNING, which both databases speak."""
    stmt = insert_on_conflict(dialect, contact_table)
    return stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "kinds": stmt.excluded.kinds,
            "context": stmt.excluded.context,
            "updated_at": stmt.excluded.updated_at,
            "computed_at": stmt.excluded.computed_at,
        },
    ).returning(contact_table.c.id, contact_table.c.key)


def upsert_contacts(
    *, session: Session, contexts: Sequence[Context], now: datetime, computed: bool = False
) -> list[int]:
    """Insert or replace contacts (a later duplicate key wins); returns their ids in input order of first
    appearance. Replaced contacts are marked not computed, unless `computed` says the caller recomputes
    them in this same transaction."""
    rows: dict[str, dict[str, Any]] = {}
    for ctx in contexts:
        rows[ctx.fully_qualified_key] = {
            "key": ctx.fully_qualified_key,
            "kinds": ",".join(ctx.kinds),
            "context": ctx.to_dict(),
            "updated_at": now,
            "computed_at": now if computed else None,
        }
    if not rows:
        return []
    stmt = _upsert_statement(session.get_bind().dialect.name)
    values = list(rows.values())
    ids: dict[str, int] = {}
    for start in range(0, len(values), _CHUNK):
        for cid, key in session.execute(stmt, values[start : start + _CHUNK]):
            ids[key] = cid
    return [ids[k] for k in rows]


def get_contact(*, session: Session, key: str) -> Contact | None:
    """A contact by fully-qualified key."""
    return session.exec(select(Contact).where(Contact.key == key)).first()


def contact_key(key: str, kind: str | None = None) -> str:
    """The fully-qualified key of a contact given by its key within `kind` (default: already fully
    qualified, which is also how user and multi-kind contacts are addressed)."""
    if kind is None or kind == DEFAULT_KIND:
        return key
    return Individual(kind=kind, key=key, attributes={}).fully_qualified_key
