"""Contact writes one at a time: upsert a context and recompute its memberships at once, or delete it with
an `exited` change event per membership. Never commits."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import Contact, contact_table, membership_table, segment_table
from segmentflow.rules import Context
from segmentflow.services.membership import (
    MembershipDiff,
    UnknownContactError,
    apply_diff,
    upsert_and_recompute,
)
from segmentflow.services.segment_admin import hold_write_lock
from segmentflow.services.segments import SegmentIndexCache

__all__ = ["delete_contact", "save_contact"]


def save_contact(
    *, session: Session, context: Context, indexes: SegmentIndexCache, now: datetime
) -> tuple[Contact, bool]:
    """Insert or replace the contact and compute its memberships against the segments as stored once any
    running segment write has committed; returns it and whether it is new."""
    hold_write_lock(session, shared=True)
    key = context.fully_qualified_key
    created = session.scalar(sa.select(contact_table.c.id).where(contact_table.c.key == key)) is None
    [contact_id], _ = upsert_and_recompute(session=session, contexts=[context], index=indexes, now=now)
    contact = session.get(Contact, contact_id, populate_existing=True)
    assert contact is not None
    return contact, created


def delete_contact(*, session: Session, key: str, now: datetime) -> int:
    """Delete a contact by fully-qualified key after writing an exit event for each of its memberships;
    returns how many there were."""
    hold_write_lock(session, shared=True)
    contact_id = session.scalar(
        sa.select(contact_table.c.id).where(contact_table.c.key == key).with_for_update()
    )
    if contact_id is None:
        raise UnknownContactError(f'unknown contact "{key}"')
    segments = list(
        session.execute(
            sa.select(segment_table.c.id, segment_table.c.key)
            .join(membership_table, membership_table.c.segment_id == segment_table.c.id)
            .where(membership_table.c.contact_id == contact_id)
        )
    )
    apply_diff(
        session=session,
        diff=MembershipDiff(exited={(sid, contact_id) for sid, _ in segments}),
        segment_keys={sid: skey for sid, skey in segments},
        contact_keys={contact_id: key},
        now=now,
    )
    session.execute(contact_table.delete().where(contact_table.c.id == contact_id))
    return len(segments)
