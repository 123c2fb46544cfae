"""Distinct contacts in at least one segment over time, kept from the change feed: for each contact, the
instants where it came to be in a segment (`delta` 1) or in none any more (-1), its feed rows replayed in
`at` order (`contact_presence_change`), and the count of those per UTC day (`presence_change_day`). The
number of contacts in any segment at `t` is then the sum of the days before `t`'s day and of `t`'s day's
rows up to `t`: a few rows per day, not one per contact.

`fold_presence` rebuilds the rows of every contact key the feed gained rows for since its last fold, from
that key's whole feed (an index on the key), under the feed writers' lock; its seq is row 2 of
`segment_change_rollup` (`fold_change_feed` keeps row 1), claimed by a compare-and-set, so two folds never
apply the same rows twice. The segment report folds before it reads. A contact is a (key, id) pair: a key
deleted and stored again has two ids. Never commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.bulk import bulk_insert, insert_on_conflict
from segmentflow.db.tables import (
    change_table,
    presence_change_table,
    presence_day_table,
    segment_change_rollup_table,
)
from segmentflow.services.membership import take_feed_lock

__all__ = ["PRESENCE_ROW", "fold_presence"]

#: The `segment_change_rollup` row holding the last feed seq folded into the presence rows.
PRESENCE_ROW = 2

#: Up to this many touched keys are read through the feed's key index, a list at a time; more (a first
#: fold, a full recompute) in one pass over the feed.
_LISTED = 5000
_CHUNK = 1000


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _transitions(session: Session, keys: Any, top: int) -> list[tuple[str, int, datetime, int]]:
    """(key, id, at, delta) of every instant where a contact of `keys` (a list, or a subquery of keys)
    comes into a segment or leaves its last, replaying its feed rows up to seq `top`."""
    feed = change_table
    net = sa.func.sum(sa.case((feed.c.change == "entered", 1), else_=-1))
    per_instant = (
        sa.select(feed.c.contact_key, feed.c.contact_id, feed.c.at, net.label("d"))
        .where(feed.c.contact_key.in_(keys), feed.c.seq <= top)
        .group_by(feed.c.contact_key, feed.c.contact_id, feed.c.at)
        .subquery("per_instant")
    )
    running = sa.func.sum(per_instant.c.d).over(
        partition_by=(per_instant.c.contact_key, per_instant.c.contact_id),
        order_by=per_instant.c.at,
        rows=(None, 0),
    )
    walked = sa.select(
        per_instant.c.contact_key,
        per_instant.c.contact_id,
        per_instant.c.at,
        per_instant.c.d,
        running.label("c"),
    ).subquery("walked")
    delta = sa.case((walked.c.c > 0, 1), else_=0) - sa.case((walked.c.c - walked.c.d > 0, 1), else_=0)
    query = sa.select(walked.c.contact_key, walked.c.contact_id, walked.c.at, delta).where(delta != 0)
    return [(key, int(cid), at, int(d)) for key, cid, at, d in session.execute(query)]


def fold_presence(session: Session) -> int:
    """Rebuild the presence rows of the contact keys with feed rows since the last fold, and the day counts
    with them; returns how many keys. A first look without the lock returns at once when the feed has
    nothing new. Never commits."""
    state, feed, table = segment_change_rollup_table, change_table, presence_change_table
    top_q = sa.select(sa.func.coalesce(sa.func.max(feed.c.seq), 0))
    mine = state.c.id == PRESENCE_ROW
    done_at = session.scalar(sa.select(state.c.seq).where(mine))
    if done_at is not None and int(session.scalar(top_q) or 0) <= done_at:
        return 0
    take_feed_lock(session)
    session.execute(
        insert_on_conflict(session, state).on_conflict_do_nothing(), [{"id": PRESENCE_ROW, "seq": 0}]
    )
    done = int(session.scalar(sa.select(state.c.seq).where(mine)) or 0)
    top = int(session.scalar(top_q) or 0)
    if top <= done:
        return 0
    claimed = session.execute(state.update().where(mine, state.c.seq == done).values(seq=top)).rowcount  # type: ignore[attr-defined]
    if claimed != 1:  # another fold got there first
        return 0
    new_rows = sa.select(feed.c.contact_key).where(feed.c.seq > done, feed.c.seq <= top)
    touched = sorted(set(session.scalars(new_rows.distinct())))
    if not touched:
        return 0
    groups: list[Any] = (
        [touched[i : i + _CHUNK] for i in range(0, len(touched), _CHUNK)]
        if len(touched) <= _LISTED
        else [new_rows.scalar_subquery()]
    )
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fresh: list[tuple[str, int, datetime, int]] = []
    for keys in groups:
        old = sa.select(table.c.at, table.c.delta).where(table.c.contact_key.in_(keys))
        for at, d in session.execute(old):
            days[_day(at)][0 if d > 0 else 1] -= 1
        session.execute(table.delete().where(table.c.contact_key.in_(keys)))
        fresh.extend(_transitions(session, keys, top))
    for _, _, at, d in fresh:
        days[_day(at)][0 if d > 0 else 1] += 1
    bulk_insert(session, table, ("contact_key", "contact_id", "at", "delta"), fresh)
    changed = [{"day": day, "entered": e, "exited": x} for day, (e, x) in sorted(days.items()) if e or x]
    if changed:
        statement = insert_on_conflict(session, presence_day_table)
        statement = statement.on_conflict_do_update(
            index_elements=["day"],
            set_={
                "entered": presence_day_table.c.entered + statement.excluded.entered,
                "exited": presence_day_table.c.exited + statement.excluded.exited,
            },
        )
        for first in range(0, len(changed), 1000):
            session.execute(statement, changed[first : first + 1000])
    return len(touched)
