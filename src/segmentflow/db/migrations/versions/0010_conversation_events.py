"""Conversation events, the segment report's daily rollup, and an index that reads the change feed pair
by pair.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversation_event",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("contact_key", sa.String(512), nullable=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("handoff", sa.Boolean, nullable=True),
        sa.Column("csat", sa.SmallInteger, nullable=True),
        sa.Column("messages", sa.Integer, nullable=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_conversation_event_at", "conversation_event", ["at"])
    op.create_table(
        "report_day",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("dirty", sa.Boolean, nullable=False),
        sa.Column("feed_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "report_day_figures",
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("segment_key", sa.String(256), primary_key=True),
        *(
            sa.Column(name, sa.Integer, nullable=False)
            for name in (
                "conversations",
                "handoffs",
                "handoff_known",
                "csat_responses",
                "csat_sum",
                "csat_satisfied",
            )
        ),
    )
    op.create_index("ix_membership_change_pair", "membership_change", ["segment_key", "contact_key", "seq"])


def downgrade() -> None:
    op.drop_index("ix_membership_change_pair", table_name="membership_change")
    op.drop_table("report_day_figures")
    op.drop_table("report_day")
    op.drop_index("ix_conversation_event_at", table_name="conversation_event")
    op.drop_table("conversation_event")
