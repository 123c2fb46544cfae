"""The change feed's two indexes holding contact keys become one, and the segment's rows get an index
of their own: `ix_membership_change_contact` (contact_key, segment_key, seq) and
`ix_membership_change_segment_key_seq` (segment_key, seq) replace `ix_membership_change_contact_key`
(contact_key) and `ix_membership_change_pair` (segment_key, contact_key, seq).

Every lookup served still has an index, most a better one: a contact's rows (`services.presence`, the
report's `contacts` filter) are the contact index's prefix; a (segment, contact) pair's rows in seq order
(the report's `membership_intervals`) are two equalities and then seq, whichever key comes first; a
sequence's next page of its segment's feed (`sync_enrollments`: segment_key, seq > cursor, in seq order)
reads (segment_key, seq) in order, where the pair index made it read and sort the segment's whole
history (100,000 x 50 on PostgreSQL, 5,000 rows from cursor 0: 3 ms with either, 62-144 ms with neither;
past cursor 0 the pair index still reads the whole history).
Contact keys arrive in no particular order (a multi-kind contact's key starts with its first kind's), so
each feed row was a random insert into both old indexes; (segment_key, seq) takes each row at the end of
its segment's run. 100,000 x 50 on SQLite, applying alone: 9.0 -> 7.0 s for the contact index.

Building the indexes reads the whole feed and, as every index build in these migrations, holds writes
to the feed until it is done (PostgreSQL: ~2 s per million rows here).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_membership_change_contact", "membership_change", ["contact_key", "segment_key", "seq"]
    )
    op.create_index("ix_membership_change_segment_key_seq", "membership_change", ["segment_key", "seq"])
    op.drop_index("ix_membership_change_pair", table_name="membership_change")
    op.drop_index("ix_membership_change_contact_key", table_name="membership_change")


def downgrade() -> None:
    op.create_index("ix_membership_change_contact_key", "membership_change", ["contact_key"])
    op.create_index("ix_membership_change_pair", "membership_change", ["segment_key", "contact_key", "seq"])
    op.drop_index("ix_membership_change_segment_key_seq", table_name="membership_change")
    op.drop_index("ix_membership_change_contact", table_name="membership_change")
