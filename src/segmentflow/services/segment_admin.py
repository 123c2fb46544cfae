"""Every segment write: create, replace, semantic patch, import (a LaunchDarkly JSON list, by key) and
delete. The API, the CLI and the console all write through here, so they share one lock and one version
check: the version check, the write and the recompute of the segment and its dependents happen in the
caller's one transaction. Never commits.

Writers serialise on `hold_write_lock` before reading what they change, and the UPDATE is conditional on
the version read (`WHERE version = :read`), so no update is ever lost and no two writes end at the same
version: a stale expected version is a `VersionConflictError`, a patch or an import without one applies to
the current definition. The whole stored set must still compile strictly after the write (the rules
engine's `RuleError` propagates otherwise: an unknown `segmentMatch` target, a cycle), judged against what
is stored under the lock, so two racing writes cannot together store a cycle.

A key must not look like a segment id (anything `uuid.UUID` parses): a reference that parses as a UUID
names an id, never a key (`services.segments.where_segment_ref`). A segment still named by another
segment's `segmentMatch`, an SLA policy, a sequence (target or branch) or an action's or instruction's
segment restriction is not deleted (`SegmentInUseError`, naming them all).

Saves return `SegmentSaved`: the record, whether it was created, and `warnings` (advisory findings about
the definition; `_warnings` is the one place that computes them).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from segmentflow.db.tables import (
    Action,
    SegmentRecord,
    SlaPolicy,
    contact_table,
    membership_table,
    segment_table,
)
from segmentflow.db.tables import Instruction as InstructionRecord
from segmentflow.db.tables import Sequence as SequenceRecord
from segmentflow.policies.sequences import BranchStep, compile_sequence
from segmentflow.rules import RuleError, Segment, compile_segments, parse_segment, segment_problems
from segmentflow.rules.patch import Instruction, apply_patch, with_ids
from segmentflow.services.membership import (
    MembershipDiff,
    RecomputeCounts,
    UnknownSegmentError,
    apply_diff,
    recompute_page,
)
from segmentflow.services.segments import (
    dependents_of,
    get_segment,
    is_uuid_shaped,
    list_segments,
    load_index,
)

__all__ = [
    "ConflictError",
    "SegmentExistsError",
    "SegmentInUseError",
    "SegmentSaved",
    "VersionConflictError",
    "create_segment",
    "delete_segment",
    "hold_write_lock",
    "import_segments",
    "patch_segment",
    "recompute_segments",
    "references_to",
    "replace_segment",
]

NewId = Callable[[], str]
#: Told how many contacts a recompute has gone through so far (a console save shows it).
Progress = Callable[[int], None]
_WRITE_LOCK = 0x5E6F12  # PostgreSQL advisory lock: segment writers exclusive, contact writers shared


class ConflictError(Exception):
    """A write refused because of the stored state (maps to HTTP 409)."""


class SegmentExistsError(ConflictError):
    """A segment with that key already exists."""


class VersionConflictError(ConflictError):
    """The expected version is not the stored one."""


class SegmentInUseError(ConflictError):
    """Something still names this segment: another segment's `segmentMatch`, an SLA policy, a sequence, or
    an action's or instruction's restriction."""


@dataclass
class SegmentSaved:
    """What a save wrote: the stored record, whether the save created it, and advisory `warnings` about
    its definition (the save went through)."""

    record: SegmentRecord
    created: bool = False
    warnings: list[str] = field(default_factory=list)


def _uuid4() -> str:
    return str(uuid.uuid4())


def _check_key(key: str) -> None:
    if is_uuid_shaped(key):
        raise RuleError(
            f'"{key}" looks like a segment id (a UUID); a segment key must not, so that an id always '
            "names exactly one segment: choose another key",
            segment_key=key,
            field='field "key"',
        )


def _warnings(segment: Segment) -> list[str]:
    """Advisory findings about a definition that saves anyway: clause values LaunchDarkly accepts but never
    matches (`rules.segment_problems`), one line each."""
    return [str(warning) for warning in segment_problems(segment)[1]]


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
    *,
    session: Session,
    keys: Sequence[str],
    now: datetime,
    page_size: int = 2000,
    progress: Progress | None = None,
) -> RecomputeCounts:
    """Re-evaluate these segments and everything depending on them for every contact, page by page in
    the caller's transaction; `progress` is told the contacts done after each page."""
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
        if progress is not None:
            progress(total.contacts)


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


def _save(
    session: Session, record: SegmentRecord, segment: Segment, now: datetime, progress: Progress | None = None
) -> SegmentSaved:
    """Write the new definition if the stored version is still the one read, then recompute."""
    _update(session, record, segment, record.version + 1, now)
    recompute_segments(session=session, keys=[record.key], now=now, progress=progress)
    return SegmentSaved(record, warnings=_warnings(segment))


def _update(session: Session, record: SegmentRecord, segment: Segment, version: int, now: datetime) -> None:
    """The conditional UPDATE every replace goes through: only from the version read."""
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


