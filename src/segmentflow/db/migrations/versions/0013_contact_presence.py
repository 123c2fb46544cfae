"""The report's distinct contacts in any segment: when each contact came to be in a segment and in none
any more (`contact_presence_change`), and a per-day rollup of those (`presence_change_day`), folded from
the change feed up to the seq in `segment_change_rollup`'s row 2 (absent: from the first feed row, on the
next report). Only adds: a worker of the release before never reads or writes them.

Revision ID: 0013
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contact_presence_change",
        sa.Column("contact_key", sa.String(512), primary_key=True),
        sa.Column("contact_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", UTCDateTime, primary_key=True),
        sa.Column("delta", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_contact_presence_change_at", "contact_presence_change", ["at"])
    op.create_table(
        "presence_change_day",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("entered", sa.Integer, nullable=False),
        sa.Column("exited", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("presence_change_day")
    op.drop_index("ix_contact_presence_change_at", table_name="contact_presence_change")
    op.drop_table("contact_presence_change")
