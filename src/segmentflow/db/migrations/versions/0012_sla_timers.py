"""SLA timers in a table, fired in batches by `segmentflow.FireSlaTimers`: `sla_timer` (pending warnings
and breaches, indexed by slot and firing time), `sla_firer` (each firer's slots and wake-up time), and the
webhook outbox columns of `sla_event`.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from segmentflow.db.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sla_timer",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ticket_id", sa.String(256), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime, nullable=False),
        sa.Column("fire_at", UTCDateTime, nullable=False),
        sa.Column("slot", sa.SmallInteger, nullable=False),
        sa.Column("policy_key", sa.String(256), nullable=False),
        sa.Column("contact_key", sa.String(512), nullable=True),
        sa.Column("webhook_url", sa.Text, nullable=True),
        sa.UniqueConstraint("ticket_id", "metric", "kind", name="uq_sla_timer_ticket_metric_kind"),
    )
    op.create_index("ix_sla_timer_slot_fire_at", "sla_timer", ["slot", "fire_at"])
    op.create_table(
        "sla_firer",
        sa.Column("id", sa.String(512), primary_key=True),
        sa.Column("shard", sa.SmallInteger, nullable=False),
        sa.Column("shards", sa.SmallInteger, nullable=False),
        sa.Column("wake_at", UTCDateTime, nullable=True),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    with op.batch_alter_table("sla_event") as batch:
        batch.add_column(sa.Column("webhook_url", sa.Text, nullable=True))
        batch.add_column(sa.Column("webhook_state", sa.String(16), nullable=True))
        batch.add_column(sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("webhook_next_at", UTCDateTime, nullable=True))
    op.create_index("ix_sla_event_webhook_next_at", "sla_event", ["webhook_next_at"])


def downgrade() -> None:
    op.drop_index("ix_sla_event_webhook_next_at", "sla_event")
    with op.batch_alter_table("sla_event") as batch:
        for name in ("webhook_next_at", "webhook_attempts", "webhook_state", "webhook_url"):
            batch.drop_column(name)
    op.drop_table("sla_firer")
    op.drop_index("ix_sla_timer_slot_fire_at", "sla_timer")
    op.drop_table("sla_timer")
