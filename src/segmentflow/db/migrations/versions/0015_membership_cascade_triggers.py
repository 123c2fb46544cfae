"""PostgreSQL: `segment_membership`'s two foreign keys become delete triggers.

The membership table is derived data, written only by the recompute (`services.membership`), which holds
the row locks of the contacts it writes (FOR UPDATE, or the upsert's own) and, since this revision, a
KEY SHARE lock on the segments it inserts into, checking they still exist (`_PG_LOCK_SEGMENTS`). Each
foreign key instead ran a referential-integrity query per inserted row: the full recompute of 100,000 x 50
spent about a third of its PostgreSQL time on 1.7 million of them (`bench/recompute.py`). Deleting a
contact or a segment still deletes its memberships, now through one statement-level trigger each
(transition tables: one DELETE per statement, not per row). SQLite keeps its foreign keys (its bulk writes
turn the checks off when they cannot fail, `_apply_sqlite`).

contract: it drops two constraints. Workers of the releases before it keep working on the new schema:
their inserts never relied on the foreign keys, and deletes still cascade, through the triggers. What they
lose is the database refusing a membership they write for a segment deleted at that very moment (they take
no KEY SHARE lock); such a row would name a segment that no longer exists, which every read joins away,
and would stay until its contact is deleted. To rule even that out, run `segmentflow db upgrade` once the
older workers are drained (`SEGMENTFLOW_MIGRATE_ON_START=false` on the new ones until then).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_CASCADES = {  # referenced table -> membership column
    "contact": "contact_id",
    "segment": "segment_id",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _CASCADES.items():
        op.drop_constraint(f"segment_membership_{column}_fkey", "segment_membership", type_="foreignkey")
        op.execute(
            f"CREATE FUNCTION segmentflow_{table}_memberships_gone() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n"
            f"  DELETE FROM segment_membership m USING gone WHERE m.{column} = gone.id;\n"
            f"  RETURN NULL;\n"
            f"END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_memberships_gone AFTER DELETE ON {table} "
            f"REFERENCING OLD TABLE AS gone FOR EACH STATEMENT "
            f"EXECUTE FUNCTION segmentflow_{table}_memberships_gone()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _CASCADES.items():
        op.execute(f"DROP TRIGGER {table}_memberships_gone ON {table}")
        op.execute(f"DROP FUNCTION segmentflow_{table}_memberships_gone()")
        op.execute(
            f"DELETE FROM segment_membership m "
            f"WHERE NOT EXISTS (SELECT FROM {table} t WHERE t.id = m.{column})"
        )
        op.create_foreign_key(
            f"segment_membership_{column}_fkey",
            "segment_membership",
            table,
            [column],
            ["id"],
            ondelete="CASCADE",
        )
