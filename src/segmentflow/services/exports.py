"""Reads that stream stored memberships out, page by page, in the `evaluate` command's line shape."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import contact_table, membership_table, segment_table

__all__ = ["iter_memberships"]


def iter_memberships(*, session: Session, page_size: int = 5000) -> Iterator[tuple[str, list[str]]]:
    """(contact key, sorted segment keys) for every stored contact, in contact id order."""
    query = sa.select(segment_table.c.id, segment_table.c.key)
    segment_keys = {sid: key for sid, key in session.execute(query)}
    after = 0
    while True:
        rows = list(
            session.execute(
                sa.select(contact_table.c.id, contact_table.c.key)
                .where(contact_table.c.id > after)
                .order_by(contact_table.c.id)
                .limit(page_size)
            )
        )
        if not rows:
            return
        grouped: dict[int, list[str]] = {}
        for sid, cid in session.execute(
            sa.select(membership_table.c.segment_id, membership_table.c.contact_id).where(
                membership_table.c.contact_id.between(rows[0].id, rows[-1].id)
            )
        ):
            grouped.setdefault(cid, []).append(segment_keys[sid])
        for row in rows:
            yield row.key, sorted(grouped.get(row.id, []))
        after = rows[-1].id
