"""Segment writes one at a time (create, replace, semantic patch, delete) with optimistic concurrency: the
version check, the write and the recompute of the segment and its dependents happen in the caller's one
transaction. Never commits.

Writers serialise on `hold_write_lock` before reading what they change, and the UPDATE is conditional on
the version read (`WHERE version = :read`), so no update is ever lost: a stale expected version is a
`VersionConflictError`, a patch without one applies to the current definition. The whole stored set must
still compile strictly after the write (the rules engine's `RuleError` propagates otherwise).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from segmentflow.db.tables import SegmentRecord, contact_table, membership_table, segment_table
from segmentflow.rules import RuleError, Segment, compile_segments, parse_segment
from segmentflow.rules.patch import Instruction, apply_patch, with_ids
from segmentflow.services.membership import (
    MembershipDiff,
    RecomputeCounts,
    UnknownSegmentError,
    apply_diff,
    recompute_page,
)
from segmentflow.services.segments import dependents_of, get_segment, list_segments, load_index

__all__ = [
    "ConflictError",
    "SegmentExistsError",
    "SegmentInUseError",
    "VersionConflictError",
    "create_segment",
    "delete_segment",
    "hold_write_lock",
    "patch_segment",
    "recompute_segments",
    "replace_segment",
]

NewId = Callable[[], str]
_WRITE_LOCK = 0x5E6F12  # PostgreSQL advisory lock: segment writers exclusive, contact writers shared


class ConflictError(Exception):
    """A write refused because of the stored state (maps to HTTP 409)."""


class SegmentExistsError(ConflictError):
    """A segment with that key already exists."""


class VersionConflictError(ConflictError):
    """The expected version is not the stored one."""


class SegmentInUseError(ConflictError):
    """Other segments reference this one through `segmentMatch`."""


def _uuid4() -> str:
    return str(uuid.uuid4())


def hold_write_lock(session: Session, *, shared: bool = False) -> None:
    """Order this transaction's writes after any running segment write. The one dialect branch here:
    PostgreSQL takes a transaction-level advisory lock (exclusive for segment writers, shared for contact
    writers, so a contact saved during a segment save is evaluated against the new definition); SQLite has
    one writer at a time, so a no-op write as the first statement takes the database's write lock (waiting
    out the busy timeout), as BEGIN IMMEDIATE would, before anything is read."""
    if session.get_bind().dialect.name == "postgresql":
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        session.execute(sa.text(f"SELECT {function}(:k)"), {"k": _WRITE_LOCK})
    else:
        session.execute(segment_table.update().where(sa.false()).values(version=segment_table.c.version))


def recompute_segments(
    *, session: Session, keys: Sequence[str], now: datetime, page_size: int = 2000
) -> RecomputeCounts:
    """Re-evaluate these segments and everything depending on them for every contact, page by page in
    the caller's transaction."""
    index = load_index(session=session)
    only = dependents_of((s.definition for s in index.compiled.values()), keys)
    total = RecomputeCounts()
    after = 0
    while True:
        counts, last = recompute_page(
            session=session, index=index, after_id=after, limit=page_size, segment_keys=only, now=now
        )
        if last is None:
            return total
        total.add(counts)
        after = last


def _definition(
    key: str, name: str | None, description: str | None, definition: Mapping[str, Any], version: int
) -> Segment:
    own_key = definition.get("key")
    if own_key is not None and own_key != key:
        raise RuleError(f'"{own_key}" differs from the segment\'s key', segment_key=key, field='field "key"')
    data = {**definition, "key": key, "name": name or key, "version": version}
    data.pop("description", None)
    if description is not None:
        data["description"] = description
    return parse_segment(data)


def _others(session: Session, key: str) -> list[Segment]:
    return [r.definition_model() for r in list_segments(session=session) if r.key != key]


def _locked(session: Session, ref: str, expected_version: int | None) -> SegmentRecord:
    hold_write_lock(session)
    record = get_segment(session=session, ref=ref)
    if record is None:
        raise UnknownSegmentError(f'unknown segment "{ref}"')
    if expected_version is not None and expected_version != record.version:
        raise VersionConflictError(
            f'segment "{record.key}" is at version {record.version}, not {expected_version}: '
            "read it again and retry"
        )
    return record


