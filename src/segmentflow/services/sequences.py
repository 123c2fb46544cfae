"""Outbound sequences in SQL: import, launch (enroll the segment's current members), the membership change
feed (enroll entrants, exit leavers), claiming due enrollments in batches, recording deliveries, status.

Functions take the session as a keyword argument and never commit; the activity owns the transactions. A
batch of sends spans three of them around the render and the provider calls: `claim_due` leases the due
enrollments, the templates are rendered with no transaction open (`render_sends`), `write_sends` writes the
pending send rows (unique per enrollment and step) and commits before anything is sent; `record_deliveries`
marks them sent or failed and moves the enrollments on. A template failing for a contact (a missing
attribute, a template limit) fails that send for good and sends nothing. A crash before `write_sends`
leaves leased enrollments without rows (claimed and rendered again once the lease runs out); a crash after
it leaves pending rows and enrollments still due, so the next claim sends the same rows again with the same
`Idempotency-Key` (see `segmentflow.services.delivery` for what the provider must do for that to be exactly
once).

On PostgreSQL a batch's enrollment moves and send results are one UPDATE each over arrays (`unnest`) and id
lists go as one `= ANY(array)` parameter, instead of one UPDATE per row and `IN` lists of 500 (SQLite keeps
`executemany` and `IN`, which cost it little); the claim reads the contacts' contexts in its locking query.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from jinja2 import Template
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, select

from segmentflow.db.bulk import bulk_insert
from segmentflow.db.tables import (
    Sequence as SequenceRecord,
)
from segmentflow.db.tables import (
    change_table,
    contact_table,
    enrollment_table,
    membership_table,
    segment_table,
    send_table,
    sequence_table,
)
from segmentflow.policies.sequences import (
    BranchStep,
    Program,
    SendStep,
    SequenceDefinition,
    SequenceError,
    cap_release,
    compile_sequence,
    contact_attribute,
    contact_zone,
    may_enroll,
    parse_duration,
    quiet_until,
    walk,
)
from segmentflow.rules import parse_context
from segmentflow.services.delivery import Delivery
from segmentflow.services.membership import take_feed_lock
from segmentflow.services.templates import (
    DEFAULT_LIMITS,
    TemplateError,
    TemplateLimits,
    check_templates,
    compile_template,
    render_template,
)

__all__ = [
    "DEFAULT_LEASE",
    "MAX_SEND_ATTEMPTS",
    "ClaimResult",
    "CompiledSequence",
    "LaunchResult",
    "Outgoing",
    "ProgramCache",
    "RenderedSend",
    "SequenceStatus",
    "StepStatus",
    "SyncResult",
    "ToRender",
    "UnknownSegmentForSequenceError",
    "UnknownSequenceError",
    "claim_and_render",
    "claim_due",
    "get_sequence",
    "idempotency_key",
    "import_sequences",
    "launch_sequence",
    "list_sequences",
    "next_due_at",
    "pause_sequence",
    "record_deliveries",
    "release_leases",
    "render_sends",
    "sequence_status",
    "sync_enrollments",
    "write_sends",
]

_CHUNK = 500
_IDS = postgresql.ARRAY(sa.Integer)


def _on_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _id_filters(session: Session, column: sa.ColumnElement[int], ids: Sequence[int]) -> list[Any]:
    """`column` among `ids`: one `= ANY(array)` on PostgreSQL (one parameter, whatever the count), `IN`
    lists of at most `_CHUNK` elsewhere (SQLite's parameter limit); run one query per filter."""
    if not ids:
        return []
    if _on_postgres(session):
        return [column == sa.any_(_id_array(ids))]
    return [column.in_(ids[start : start + _CHUNK]) for start in range(0, len(ids), _CHUNK)]


def _id_array(ids: Collection[int]) -> sa.BindParameter[Any]:
    """`ids` as one PostgreSQL integer-array parameter."""
    return sa.bindparam(None, list(ids), type_=_IDS, unique=True)


#: How long a claimed send's enrollment stays out of other claims (an overlapping attempt of the round
#: after a heartbeat timeout): longer than any batch's provider calls take (the activity cuts a batch's
#: calls at half of it and records the rest as retries).
DEFAULT_LEASE = timedelta(minutes=10)
#: Provider attempts (each already retried in-process by the delivery layer) before a send fails for good.
MAX_SEND_ATTEMPTS = 8
_RETRY_BASE = timedelta(seconds=30)


class UnknownSequenceError(LookupError):
    """No stored sequence has that key."""


# ---- definitions ---------------------------------------------------------------------------------------


def import_sequences(
    *,
    session: Session,
    sequences: Sequence[SequenceDefinition],
    now: datetime,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> list[tuple[SequenceRecord, bool]]:
    """Insert or replace sequences by key (the version grows when the definition changes); each template
    must parse and render within `limits` for a sample contact. Returns each record and whether it was
    created. A running sequence keeps its status and enrollments: they continue with the new steps from
    their stored position. Refused (SequenceError, nothing written): a template that does not parse or
    goes over a limit, a target or branch segment that is not stored, and a
    new target segment for a sequence that is no longer a draft (its enrollments came from the old one)."""
    for definition in sequences:
        check_templates(definition, limits=limits)
    wanted = {d.segment for d in sequences} | {
        step.segment for d in sequences for step in _branch_steps(d).values() if step.segment is not None
    }
    stored = set(session.scalars(sa.select(segment_table.c.key).where(segment_table.c.key.in_(wanted))))
    keys = [d.key for d in sequences]
    existing = {r.key: r for r in session.exec(select(SequenceRecord).where(sequence_table.c.key.in_(keys)))}
    for definition in sequences:
        if definition.segment not in stored:
            raise SequenceError(
                f'sequence "{definition.key}": segment: segment "{definition.segment}" is not stored'
            )
        for index, step in _branch_steps(definition).items():
            if step.segment is not None and step.segment not in stored:
                raise SequenceError(
                    f'sequence "{definition.key}": step {index}: branch segment "{step.segment}" '
                    "is not stored"
                )
        record = existing.get(definition.key)
        if record is not None and record.status != "draft" and record.segment_key != definition.segment:
            raise SequenceError(
                f'sequence "{definition.key}": segment: it is {record.status} on segment '
                f'"{record.segment_key}" and cannot move to "{definition.segment}" '
                "(import it under a new key)"
            )
    out: list[tuple[SequenceRecord, bool]] = []
    for definition in sequences:
        data = definition.to_json()
        record = existing.get(definition.key)
        if record is None:
            record = SequenceRecord(
                key=definition.key,
                name=definition.name,
                segment_key=definition.segment,
                definition=data,
                created_at=now,
                updated_at=now,
            )
            session.add(record)
            out.append((record, True))
            continue
        if record.definition != data:
            record.definition = data
            record.name = definition.name
            record.segment_key = definition.segment
            record.version += 1
            record.updated_at = now
        out.append((record, False))
    session.flush()
    return out


def _branch_steps(definition: SequenceDefinition) -> dict[int, BranchStep]:
    return {n.index: n.step for n in compile_sequence(definition).nodes if isinstance(n.step, BranchStep)}


def get_sequence(*, session: Session, key: str) -> SequenceRecord | None:
    return session.exec(select(SequenceRecord).where(sequence_table.c.key == key)).first()


def list_sequences(*, session: Session) -> list[SequenceRecord]:
    return list(session.exec(select(SequenceRecord).order_by(sequence_table.c.key)))


def _require(session: Session, key: str, *, lock: bool = False) -> SequenceRecord:
    query = select(SequenceRecord).where(sequence_table.c.key == key)
    record = session.exec(query.with_for_update() if lock else query).first()
    if record is None:
        raise UnknownSequenceError(f'unknown sequence "{key}"')
    return record


@dataclass(frozen=True)
class CompiledSequence:
    """A stored sequence ready to run: its program and its parsed templates (by step)."""

    id: uuid.UUID
    key: str
    version: int
    status: str
    program: Program
    templates: dict[int, Template]
    #: Subject templates of the email steps.
    subjects: dict[int, Template] = field(default_factory=dict)

    @property
    def definition(self) -> SequenceDefinition:
        return self.program.definition


class ProgramCache:
    """Compiled sequences by (id, version): templates are parsed once per version, not per batch. Safe to
    share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._programs: dict[
            tuple[uuid.UUID, int], tuple[Program, dict[int, Template], dict[int, Template]]
        ] = {}

    def get(self, *, session: Session, key: str) -> CompiledSequence:
        record = _require(session, key)
        stamp = (record.id, record.version)
        with self._lock:
            found = self._programs.get(stamp)
        if found is None:
            program = compile_sequence(record.definition_model())
            templates = {
                n.index: compile_template(n.step.template)
                for n in program.nodes
                if isinstance(n.step, SendStep)
            }
            subjects = {
                n.index: compile_template(n.step.subject)
                for n in program.nodes
                if isinstance(n.step, SendStep) and n.step.subject is not None
            }
            found = (program, templates, subjects)
            with self._lock:
                self._programs[stamp] = found
        return CompiledSequence(record.id, record.key, record.version, record.status, *found)


# ---- launch, pause and the change feed -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LaunchResult:
    key: str
    status: str
    enrolled: int
    #: False when it was already active (nothing changed).
    changed: bool


class UnknownSegmentForSequenceError(LookupError):
    """The sequence targets a segment that is not stored."""


def launch_sequence(*, session: Session, key: str, now: datetime) -> LaunchResult:
    """Start (or resume) a sequence. The first launch enrolls the segment's current members and reads the
    change feed from here on; resuming a paused one catches up on the feed from where it stopped."""
    record = _require(session, key, lock=True)
    if record.status == "active":
        return LaunchResult(key, "active", 0, False)
    enrolled = 0
    if record.status == "draft":
        take_feed_lock(session)
        segment_id = session.scalar(
            sa.select(segment_table.c.id).where(segment_table.c.key == record.segment_key)
        )
        if segment_id is None:
            raise UnknownSegmentForSequenceError(
                f'sequence "{key}" targets segment "{record.segment_key}", which is not stored'
            )
        cursor = session.scalar(sa.select(sa.func.coalesce(sa.func.max(change_table.c.seq), 0)))
        members = session.execute(
            sa.select(contact_table.c.id, contact_table.c.key)
            .join(membership_table, membership_table.c.contact_id == contact_table.c.id)
            .where(membership_table.c.segment_id == segment_id)
            .order_by(contact_table.c.id)
        ).all()
        enrolled = _enroll(session, record, [(m.id, m.key) for m in members], now)
        record.feed_cursor = int(cursor or 0)
        record.launched_at = now
    record.status = "active"
    record.updated_at = now
    session.flush()
    return LaunchResult(key, "active", enrolled, True)


def pause_sequence(*, session: Session, key: str, now: datetime) -> bool:
    """Stop sending (enrollments keep their place; the runner stops at its next round). False when it was
    not active."""
    record = _require(session, key, lock=True)
    if record.status != "active":
        return False
    record.status = "paused"
    record.updated_at = now
    session.flush()
    return True


def _enrollment_history(
    session: Session, sequence_id: uuid.UUID, contact_ids: Sequence[int]
) -> dict[int, tuple[bool, datetime | None]]:
    """Per contact: whether it has an active enrollment, and when its latest enrollment began."""
    out: dict[int, tuple[bool, datetime | None]] = {}
    e = enrollment_table
    for start in range(0, len(contact_ids), _CHUNK):
        query = (
            sa.select(
                e.c.contact_id,
                sa.func.max(sa.case((e.c.status == "active", 1), else_=0)),
                sa.func.max(e.c.enrolled_at),
            )
            .where(e.c.sequence_id == sequence_id, e.c.contact_id.in_(contact_ids[start : start + _CHUNK]))
            .group_by(e.c.contact_id)
        )
        for contact_id, active, last in session.execute(query):
            out[contact_id] = (bool(active), last)
    return out


def _enroll(
    session: Session, record: SequenceRecord, contacts: Sequence[tuple[int, str]], now: datetime
) -> int:
    """Enroll these contacts (id, key) where the re-entry rule allows; returns how many enrolled."""
    if not contacts:
        return 0
    cooldown = record.definition_model().reentry_cooldown()
    history = _enrollment_history(session, record.id, [cid for cid, _ in contacts])
    rows = []
    seen: set[int] = set()
    for contact_id, key in contacts:
        active, last = history.get(contact_id, (False, None))
        if contact_id in seen or not may_enroll(
            has_active=active, last_enrolled_at=last, cooldown=cooldown, now=now
        ):
            continue
        seen.add(contact_id)
        rows.append((record.id, contact_id, key, "active", 0, now, now))
    bulk_insert(
        session,
        enrollment_table,
        ("sequence_id", "contact_id", "contact_key", "status", "position", "next_due_at", "enrolled_at"),
        rows,
    )
    return len(rows)


@dataclass(frozen=True, slots=True)
class SyncResult:
    entered: int = 0
    exited: int = 0
    #: True when the page was full: more changes may be waiting.
    more: bool = False


def sync_enrollments(*, session: Session, key: str, now: datetime, limit: int = 5000) -> SyncResult:
    """Read the next page of the segment's change feed after the sequence's cursor: entrants enroll (as the
    re-entry rule allows), leavers' active enrollments exit when `exit_on_leave`; the cursor moves in the
    same transaction, so a page is applied once."""
    record = _require(session, key, lock=True)
    if record.status != "active":
        return SyncResult()
    c = change_table
    changes = session.execute(
        sa.select(c.c.seq, c.c.contact_id, c.c.contact_key, c.c.change, contact_table.c.id.label("exists"))
        .outerjoin(contact_table, contact_table.c.id == c.c.contact_id)
        .where(c.c.segment_key == record.segment_key, c.c.seq > record.feed_cursor)
        .order_by(c.c.seq)
        .limit(limit)
    ).all()
    if not changes:
        return SyncResult()
    exit_on_leave = record.definition_model().exit_on_leave
    # Replay the page in order per contact: the last word decides, an exit before a re-entry included.
    final: dict[int, tuple[str, str, bool]] = {}
    leavers: set[int] = set()
    for change in changes:
        if change.change == "exited":
            leavers.add(change.contact_id)
        final[change.contact_id] = (change.change, change.contact_key, change.exists is not None)
    exited = 0
    if exit_on_leave and leavers:
        exited = _finish(session, record.id, sorted(leavers), "exited", "left_segment", now)
    entrants = [(cid, k) for cid, (what, k, exists) in final.items() if what == "entered" and exists]
    entered = _enroll(session, record, entrants, now)
    record.feed_cursor = int(changes[-1].seq)
    session.flush()
    return SyncResult(entered, exited, len(changes) == limit)


def _finish(
    session: Session,
    sequence_id: uuid.UUID,
    contact_ids: Sequence[int],
    status: str,
    reason: str,
    now: datetime,
) -> int:
    e = enrollment_table
    done = 0
    for start in range(0, len(contact_ids), _CHUNK):
        result = session.execute(
            e.update()
            .where(
                e.c.sequence_id == sequence_id,
                e.c.contact_id.in_(contact_ids[start : start + _CHUNK]),
                e.c.status == "active",
            )
            .values(status=status, reason=reason, finished_at=now, next_due_at=None)
        )
        done += result.rowcount  # type: ignore[attr-defined]
    return done


# ---- due enrollments -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A send row written and committed, to be handed to its channel."""

    enrollment_id: int
    step: int
    channel: str
    url: str | None
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class ToRender:
    """A claimed send whose enrollment is leased until `leased_until`, to render outside the claim's
    transaction. `body` is the stored body of an earlier attempt's pending row (None: render it)."""

    enrollment_id: int
    step: int
    channel: str
    url: str | None
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    contact_id: int
    context: dict[str, Any]
    segments: list[str]
    body: str | None
    leased_until: datetime


#: A claimed send after `render_sends`: its payload (with `body`) or, when its template failed, the reason.
RenderedSend = tuple[ToRender, dict[str, Any] | None, str | None]


@dataclass
class ClaimResult:
    """`to_render`: sends claimed by `claim_due`, not yet rendered; `outgoing`: sends whose rows
    `write_sends` wrote, ready for their channels."""

    outgoing: list[Outgoing] = field(default_factory=list)
    to_render: list[ToRender] = field(default_factory=list)
    sequence_id: uuid.UUID | None = None
    claimed: int = 0
    waiting: int = 0
    deferred: int = 0
    completed: int = 0
    exited: int = 0
    failed: int = 0


def idempotency_key(sequence_id: uuid.UUID, enrollment_id: int, step: int) -> str:
    """The provider's deduplication key of a send row: stable for the row's whole life."""
    return f"sf-{sequence_id.hex}-{enrollment_id}-{step}"


class _NoAddressError(ValueError):
    pass


def _address(context: dict[str, Any], attribute: str) -> str:
    """The contact's email address: `attribute` of a single-kind context, or of the first kind of a
    multi-kind one that has it (user first)."""
    found = contact_attribute(context, attribute)
    if not isinstance(found, str) or "@" not in found:
        raise _NoAddressError(f'the contact has no address in "{attribute}"')
    return found


def _memberships(session: Session, contact_ids: Sequence[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {cid: set() for cid in contact_ids}
    for among in _id_filters(session, membership_table.c.contact_id, contact_ids):
        query = (
            sa.select(membership_table.c.contact_id, segment_table.c.key)
            .join(segment_table, segment_table.c.id == membership_table.c.segment_id)
            .where(among)
        )
        for contact_id, key in session.execute(query):
            out[contact_id].add(key)
    return out


def _recent_sends(session: Session, contact_ids: Sequence[int], since: datetime) -> dict[int, list[datetime]]:
    """When each contact was sent to (by any sequence) after `since`, failed sends not counted."""
    out: dict[int, list[datetime]] = {}
    s = send_table
    for among in _id_filters(session, s.c.contact_id, contact_ids):
        query = sa.select(s.c.contact_id, s.c.created_at).where(
            among,
            s.c.created_at > since,
            s.c.status != "failed",
        )
        for contact_id, at in session.execute(query):
            out.setdefault(contact_id, []).append(at)
    return out


def claim_due(
    *,
    session: Session,
    sequence: CompiledSequence,
    now: datetime,
    limit: int,
    exclude: Collection[int] = (),
    lease: timedelta = DEFAULT_LEASE,
    owner: str | None = None,
) -> ClaimResult:
    """Take up to `limit` enrollments due at `now` and move each to its next send, wait or end; a send is
    leased and returned in `to_render` (with the body of an earlier attempt's pending row, if any) for
    `render_sends` and `write_sends` (`claim_and_render` runs all three): nothing is rendered while this
    transaction holds its row locks.

    Just before the send the contact's membership is read again: with `exit_on_leave`, a contact no longer
    in the segment exits here and gets nothing. Quiet hours and the frequency cap defer the send (same
    step, later due time). `exclude` leaves out enrollments whose sends the caller still has in flight.

    A send's enrollment is leased to `owner` (the claiming round): due again only at `now + lease`, so an
    overlapping claim (another round while this one still sends) does not take it; `record_deliveries`
    sets its real next due time. After a crash a retried attempt of the same round takes its rows back at
    once (`release_leases`); any other claim waits for the lease to run out. Either way the pending row
    is sent again with its key.
    On PostgreSQL the claimed rows are locked and concurrent claims skip them. Nothing is claimed once the
    sequence is no longer active (paused mid-round)."""
    definition = sequence.definition
    program = sequence.program
    e = enrollment_table
    status = session.scalar(sa.select(sequence_table.c.status).where(sequence_table.c.id == sequence.id))
    if status != "active":
        return ClaimResult()
    query = (
        sa.select(e.c.id, e.c.contact_id, e.c.contact_key, e.c.position, contact_table.c.context)
        .join(contact_table, contact_table.c.id == e.c.contact_id)
        .where(e.c.sequence_id == sequence.id, e.c.status == "active", e.c.next_due_at <= now)
        .order_by(e.c.next_due_at, e.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=e)
    )
    if exclude:
        if _on_postgres(session):
            query = query.where(e.c.id != sa.all_(_id_array(exclude)))
        else:
            query = query.where(e.c.id.not_in(list(exclude)))
    rows = session.execute(query).all()
    result = ClaimResult(claimed=len(rows), sequence_id=sequence.id)
    if not rows:
        return result
    contact_ids = [r.contact_id for r in rows]
    contexts: dict[int, dict[str, Any]] = {r.contact_id: r.context for r in rows}
    segments = _memberships(session, contact_ids)
    enrollment_ids = [r.id for r in rows]
    existing: dict[tuple[int, int], Any] = {}
    s = send_table
    for among in _id_filters(session, s.c.enrollment_id, enrollment_ids):
        for send in session.execute(
            sa.select(s.c.enrollment_id, s.c.step, s.c.status, s.c.body, s.c.attempts).where(among)
        ):
            existing[(send.enrollment_id, send.step)] = send
    cap = definition.frequency_cap
    recent = _recent_sends(session, contact_ids, now - parse_duration(cap.period)) if cap else {}
    needs_context = any(n.condition is not None for n in program.nodes)

    updates: list[dict[str, Any]] = []

    def update(
        row: Any,
        status: str,
        position: int | None,
        due: datetime | None,
        reason: str | None,
        leased_to: str | None = None,
    ) -> None:
        finished = None if status == "active" else now
        updates.append(
            {
                "eid": row.id,
                "st": status,
                "pos": position,
                "due": due,
                "fin": finished,
                "why": reason,
                "own": leased_to,
            }
        )

    for row in rows:
        member_of = segments[row.contact_id]
        if definition.exit_on_leave and definition.segment not in member_of:
            update(row, "exited", row.position, None, "left_segment")
            result.exited += 1
            continue
        raw = contexts[row.contact_id]
        zone = contact_zone(raw, definition.timezone_attribute)
        context = parse_context(raw) if needs_context else None
        stop = walk(program, row.position, now=now, zone=zone, segments=member_of, context=context)
        if stop.outcome == "completed":
            update(row, "completed", None, None, None)
            result.completed += 1
            continue
        if stop.outcome == "exited":
            update(row, "exited", stop.position, None, "exit_step")
            result.exited += 1
            continue
        if stop.outcome == "wait":
            update(row, "active", stop.position, stop.due_at, None)
            result.waiting += 1
            continue
        step = stop.position
        assert step is not None
        node = program.nodes[step]
        assert isinstance(node.step, SendStep)
        earlier = existing.get((row.id, step))
        if earlier is not None and earlier.status == "sent":  # recorded before: just move on
            following = node.next
            update(
                row,
                "completed" if following is None else "active",
                following,
                None if following is None else now,
                None,
            )
            continue
        if earlier is not None and earlier.status == "failed":
            update(row, "failed", step, None, f"step {step}: send failed")
            result.failed += 1
            continue
        later = quiet_until(now, definition.quiet_hours, zone)
        if later is None and earlier is None:
            later = cap_release(recent.get(row.contact_id, ()), cap, now)
        if later is not None:
            update(row, "active", step, later, None)
            result.deferred += 1
            continue
        payload: dict[str, Any] = {"contactKey": row.contact_key, "sequence": sequence.key, "step": step}
        try:
            if node.step.channel == "email":
                payload["to"] = _address(raw, node.step.to_attribute)
        except _NoAddressError as exc:
            update(row, "failed", step, None, f"step {step}: recipient {exc}")
            result.failed += 1
            continue
        # Rendered after this transaction commits (`render_sends`), so no template holds these row locks;
        # the lease keeps the enrollment out of other claims meanwhile, and `write_sends` commits the
        # send row before any provider call. The walk may have taken a branch: store the send's step so
        # a retry does not re-decide it.
        update(row, "active", step, now + lease, None, owner)
        result.to_render.append(
            ToRender(
                enrollment_id=row.id,
                step=step,
                channel=node.step.channel,
                url=node.step.url,
                idempotency_key=idempotency_key(sequence.id, row.id, step),
                payload=payload,
                attempts=0 if earlier is None else earlier.attempts,
                contact_id=row.contact_id,
                context=raw,
                segments=sorted(member_of),
                body=None if earlier is None else earlier.body,
                leased_until=now + lease,
            )
        )
    _apply_updates(session, updates)
    return result


def render_sends(
    sequence: CompiledSequence, claimed: Iterable[ToRender], *, limits: TemplateLimits = DEFAULT_LIMITS
) -> list[RenderedSend]:
    """Render the claimed sends (no database work: call it with no transaction open). Each item comes back
    with its payload (body, and subject for email) or the reason its template failed, which fails that
    send for good: the same template and contact fail the same way on every attempt."""
    out: list[RenderedSend] = []
    for item in claimed:
        payload = dict(item.payload)
        try:
            if item.channel == "email":
                payload["subject"] = render_template(
                    sequence.subjects[item.step], contact=item.context, segments=item.segments, limits=limits
                )
            body = item.body
            if body is None:
                body = render_template(
                    sequence.templates[item.step], contact=item.context, segments=item.segments, limits=limits
                )
        except TemplateError as exc:
            out.append((item, None, f"step {item.step}: template {exc}"))
            continue
        out.append((item, {**payload, "body": body}, None))
    return out


def write_sends(
    *,
    session: Session,
    claim: ClaimResult,
    rendered: Sequence[RenderedSend],
    now: datetime,
) -> ClaimResult:
    """Second transaction of a claim: write the pending send rows of the rendered sends and fail the
    enrollments whose template failed; the claim comes back with its `outgoing` (to hand to the channels
    now that their rows are committed) and `failed` count. Only enrollments still leased by this claim
    (active, at the send's step, due at its lease's end) are written: one whose lease ran out during the
    render and that another claim took is left to that claim."""
    e = enrollment_table
    ids = [item.enrollment_id for item, _, _ in rendered]
    held: dict[int, tuple[int | None, datetime | None]] = {}
    for among in _id_filters(session, e.c.id, ids):
        for eid, position, due in session.execute(
            sa.select(e.c.id, e.c.position, e.c.next_due_at)
            .where(among, e.c.status == "active")
            .with_for_update(of=e)
        ):
            held[eid] = (position, due)
    updates: list[dict[str, Any]] = []
    new_sends: list[tuple[Any, ...]] = []
    for item, payload, failure in rendered:
        if held.get(item.enrollment_id) != (item.step, item.leased_until):
            continue
        if payload is None:
            updates.append(
                {
                    "eid": item.enrollment_id,
                    "st": "failed",
                    "pos": item.step,
                    "due": None,
                    "fin": now,
                    "why": failure,
                    "own": None,
                    "at_step": item.step,
                }
            )
            claim.failed += 1
            continue
        if item.body is None:
            new_sends.append(
                (
                    item.enrollment_id,
                    item.step,
                    claim.sequence_id,
                    item.contact_id,
                    item.channel,
                    item.idempotency_key,
                    payload["body"],
                    "pending",
                    0,
                    now,
                )
            )
        claim.outgoing.append(
            Outgoing(
                enrollment_id=item.enrollment_id,
                step=item.step,
                channel=item.channel,
                url=item.url,
                idempotency_key=item.idempotency_key,
                payload=payload,
                attempts=item.attempts,
            )
        )
    bulk_insert(
        session,
        send_table,
        (
            "enrollment_id",
            "step",
            "sequence_id",
            "contact_id",
            "channel",
            "idempotency_key",
            "body",
            "status",
            "attempts",
            "created_at",
        ),
        new_sends,
    )
    _apply_updates(session, updates, guarded=True)
    claim.to_render = []
    return claim


def claim_and_render(
    run: Callable[[Callable[[Session], ClaimResult]], ClaimResult],
    *,
    sequence: CompiledSequence,
    now: datetime,
    limit: int,
    exclude: Collection[int] = (),
    lease: timedelta = DEFAULT_LEASE,
    owner: str | None = None,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> ClaimResult:
    """A whole claim: `claim_due` (leasing to `owner`) in one transaction, `render_sends` with none open,
    `write_sends` in a second; `run(work)` runs `work(session)` in a transaction of its own and commits it."""
    claim = run(
        lambda session: claim_due(
            session=session,
            sequence=sequence,
            now=now,
            limit=limit,
            exclude=exclude,
            lease=lease,
            owner=owner,
        )
    )
    if not claim.to_render:
        return claim
    rendered = render_sends(sequence, claim.to_render, limits=limits)
    return run(lambda session: write_sends(session=session, claim=claim, rendered=rendered, now=now))


#: Enrollment moves on PostgreSQL: one statement over arrays (unnest), not one UPDATE per row.
_PG_MOVES = """
UPDATE enrollment AS e
SET status = v.st, position = v.pos, next_due_at = v.due, finished_at = v.fin, reason = v.why,
    lease_owner = v.own
FROM unnest(
    CAST(:eid AS integer[]), CAST(:st AS varchar[]), CAST(:pos AS integer[]), CAST(:due AS timestamptz[]),
    CAST(:fin AS timestamptz[]), CAST(:why AS text[]), CAST(:own AS varchar[]), CAST(:at_step AS integer[])
) AS v(eid, st, pos, due, fin, why, own, at_step)
WHERE e.id = v.eid"""
_PG_GUARD = " AND e.status = 'active' AND e.position = v.at_step"
#: Send results on PostgreSQL, likewise one statement.
_PG_SEND_RESULTS = """
UPDATE send AS s
SET status = v.st, attempts = v.n, response_status = v.code, response_body = v.resp, sent_at = v.at
FROM unnest(
    CAST(:k AS varchar[]), CAST(:st AS varchar[]), CAST(:n AS integer[]), CAST(:code AS integer[]),
    CAST(:resp AS text[]), CAST(:at AS timestamptz[])
) AS v(k, st, n, code, resp, at)
WHERE s.idempotency_key = v.k AND s.status = 'pending'"""


def _columns(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    return {name: [row.get(name) for row in rows] for name in names}


def _apply_updates(session: Session, updates: list[dict[str, Any]], *, guarded: bool = False) -> None:
    """Write enrollment moves; `guarded`: only to enrollments still active at the step in `at_step`."""
    if not updates:
        return
    if _on_postgres(session):
        names = ("eid", "st", "pos", "due", "fin", "why", "own", "at_step")
        sql = _PG_MOVES + (_PG_GUARD if guarded else "")
        session.execute(sa.text(sql), _columns(updates, names))
        return
    e = enrollment_table
    where = [e.c.id == sa.bindparam("eid")]
    if guarded:
        where += [e.c.status == "active", e.c.position == sa.bindparam("at_step")]
    session.execute(
        e.update()
        .where(*where)
        .values(
            status=sa.bindparam("st"),
            position=sa.bindparam("pos"),
            next_due_at=sa.bindparam("due"),
            finished_at=sa.bindparam("fin"),
            reason=sa.bindparam("why"),
            lease_owner=sa.bindparam("own"),
        ),
        updates,
    )


def release_leases(*, session: Session, sequence_id: uuid.UUID, owner: str, now: datetime) -> int:
    """Make the enrollments leased to `owner` due at `now` again, and return how many: a retried attempt
    of a round calls it first, so what its dead predecessor had claimed goes out at once rather than when
    the lease runs out. Leases of other owners (another round's live claims) stay."""
    e = enrollment_table
    result = session.execute(
        e.update()
        .where(e.c.sequence_id == sequence_id, e.c.lease_owner == owner, e.c.status == "active")
        .values(next_due_at=now, lease_owner=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def record_deliveries(
    *,
    session: Session,
    sequence: CompiledSequence,
    results: Iterable[tuple[Outgoing, Delivery]],
    now: datetime,
) -> dict[str, int]:
    """Write what the channel said: a sent row moves its enrollment to the next step (due now) or to the
    end; a refused one (4xx) fails the enrollment with the response kept on the row; a transient failure
    keeps the row pending and the enrollment due again after a growing delay, until MAX_SEND_ATTEMPTS.

    Only a still-pending send row and an enrollment still active at that send's step are written: a stale
    result (an overlapping attempt's, or one recorded after the contact exited) changes nothing."""
    program = sequence.program
    counts = {"sent": 0, "failed": 0, "retry": 0}
    send_updates: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for outgoing, delivery in results:
        attempts = outgoing.attempts + 1
        outcome = delivery.outcome
        if outcome == "retry" and attempts >= MAX_SEND_ATTEMPTS:
            outcome = "failed"
        counts[outcome] += 1
        send_updates.append(
            {
                "k": outgoing.idempotency_key,
                "st": "pending" if outcome == "retry" else outcome,
                "n": attempts,
                "code": delivery.status_code,
                "resp": delivery.response,
                "at": now if outcome == "sent" else None,
            }
        )
        step = outgoing.step
        row: dict[str, Any] = {
            "eid": outgoing.enrollment_id,
            "at_step": step,
            "fin": None,
            "why": None,
            "own": None,
        }
        if outcome == "sent":
            following = program.nodes[step].next if step < len(program.nodes) else None
            if following is None:
                row.update(st="completed", pos=None, due=None, fin=now)
            else:
                row.update(st="active", pos=following, due=now)
        elif outcome == "failed":
            detail = (
                f"HTTP {delivery.status_code}" if delivery.status_code else (delivery.response or "error")
            )
            row.update(st="failed", pos=step, due=None, fin=now, why=f"step {step}: send failed: {detail}")
        else:
            row.update(st="active", pos=step, due=now + _RETRY_BASE * 2 ** (attempts - 1))
        updates.append(row)
    if send_updates and _on_postgres(session):
        session.execute(
            sa.text(_PG_SEND_RESULTS), _columns(send_updates, ("k", "st", "n", "code", "resp", "at"))
        )
    elif send_updates:
        s = send_table
        session.execute(
            s.update()
            .where(s.c.idempotency_key == sa.bindparam("k"), s.c.status == "pending")
            .values(
                status=sa.bindparam("st"),
                attempts=sa.bindparam("n"),
                response_status=sa.bindparam("code"),
                response_body=sa.bindparam("resp"),
                sent_at=sa.bindparam("at"),
            ),
            send_updates,
        )
    _apply_updates(session, updates, guarded=True)
    return counts


def next_due_at(*, session: Session, sequence_id: uuid.UUID) -> datetime | None:
    """When the earliest active enrollment is due (None: none is active)."""
    e = enrollment_table
    value: datetime | None = session.scalar(
        sa.select(sa.func.min(e.c.next_due_at)).where(e.c.sequence_id == sequence_id, e.c.status == "active")
    )
    return value


# ---- status --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepStatus:
    step: int
    type: str
    #: Active enrollments whose next step is this one.
    enrolled: int
    sent: int
    exited: int
    failed: int


@dataclass(frozen=True, slots=True)
class SequenceStatus:
    key: str
    name: str
    segment: str
    status: str
    version: int
    enrollments: int
    active: int
    completed: int
    exited: int
    failed: int
    sent: int
    steps: list[StepStatus]


def sequence_status(*, session: Session, key: str) -> SequenceStatus:
    """Enrollments by status, and per step: enrolled (waiting for it), sent, exited and failed there."""
    record = _require(session, key)
    program = compile_sequence(record.definition_model())
    e, s = enrollment_table, send_table
    by_status: dict[str, int] = {}
    per_step: dict[tuple[str, int | None], int] = {}
    for status, position, n in session.execute(
        sa.select(e.c.status, e.c.position, sa.func.count())
        .where(e.c.sequence_id == record.id)
        .group_by(e.c.status, e.c.position)
    ):
        by_status[status] = by_status.get(status, 0) + n
        per_step[(status, position)] = n
    sent = {
        step: n
        for step, n in session.execute(
            sa.select(s.c.step, sa.func.count())
            .where(s.c.sequence_id == record.id, s.c.status == "sent")
            .group_by(s.c.step)
        )
    }
    steps = [
        StepStatus(
            step=node.index,
            type=node.step.type,
            enrolled=per_step.get(("active", node.index), 0),
            sent=sent.get(node.index, 0),
            exited=per_step.get(("exited", node.index), 0),
            failed=per_step.get(("failed", node.index), 0),
        )
        for node in program.nodes
    ]
    return SequenceStatus(
        key=record.key,
        name=record.name,
        segment=record.segment_key,
        status=record.status,
        version=record.version,
        enrollments=sum(by_status.values()),
        active=by_status.get("active", 0),
        completed=by_status.get("completed", 0),
        exited=by_status.get("exited", 0),
        failed=by_status.get("failed", 0),
        sent=sum(sent.values()),
        steps=steps,
    )
