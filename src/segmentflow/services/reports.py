"""Reads over the precomputed tables beyond single lookups: a segment's members by cursor, the change feed
by sequence number, and members, entries and exits per segment over a time window. Never commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import change_table, contact_table, membership_table
from segmentflow.services.membership import member_counts
from segmentflow.services.segments import list_segments

__all__ = ["Change", "Member", "SegmentActivity", "list_changes", "list_members", "segment_activity"]


@dataclass(frozen=True, slots=True)
class Member:
    contact_id: int
    key: str
    since: datetime


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    segment_id: uuid.UUID
    segment_key: str
    contact_key: str
    change: str
    at: datetime


@dataclass(frozen=True, slots=True)
class SegmentActivity:
    segment_id: uuid.UUID
    key: str
    name: str
    members: int
    entered: int
    exited: int


def list_members(*, session: Session, segment_id: uuid.UUID, after: int, limit: int) -> list[Member]:
    """Up to `limit` members of a segment with contact id > `after`, in contact id order."""
    query = (
        sa.select(contact_table.c.id, contact_table.c.key, membership_table.c.since)
        .join(membership_table, membership_table.c.contact_id == contact_table.c.id)
        .where(membership_table.c.segment_id == segment_id, contact_table.c.id > after)
        .order_by(contact_table.c.id)
        .limit(limit)
    )
    return [Member(cid, key, since) for cid, key, since in session.execute(query)]


def list_changes(*, session: Session, after: int, limit: int) -> list[Change]:
    """Up to `limit` change-feed rows with seq > `after`, in seq order."""
    query = (
        sa.select(
            change_table.c.seq,
            change_table.c.segment_id,
            change_table.c.segment_key,
            change_table.c.contact_key,
            change_table.c.change,
            change_table.c.at,
        )
        .where(change_table.c.seq > after)
        .order_by(change_table.c.seq)
        .limit(limit)
    )
    return [Change(*row) for row in session.execute(query)]


def segment_activity(*, session: Session, since: datetime, until: datetime) -> list[SegmentActivity]:
    """For every stored segment, in key order: members now, entries and exits in [since, until)."""
    moves: dict[tuple[uuid.UUID, str], int] = {}
    query = (
        sa.select(change_table.c.segment_id, change_table.c.change, sa.func.count())
        .where(change_table.c.at >= since, change_table.c.at < until)
        .group_by(change_table.c.segment_id, change_table.c.change)
    )
    for segment_id, change, n in session.execute(query):
        moves[segment_id, change] = int(n)
    counts = member_counts(session=session)
    return [
        SegmentActivity(
            segment_id=r.id,
            key=r.key,
            name=r.name,
            members=counts.get(r.id, 0),
            entered=moves.get((r.id, "entered"), 0),
            exited=moves.get((r.id, "exited"), 0),
        )
        for r in list_segments(session=session)
    ]
