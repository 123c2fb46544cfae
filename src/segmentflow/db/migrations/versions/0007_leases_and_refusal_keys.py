"""Sequence leases owned by the round that took them; the refusal audit keyed by its activity.

`enrollment.lease_owner`: the activity (workflow id, run id, activity id) whose claim leases the row, so a
retried attempt of that round takes its dead predecessor's rows back at once. `action_refusal` gains the
run and activity id of the refusing activity and a unique index over (workflow id, run id, activity id):
a retry after the commit finds its row there instead of writing a second one.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("enrollment", sa.Column("lease_owner", sa.String(1024), nullable=True))
    op.create_index("ix_enrollment_lease_owner", "enrollment", ["lease_owner"])
    op.add_column("action_refusal", sa.Column("run_id", sa.String(128), nullable=True))
    op.add_column("action_refusal", sa.Column("activity_id", sa.String(256), nullable=True))
    op.create_index(
        "uq_action_refusal_activity",
        "action_refusal",
        ["workflow_id", "run_id", "activity_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_action_refusal_activity", table_name="action_refusal")
    with op.batch_alter_table("action_refusal") as batch:
        batch.drop_column("activity_id")
        batch.drop_column("run_id")
    op.drop_index("ix_enrollment_lease_owner", table_name="enrollment")
    with op.batch_alter_table("enrollment") as batch:
        batch.drop_column("lease_owner")
