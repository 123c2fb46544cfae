"""Segment-targeted outbound sequences: definitions, enrollments, sends.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sequence",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("key", sa.String(128), nullable=False, unique=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("segment_key", sa.String(256), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("feed_cursor", sa.Integer, nullable=False),
        sa.Column("launched_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "enrollment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sequence_id", sa.Uuid, sa.ForeignKey("sequence.id", ondelete="CASCADE"), nullable=False),
        sa.Column("contact_id", sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), nullable=False),
        sa.Column("contact_key", sa.String(512), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=True),
        sa.Column("next_due_at", UTCDateTime, nullable=True),
        sa.Column("enrolled_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_enrollment_due", "enrollment", ["sequence_id", "next_due_at"])
    op.create_index("ix_enrollment_contact", "enrollment", ["contact_id", "sequence_id"])
    op.create_index(
        "uq_enrollment_active",
        "enrollment",
        ["sequence_id", "contact_id"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "send",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "enrollment_id", sa.Integer, sa.ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("sequence_id", sa.Uuid, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("response_status", sa.Integer, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.UniqueConstraint("enrollment_id", "step", name="uq_send_enrollment_step"),
    )
    op.create_index("ix_send_contact_created", "send", ["contact_id", "created_at"])
    op.create_index("ix_send_sequence_step", "send", ["sequence_id", "step"])


def downgrade() -> None:
    op.drop_table("send")
    op.drop_table("enrollment")
    op.drop_table("sequence")
