"""Memberships, read from the precomputed tables: check one, a contact's segments, a segment's members,
the change feed and the per-segment report. Registered before the segments router, so that its fixed
paths (`/changes`, `/report`, `/contacts/...`) win over `/{segment_id}`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlmodel import Session, col, select

from segmentflow.api.deps import ContactId, ReadEngine, ReadKey, ReadSession, SegmentRef, now
from segmentflow.api.errors import invalid, responses
from segmentflow.api.models import (
    ChangePublic,
    ChangesPublic,
    ContactSegmentsPublic,
    MemberPublic,
    MembershipPublic,
    MembersPublic,
    ReportPublic,
    SegmentActivityPublic,
    UtcDateTime,
)
from segmentflow.api.segments import public_segments
from segmentflow.db.tables import SegmentRecord
from segmentflow.services.membership import UnknownSegmentError, contact_segments, read_membership
from segmentflow.services.reports import list_changes, list_members, segment_activity
from segmentflow.services.segments import get_segment

__all__ = ["router"]

router = APIRouter(prefix="/contacts/segments", tags=["memberships"])

_DEFAULT_WINDOW = timedelta(days=7)


def _segments_by_key(session: Session, keys: list[str]) -> list[SegmentRecord]:
    if not keys:
        return []
    query = select(SegmentRecord).where(col(SegmentRecord.key).in_(keys)).order_by(SegmentRecord.key)
    return list(session.exec(query))


@router.get("/changes", responses=responses(401, 403))
def read_changes(
    session: ReadSession,
    _key: ReadKey,
    after: Annotated[int, Query(ge=0, le=2**62, description="The last seq seen (0 for the start).")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ChangesPublic:
    """The membership change feed: entries and exits with seq > `after`, in seq order. Rows appear in seq
    order as they commit, so polling with the last seq seen misses nothing. Scope `segments:read`."""
    rows = list_changes(session=session, after=after, limit=limit)
    return ChangesPublic(
        data=[
            ChangePublic(
                seq=r.seq,
                segment_id=r.segment_id,
                segment_key=r.segment_key,
                contact_key=r.contact_key,
                change="entered" if r.change == "entered" else "exited",
                at=r.at,
            )
            for r in rows
        ],
        limit=limit,
        next_after=rows[-1].seq if rows else after,
    )


@router.get("/report", responses=responses(401, 403))
def read_report(
    session: ReadSession,
    _key: ReadKey,
    since: Annotated[
        UtcDateTime | None, Query(description="Window start, inclusive (default: 7 days before `until`).")
    ] = None,
    until: Annotated[UtcDateTime | None, Query(description="Window end, exclusive (default: now).")] = None,
) -> ReportPublic:
    """Per segment: members now, and entries and exits within [since, until). Scope `segments:read`."""
    end = until or now()
    try:
        start = since or end - _DEFAULT_WINDOW
    except OverflowError:
        raise invalid(["query", "until"], "too early to open a default window before it") from None
    if start >= end:
        raise invalid(["query", "since"], "since must be before until")
    rows = segment_activity(session=session, since=start, until=end)
    return ReportPublic(
        since=start,
        until=end,
        data=[
            SegmentActivityPublic(
                segment_id=r.segment_id,
                segment_key=r.key,
                name=r.name,
                members=r.members,
                entered=r.entered,
                exited=r.exited,
            )
            for r in rows
        ],
    )


@router.get("/contacts/{contact_id:path}", responses=responses(401, 403, 404))
def read_contact_segments(
    contact_id: ContactId, session: ReadSession, _key: ReadKey
) -> ContactSegmentsPublic:
    """The segments a contact belongs to. Scope `segments:read`."""
    keys, computed_at = contact_segments(session=session, contact_key=contact_id)
    return ContactSegmentsPublic(
        data=public_segments(session, _segments_by_key(session, keys)),
        contact_key=contact_id,
        computed_at=computed_at,
    )


@router.get("/{segment_id}/contacts/{contact_id:path}", responses=responses(401, 403, 404))
def check_contact(
    segment_id: SegmentRef, contact_id: ContactId, engine: ReadEngine, _key: ReadKey
) -> MembershipPublic:
    """Is the contact in the segment, and when that was computed. Scope `segments:read`."""
    # The hot path: one read in autocommit rather than a request-long session (see `read_membership`).
    result = read_membership(engine=engine, segment_ref=segment_id, contact_key=contact_id)
    return MembershipPublic.model_validate(result, from_attributes=True)


@router.get("/{segment_id}/members", responses=responses(401, 403, 404))
def read_members(
    segment_id: SegmentRef,
    session: ReadSession,
    _key: ReadKey,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="`next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MembersPublic:
    """A segment's members in a stable order, a page at a time. Scope `segments:read`."""
    record = get_segment(session=session, ref=segment_id)
    if record is None:
        raise UnknownSegmentError(f'unknown segment "{segment_id}"')
    members = list_members(session=session, segment_id=record.id, after=int(cursor or 0), limit=limit + 1)
    page = members[:limit]
    return MembersPublic(
        data=[MemberPublic(key=m.key, since=m.since) for m in page],
        limit=limit,
        next_cursor=str(page[-1].contact_id) if len(members) > limit else None,
    )
