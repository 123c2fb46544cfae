"""The console's rollup of the change feed: entries and exits per segment per UTC day and hour, and the
last feed seq folded in; an index that reads a segment's newest feed rows.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "segment_change_day",
        sa.Column("segment_id", sa.Uuid, primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("entered", sa.Integer, nullable=False),
        sa.Column("exited", sa.Integer, nullable=False),
    )
    op.create_index("ix_membership_change_segment_seq", "membership_change", ["segment_id", "seq"])
    op.create_index("ix_segment_change_day_day", "segment_change_day", ["day"])
    op.create_table(
        "segment_change_hour",
        sa.Column("segment_id", sa.Uuid, primary_key=True),
        sa.Column("hour", UTCDateTime, primary_key=True),
        sa.Column("entered", sa.Integer, nullable=False),
        sa.Column("exited", sa.Integer, nullable=False),
    )
    op.create_table(
        "segment_change_rollup",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_membership_change_segment_seq", table_name="membership_change")
    op.drop_table("segment_change_rollup")
    op.drop_table("segment_change_hour")
    op.drop_table("segment_change_day")
