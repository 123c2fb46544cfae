"""Actions, AI instructions and the refusal audit (message handling).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(256), nullable=False, unique=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("restricted_to_segments", sa.JSON, nullable=False),
        sa.Column("trigger_phrases", sa.JSON, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("webhook", sa.JSON, nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "instruction",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(256), nullable=False, unique=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("restricted_to_segments", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "action_refusal",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("contact_key", sa.String(512), nullable=True),
        sa.Column("action_key", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("workflow_id", sa.String(512), nullable=True),
    )
    op.create_index("ix_action_refusal_at", "action_refusal", ["at"])


def downgrade() -> None:
    op.drop_index("ix_action_refusal_at", table_name="action_refusal")
    op.drop_table("action_refusal")
    op.drop_table("instruction")
    op.drop_table("action")
