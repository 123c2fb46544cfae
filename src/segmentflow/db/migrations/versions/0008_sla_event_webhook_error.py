"""An SLA event records why its webhook failed for good (egress refusal, redirect, 4xx).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sla_event") as batch:
        batch.add_column(sa.Column("webhook_error", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sla_event") as batch:
        batch.drop_column("webhook_error")