def create_segment(
    *,
    session: Session,
    key: str,
    name: str | None,
    description: str | None,
    definition: Mapping[str, Any],
    now: datetime,
    new_id: NewId = _uuid4,
    progress: Progress | None = None,
) -> SegmentSaved:
    """Store a new segment at version 1 and compute its members (`progress`: as `recompute_segments`)."""
    _check_key(key)
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
    recompute_segments(session=session, keys=[key], now=now, progress=progress)
    return SegmentSaved(record, created=True, warnings=_warnings(segment))


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
    progress: Progress | None = None,
) -> SegmentSaved:
    """Replace a segment's name, description and definition (all of them: an omitted name becomes the
    key, an omitted description none; `progress`: as `recompute_segments`)."""
    record = _locked(session, ref, expected_version)
    segment = with_ids(_definition(record.key, name, description, definition, record.version), new_id)
    compile_segments([*_others(session, record.key), segment])
    return _save(session, record, segment, now, progress)


def patch_segment(
    *,
    session: Session,
    ref: str,
    instructions: Sequence[Instruction],
    expected_version: int | None,
    now: datetime,
    new_id: NewId = _uuid4,
) -> SegmentSaved:
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
    """Delete a segment nothing references (`references_to`); each member gets an `exited` change event.
    Returns the key and the number of members that exited."""
    record = _locked(session, ref, expected_version)
    users = references_to(session=session, key=record.key)
    if users:
        raise SegmentInUseError(
            f'segment "{record.key}" is still referenced by '
            + "; ".join(users)
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


def references_to(*, session: Session, key: str) -> list[str]:
    """Everything that names segment `key`, grouped by kind: `segmentMatch` in other segments, SLA policy
    conditions, sequences (target or branch segment, whatever their status) and the segment restrictions of
    actions and instructions. A deleted segment would silently change each of them (an SLA policy would stop
    matching, a sequence stop enrolling, an action or instruction be withheld from everyone: restrictions
    fail closed), so a delete waits until none is left."""
    found: list[str] = []

    def group(kind: str, names: Iterable[str]) -> None:
        listed = sorted(set(names))
        if listed:
            found.append(kind + " " + ", ".join(f'"{n}"' for n in listed))

    group("segmentMatch in segments", (s.key for s in _others(session, key) if key in s.dependencies()))
    group(
        "SLA policies",
        (p.key for p in session.exec(select(SlaPolicy)) if key in p.definition_model().segment_keys),
    )
    group("sequences", (q.key for q in session.exec(select(SequenceRecord)) if key in _sequence_segments(q)))
    group("actions", (a.key for a in session.exec(select(Action)) if key in a.restricted_to_segments))
    group(
        "instructions",
        (i.key for i in session.exec(select(InstructionRecord)) if key in i.restricted_to_segments),
    )
    return found


def _sequence_segments(record: SequenceRecord) -> set[str]:
    nodes = compile_sequence(record.definition_model()).nodes
    branches = {n.step.segment for n in nodes if isinstance(n.step, BranchStep) and n.step.segment}
    return {record.segment_key, *branches}


def import_segments(
    *, session: Session, segments: Sequence[Segment], now: datetime, recompute: bool = True
) -> list[SegmentSaved]:
    """Insert or replace segments by key (a LaunchDarkly JSON list; a key given twice: the last wins), all
    or none, under the same lock and conditional UPDATE as every other write: the stored set read under the
    lock with these applied must compile strictly (no missing `segmentMatch` target, no cycle) or nothing is
    written and the `RuleError` propagates. A replaced segment's version becomes the stored one + 1 (or the
    file's, when higher); a new one keeps the file's. `recompute`: compute the members of these segments
    and their dependents in this transaction too (the CLI recomputes afterwards, page by page, instead)."""
    incoming: dict[str, Segment] = {}
    for segment in segments:
        _check_key(segment.key)
        incoming[segment.key] = segment
    hold_write_lock(session)
    existing = {r.key: r for r in list_segments(session=session)}
    merged = {key: record.definition_model() for key, record in existing.items()}
    merged.update(incoming)
    compile_segments(merged.values())  # raises RuleError before anything is written
    out: list[SegmentSaved] = []
    for key, segment in incoming.items():
        record = existing.get(key)
        if record is None:
            definition = parse_segment({**segment.to_json(), "version": segment.version})
            record = SegmentRecord(
                key=key,
                name=segment.name or key,
                description=segment.description,
                version=segment.version,
                definition=definition.to_json(),
                created_at=now,
                updated_at=now,
            )
            session.add(record)
            out.append(SegmentSaved(record, created=True, warnings=_warnings(segment)))
        else:
            _update(session, record, segment, max(record.version + 1, segment.version), now)
            out.append(SegmentSaved(record, warnings=_warnings(segment)))
    session.flush()
    if recompute and incoming:
        recompute_segments(session=session, keys=list(incoming), now=now)
    return out
