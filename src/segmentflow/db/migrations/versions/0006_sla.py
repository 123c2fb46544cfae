"""SLA policies, tickets, SLA events and the change-feed watchers' cursors.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_policy",
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False, unique=True),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "ticket",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("contact_key", sa.String(512), nullable=True),
        sa.Column("workflow_id", sa.String(512), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("policy_key", sa.String(256), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_ticket_contact_key", "ticket", ["contact_key"])
    op.create_index("ix_ticket_status", "ticket", ["status"])
    op.create_table(
        "sla_event",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_id", sa.String(256), nullable=False),
        sa.Column("contact_key", sa.String(512), nullable=True),
        sa.Column("segments", sa.JSON, nullable=False),
        sa.Column("policy_key", sa.String(256), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("fired_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("ticket_id", "metric", "kind", "due_at", name="uq_sla_event_due"),
    )
    op.create_index("ix_sla_event_ticket_id", "sla_event", ["ticket_id"])
    op.create_table(
        "sla_watch",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sla_watch")
    op.drop_index("ix_sla_event_ticket_id", table_name="sla_event")
    op.drop_table("sla_event")
    op.drop_index("ix_ticket_status", table_name="ticket")
    op.drop_index("ix_ticket_contact_key", table_name="ticket")
    op.drop_table("ticket")
    op.drop_table("sla_policy")
