"""States the services no longer produce but a database can still hold (a restored backup, a manual SQL
delete, data written before a rule existed), set up with plain SQL so the read paths' handling of them
stays tested."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import membership_table, segment_table

__all__ = ["remove_segment_row"]


def remove_segment_row(session: Session, key: str) -> None:
    """Delete segment `key` and its memberships even though something still names it (the service
    refuses that delete with a 409)."""
    segment_id = session.scalar(sa.select(segment_table.c.id).where(segment_table.c.key == key))
    assert segment_id is not None, f"no segment {key}"
    session.execute(membership_table.delete().where(membership_table.c.segment_id == segment_id))
    session.execute(segment_table.delete().where(segment_table.c.id == segment_id))
