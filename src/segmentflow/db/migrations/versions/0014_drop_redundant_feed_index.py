"""Drop `ix_membership_change_segment_id`: `ix_membership_change_segment_seq` (segment_id, seq) serves
every lookup by segment id, and each change-feed row written paid for both (the full recompute writes
one per membership change).

Revision ID: 0014
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_membership_change_segment_id", table_name="membership_change")


def downgrade() -> None:
    op.create_index("ix_membership_change_segment_id", "membership_change", ["segment_id"])