def _save(session: Session, record: SegmentRecord, segment: Segment, now: datetime) -> SegmentRecord:
    """Write the new definition if the stored version is still the one read, then recompute."""
    version = record.version + 1
    stored = parse_segment({**segment.to_json(), "version": version})
    written = session.execute(
        segment_table.update()
        .where(segment_table.c.id == record.id, segment_table.c.version == record.version)
        .values(
            name=stored.name or stored.key,
            description=stored.description,
            version=version,
            definition=stored.to_json(),
            updated_at=now,
        )
        .returning(segment_table.c.version)
    ).first()
    if written is None:
        raise VersionConflictError(f'segment "{record.key}" changed while it was being saved: retry')
    session.refresh(record)
    recompute_segments(session=session, keys=[record.key], now=now)
    return record


def create_segment(
    *,
    session: Session,
    key: str,
    name: str | None,
    description: str | None,
    definition: Mapping[str, Any],
    now: datetime,
    new_id: NewId = _uuid4,
) -> SegmentRecord:
    """Store a new segment at version 1 and compute its members."""
    hold_write_lock(session)
    if session.scalar(sa.select(segment_table.c.id).where(segment_table.c.key == key)) is not None:
        raise SegmentExistsError(f'segment "{key}" already exists')
    segment = with_ids(_definition(key, name, description, definition, 1), new_id)
    compile_segments([*_others(session, key), segment])
    record = SegmentRecord(
        key=key,
        name=segment.name or key,
        description=segment.description,
        version=1,
        definition=segment.to_json(),
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    session.flush()
    recompute_segments(session=session, keys=[key], now=now)
    return record


def replace_segment(
    *,
    session: Session,
    ref: str,
    name: str | None,
    description: str | None,
    definition: Mapping[str, Any],
    expected_version: int | None,
    now: datetime,
    new_id: NewId = _uuid4,
) -> SegmentRecord:
    """Replace a segment's name, description and definition (all of them: an omitted name becomes the
    key, an omitted description none)."""
    record = _locked(session, ref, expected_version)
    segment = with_ids(_definition(record.key, name, description, definition, record.version), new_id)
    compile_segments([*_others(session, record.key), segment])
    return _save(session, record, segment, now)


def patch_segment(
    *,
    session: Session,
    ref: str,
    instructions: Sequence[Instruction],
    expected_version: int | None,
    now: datetime,
    new_id: NewId = _uuid4,
) -> SegmentRecord:
    """Apply semantic-patch instructions to the current definition (`PatchError` names the instruction
    that cannot apply, including one leaving the stored set unable to compile)."""
    record = _locked(session, ref, expected_version)
    others = _others(session, record.key)

    def validate(segment: Segment) -> None:
        compile_segments([*others, segment])

    patched = apply_patch(record.definition_model(), instructions, new_id=new_id, validate=validate)
    return _save(session, record, patched, now)


def delete_segment(
    *, session: Session, ref: str, expected_version: int | None, now: datetime
) -> tuple[str, int]:
    """Delete a segment no other segment references; each member gets an `exited` change event. Returns
    the key and the number of members that exited."""
    record = _locked(session, ref, expected_version)
    users = sorted(s.key for s in _others(session, record.key) if record.key in s.dependencies())
    if users:
        raise SegmentInUseError(
            f'segment "{record.key}" is referenced by segmentMatch in '
            + ", ".join(f'"{u}"' for u in users)
            + ": remove those references first"
        )
    members = list(
        session.execute(
            sa.select(contact_table.c.id, contact_table.c.key)
            .join(membership_table, membership_table.c.contact_id == contact_table.c.id)
            .where(membership_table.c.segment_id == record.id)
        )
    )
    apply_diff(
        session=session,
        diff=MembershipDiff(exited={(record.id, cid) for cid, _ in members}),
        segment_keys={record.id: record.key},
        contact_keys={cid: key for cid, key in members},
        now=now,
    )
    key = record.key
    session.delete(record)
    session.flush()
    return key, len(members)
