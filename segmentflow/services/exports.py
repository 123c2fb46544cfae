"""Reads that stream stored memberships out, page by page, in the `evaluate` command's line shape."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import Contact, SegmentMembership, SegmentRecord

__all__ = ["iter_memberships"]


def iter_memberships(*, session: Session, page_size: int = 5000) -> Iterator[tuple[str, list[str]]]:
    """(contact key, sorted segment keys) for every stored contact, in contact id order."""
    contact = Contact.__table__  # type: ignore[attr-defined]
    membership = SegmentMembership.__table__  # type: ignore[attr-defined]
    segment_keys = {sid: key for sid, key in session.execute(sa.select(SegmentRecord.id, SegmentRecord.key))}  # type: ignore[call-overload]
    after = 0
    while True:
        rows = list(session.execute(
            sa.select(contact.c.id, contact.c.key).where(contact.c.id > after).order_by(contact.c.id).limit(page_size)
        ))
        if not rows:
            return
        grouped: dict[int, list[str]] = {}
        for sid, cid in session.execute(
            sa.select(membership.c.segment_id, membership.c.contact_id)
            .where(membership.c.contact_id.between(rows[0].id, rows[-1].id))
        ):
            grouped.setdefault(cid, []).append(segment_keys[sid])
        for row in rows:
            yield row.key, sorted(grouped.get(row.id, []))
        after = rows[-1].id
