"""Contacts, segments, memberships and the membership change feed.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(512), nullable=False, unique=True),
        sa.Column("kinds", sa.String(512), nullable=False),
        sa.Column("context", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("computed_at", UTCDateTime, nullable=True),
    )
    op.create_table(
        "segment",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("key", sa.String(256), nullable=False, unique=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "segment_membership",
        sa.Column("segment_id", sa.Uuid, sa.ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True),
        sa.Column(
            "contact_id", sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("since", UTCDateTime, nullable=False),
    )
    op.create_index("ix_segment_membership_contact_id", "segment_membership", ["contact_id"])
    op.create_table(
        "membership_change",
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("segment_id", sa.Uuid, nullable=False),
        sa.Column("segment_key", sa.String(256), nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("contact_key", sa.String(512), nullable=False),
        sa.Column("change", sa.String(8), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_membership_change_segment_id", "membership_change", ["segment_id"])
    op.create_index("ix_membership_change_contact_key", "membership_change", ["contact_key"])


def downgrade() -> None:
    op.drop_table("membership_change")
    op.drop_table("segment_membership")
    op.drop_table("segment")
    op.drop_table("contact")
