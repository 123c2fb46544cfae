"""Durable cursors for resumable recompute runs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recompute_progress",
        sa.Column("run_token", sa.String(64), primary_key=True),
        sa.Column("range_index", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("contacts", sa.Integer, nullable=False),
        sa.Column("entered", sa.Integer, nullable=False),
        sa.Column("exited", sa.Integer, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("recompute_progress")
