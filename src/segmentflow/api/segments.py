"""Segments: list, read by id or key, create, replace, semantic patch, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlmodel import Session

from segmentflow.api.deps import ReadKey, ReadSession, SegmentRef, WriteKey, WriteSession, now
from segmentflow.api.errors import invalid, responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.api.models import (
    SegmentCreate,
    SegmentDeleted,
    SegmentPatch,
    SegmentPublic,
    SegmentReplace,
    SegmentSaved,
    SegmentsPublic,
)
from segmentflow.db.tables import SegmentRecord
from segmentflow.services import segment_admin
from segmentflow.services.membership import UnknownSegmentError, member_counts
from segmentflow.services.segments import get_segment, page_segments

__all__ = ["public_segments", "router"]

router = APIRouter(prefix="/contacts/segments", tags=["segments"], route_class=StrictJsonRoute)

IfMatch = Annotated[
    str | None,
    Header(
        max_length=64,
        description='The version being changed, as the `ETag` gave it (`"3"`); `*` matches any.',
    ),
]


def public_segments(session: Session, records: list[SegmentRecord]) -> list[SegmentPublic]:
    counts = member_counts(session=session, segment_ids=[r.id for r in records])
    return [
        SegmentPublic(
            id=r.id,
            key=r.key,
            name=r.name,
            description=r.description,
            version=r.version,
            definition=r.definition,
            created_at=r.created_at,
            updated_at=r.updated_at,
            member_count=counts.get(r.id, 0),
        )
        for r in records
    ]


def _one(session: Session, record: SegmentRecord, response: Response) -> SegmentPublic:
    response.headers["ETag"] = f'"{record.version}"'
    return public_segments(session, [record])[0]


def _saved(session: Session, saved: segment_admin.SegmentSaved, response: Response) -> SegmentSaved:
    """The saved segment beside the warnings of its definition (values it keeps that never match)."""
    return SegmentSaved(**_one(session, saved.record, response).model_dump(), warnings=saved.warnings)


def _expected_version(body_version: int | None, if_match: str | None) -> int | None:
    """The version the client read: the body's `version`, else `If-Match`; both must agree."""
    header = None
    if if_match is not None and if_match.strip() != "*":
        tag = if_match.strip().removeprefix("W/").strip('"')
        if not tag.isdigit() or len(tag) > 10:
            raise invalid(["header", "if-match"], 'expected an ETag such as "3"')
        header = int(tag)
    if body_version is not None and header is not None and body_version != header:
        raise invalid(["header", "if-match"], f"If-Match {header} disagrees with the body's version")
    return body_version if body_version is not None else header


@router.get("", responses=responses(401, 403))
def list_segments(
    session: ReadSession,
    _key: ReadKey,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SegmentsPublic:
    """Segments in key order, a page at a time. Scope `segments:read`."""
    records, total = page_segments(session=session, offset=(page - 1) * limit, limit=limit)
    return SegmentsPublic(
        data=public_segments(session, records),
        total=total,
        page=page,
        limit=limit,
        next_page=page + 1 if page * limit < total else None,
    )


@router.get("/{segment_id}", responses=responses(401, 403, 404))
def read_segment(
    segment_id: SegmentRef, session: ReadSession, _key: ReadKey, response: Response
) -> SegmentPublic:
    """One segment by UUID `id` (a UUID-shaped reference only ever matches an id) or else by `key`.
    Scope `segments:read`."""
    record = get_segment(session=session, ref=segment_id)
    if record is None:
        raise UnknownSegmentError(f'unknown segment "{segment_id}"')
    return _one(session, record, response)


@router.post("", status_code=status.HTTP_201_CREATED, responses=responses(400, 401, 403, 409))
def create_segment(
    body: SegmentCreate, session: WriteSession, _key: WriteKey, response: Response
) -> SegmentSaved:
    """Create a segment (version 1) and compute its members. Scope `segments:write`."""
    saved = segment_admin.create_segment(
        session=session,
        key=body.key,
        name=body.name,
        description=body.description,
        definition=body.definition.to_wire(),
        now=now(),
    )
    response.headers["Location"] = f"/contacts/segments/{saved.record.id}"
    return _saved(session, saved, response)


@router.put("/{segment_id}", responses=responses(400, 401, 403, 404, 409))
def replace_segment(
    segment_id: SegmentRef,
    body: SegmentReplace,
    session: WriteSession,
    _key: WriteKey,
    response: Response,
    if_match: IfMatch = None,
) -> SegmentSaved:
    """Replace name, description and definition; recompute it and its dependents. A stale `version` or
    `If-Match` is a 409. Scope `segments:write`."""
    saved = segment_admin.replace_segment(
        session=session,
        ref=segment_id,
        name=body.name,
        description=body.description,
        definition=body.definition.to_wire(),
        expected_version=_expected_version(body.version, if_match),
        now=now(),
    )
    return _saved(session, saved, response)


@router.patch("/{segment_id}", responses=responses(400, 401, 403, 404, 409))
def patch_segment(
    segment_id: SegmentRef,
    body: SegmentPatch,
    session: WriteSession,
    _key: WriteKey,
    response: Response,
    if_match: IfMatch = None,
) -> SegmentSaved:
    """Apply LaunchDarkly semantic-patch instructions, all or none; recompute it and its dependents.
    Without a version the instructions apply to the current definition. Scope `segments:write`."""
    saved = segment_admin.patch_segment(
        session=session,
        ref=segment_id,
        instructions=body.instructions,
        expected_version=_expected_version(body.version, if_match),
        now=now(),
    )
    return _saved(session, saved, response)


@router.delete("/{segment_id}", responses=responses(401, 403, 404, 409))
def delete_segment(
    segment_id: SegmentRef, session: WriteSession, _key: WriteKey, if_match: IfMatch = None
) -> SegmentDeleted:
    """Delete a segment nothing references (another segment's `segmentMatch`, an SLA policy, a sequence,
    an action's or instruction's restriction: a 409 names them); its members get `exited` events.
    Scope `segments:write`."""
    key, exited = segment_admin.delete_segment(
        session=session, ref=segment_id, expected_version=_expected_version(None, if_match), now=now()
    )
    return SegmentDeleted(key=key, exited=exited)
