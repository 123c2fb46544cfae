"""Every SQL table of segmentflow, as SQLModel classes. Stored rules are JSON turned into the rules model in
exactly one place: `SegmentRecord.definition_model()`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from segmentflow.db.types import UTCDateTime
from segmentflow.rules import Segment, parse_segment

__all__ = [
    "ApiKey",
    "Contact",
    "MembershipChange",
    "RecomputeProgress",
    "SQLModel",
    "SegmentMembership",
    "SegmentRecord",
    "api_key_table",
    "change_table",
    "contact_table",
    "membership_table",
    "progress_table",
    "segment_table",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contact(SQLModel, table=True):
    """A contact: a LaunchDarkly context stored whole, addressed by its fully-qualified key. `id` is the
    paging cursor for recomputes (integers order the same in every database)."""

    __tablename__ = "contact"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(512), nullable=False, unique=True))
    kinds: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    context: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    #: When memberships were last computed for this contact; None until the first computation.
    computed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))


class SegmentRecord(SQLModel, table=True):
    """A segment: LaunchDarkly's JSON definition plus its identity and bookkeeping."""

    __tablename__ = "segment"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))
    definition: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))

    def definition_model(self) -> Segment:
        return parse_segment(self.definition)


class SegmentMembership(SQLModel, table=True):
    """A contact currently in a segment, since when."""

    __tablename__ = "segment_membership"

    segment_id: uuid.UUID = Field(
        sa_column=sa.Column(sa.Uuid, sa.ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    )
    contact_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )
    since: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class MembershipChange(SQLModel, table=True):
    """The membership change feed: one row per entry or exit, numbered by an increasing `seq`. Keys are
    copied in so the feed outlives deleted segments and contacts."""

    __tablename__ = "membership_change"

    seq: int | None = Field(default=None, primary_key=True)
    segment_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, nullable=False, index=True))
    segment_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    contact_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    contact_key: str = Field(sa_column=sa.Column(sa.String(512), nullable=False, index=True))
    change: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))  # "entered" | "exited"
    at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class RecomputeProgress(SQLModel, table=True):
    """Durable cursor of one contact range of a recompute run, written in the same transaction as each page,
    so a run resumed after a crash continues exactly where the database says and counts nothing twice."""

    __tablename__ = "recompute_progress"

    run_token: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    range_index: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    cursor: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    contacts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    entered: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    exited: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


def _table(model: type[SQLModel]) -> sa.Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


#: Core tables, for bulk statements (typed, so SQL building needs no casts).
contact_table = _table(Contact)
segment_table = _table(SegmentRecord)
membership_table = _table(SegmentMembership)
change_table = _table(MembershipChange)
progress_table = _table(RecomputeProgress)


class ApiKey(SQLModel, table=True):
    """An HTTP API key: only the SHA-256 of the token is kept. `id` is the public part of the token
    (`sf_<id>_<secret>`), so a presented token is looked up by id and its hash compared in constant time."""

    __tablename__ = "api_key"

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    #: Space-separated, as OAuth writes scopes.
    scopes: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))

    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


api_key_table = _table(ApiKey)
# The report endpoint counts entries and exits over a time window.
sa.Index("ix_membership_change_at", change_table.c.at)


# --- Message handling: actions, AI instructions, refusal audit (migration 0004) ---


# --- Outbound sequences: definitions, enrollments, sends (migration 0005) ---


# --- SLA: policies, tickets, SLA events (migration 0006) ---
