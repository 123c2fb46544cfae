"""An audience preview: who a segment definition would hold if it were saved now, against the stored
contacts and the other stored segments, and who would enter and exit compared with the stored members.
Reads only: nothing is written, no lock is taken. Never commits.

The candidate is validated as a save validates it (the same `parse_segment` and strict
`compile_segments` over the whole stored set), so a preview refuses what a save would refuse, with the
same `RuleError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import contact_table, membership_table, segment_table
from segmentflow.rules import Segment, compile_segments, parse_context, parse_segment
from segmentflow.services.segments import list_segments

__all__ = ["SegmentPreview", "candidate_segment", "count_contacts", "preview_segment"]


@dataclass
class SegmentPreview:
    """How many stored contacts would be members; how many would enter and exit; a few of each."""

    members: int = 0
    entering: int = 0
    exiting: int = 0
    contacts: int = 0
    sample: list[str] = field(default_factory=list)
    sample_entering: list[str] = field(default_factory=list)
    sample_exiting: list[str] = field(default_factory=list)


def candidate_segment(
    *, key: str, name: str | None, description: str | None, definition: Mapping[str, Any], version: int = 1
) -> Segment:
    """The segment a save of these fields would store (before ids are assigned); `RuleError` when the
    definition is refused."""
    data = {**definition, "key": key, "name": name or key, "version": version}
    data.pop("description", None)
    if description:
        data["description"] = description
    return parse_segment(data)


def count_contacts(*, session: Session) -> int:
    """How many contacts are stored (what a preview or a save's recompute goes through)."""
    return int(session.scalar(sa.select(sa.func.count()).select_from(contact_table)) or 0)


def preview_segment(
    *,
    session: Session,
    segment: Segment,
    page_size: int = 5000,
    sample_size: int = 10,
    progress: Callable[[SegmentPreview], None] | None = None,
) -> SegmentPreview:
    """Evaluate `segment` (new, or replacing the stored one with its key) for every stored contact, a page
    of contacts (id, key and context only) and of the stored segment's members at a time. Only the
    candidate is evaluated: a segment it references through `segmentMatch` is evaluated only when it is
    reached, once per contact. `progress` is called with the figures so far after each page."""
    others = [r.definition_model() for r in list_segments(session=session) if r.key != segment.key]
    evaluate = compile_segments([*others, segment])[segment.key].evaluate
    stored_id = session.scalar(sa.select(segment_table.c.id).where(segment_table.c.key == segment.key))
    out = SegmentPreview()
    after = 0
    while True:
        rows = session.execute(
            sa.select(contact_table.c.id, contact_table.c.key, contact_table.c.context)
            .where(contact_table.c.id > after)
            .order_by(contact_table.c.id)
            .limit(page_size)
        ).all()
        if not rows:
            return out
        stored: set[int] = set()
        if stored_id is not None:
            stored = set(
                session.scalars(
                    sa.select(membership_table.c.contact_id).where(
                        membership_table.c.segment_id == stored_id,
                        membership_table.c.contact_id.between(rows[0].id, rows[-1].id),
                    )
                )
            )
        out.contacts += len(rows)
        for cid, key, context in rows:
            member = evaluate(parse_context(context).by_kind, {})
            if member:
                out.members += 1
                if len(out.sample) < sample_size:
                    out.sample.append(key)
                if cid not in stored:
                    out.entering += 1
                    if len(out.sample_entering) < sample_size:
                        out.sample_entering.append(key)
            elif cid in stored:
                out.exiting += 1
                if len(out.sample_exiting) < sample_size:
                    out.sample_exiting.append(key)
        after = rows[-1].id
        if progress is not None:
            progress(out)
