"""Every SQL table of segmentflow, as SQLModel classes. Stored rules are JSON turned into the rules model in
exactly one place: `SegmentRecord.definition_model()`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from segmentflow.db.types import UTCDateTime
from segmentflow.policies.sequences import SequenceDefinition
from segmentflow.policies.sla import Policy as SlaPolicyDefinition
from segmentflow.rules import Segment, parse_segment

__all__ = [
    "ApiKey",
    "Contact",
    "MembershipChange",
    "RecomputeProgress",
    "SQLModel",
    "SegmentMembership",
    "SegmentRecord",
    "api_key_table",
    "change_table",
    "contact_table",
    "membership_table",
    "progress_table",
    "segment_table",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Contact(SQLModel, table=True):
    """A contact: a LaunchDarkly context stored whole, addressed by its fully-qualified key. `id` is the
    paging cursor for recomputes (integers order the same in every database)."""

    __tablename__ = "contact"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(512), nullable=False, unique=True))
    kinds: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    context: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    #: When memberships were last computed for this contact; None until the first computation.
    computed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))


class SegmentRecord(SQLModel, table=True):
    """A segment: LaunchDarkly's JSON definition plus its identity and bookkeeping."""

    __tablename__ = "segment"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    description: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))
    definition: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))

    def definition_model(self) -> Segment:
        return parse_segment(self.definition)


class SegmentMembership(SQLModel, table=True):
    """A contact currently in a segment, since when."""

    __tablename__ = "segment_membership"

    segment_id: uuid.UUID = Field(
        sa_column=sa.Column(sa.Uuid, sa.ForeignKey("segment.id", ondelete="CASCADE"), primary_key=True)
    )
    contact_id: int = Field(
        sa_column=sa.Column(
            sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True, index=True
        )
    )
    since: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class MembershipChange(SQLModel, table=True):
    """The membership change feed: one row per entry or exit, numbered by an increasing `seq`. Keys are
    copied in so the feed outlives deleted segments and contacts."""

    __tablename__ = "membership_change"

    seq: int | None = Field(default=None, primary_key=True)
    # Looked up through ix_membership_change_segment_seq (segment_id, seq), below.
    segment_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, nullable=False))
    segment_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    contact_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    # Looked up through ix_membership_change_contact (contact_key, segment_key, seq), below.
    contact_key: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    change: str = Field(sa_column=sa.Column(sa.String(8), nullable=False))  # "entered" | "exited"
    at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


class RecomputeProgress(SQLModel, table=True):
    """Durable cursor of one contact range of a recompute run, written in the same transaction as each page,
    so a run resumed after a crash continues exactly where the database says and counts nothing twice."""

    __tablename__ = "recompute_progress"

    run_token: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    range_index: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    cursor: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    contacts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    entered: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    exited: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


def _table(model: type[SQLModel]) -> sa.Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, sa.Table)
    return table


#: Core tables, for bulk statements (typed, so SQL building needs no casts).
contact_table = _table(Contact)
segment_table = _table(SegmentRecord)
membership_table = _table(SegmentMembership)
change_table = _table(MembershipChange)
progress_table = _table(RecomputeProgress)


class ApiKey(SQLModel, table=True):
    """An HTTP API key: only the SHA-256 of the token is kept. `id` is the public part of the token
    (`sf_<id>_<secret>`), so a presented token is looked up by id and its hash compared in constant time."""

    __tablename__ = "api_key"

    id: str = Field(sa_column=sa.Column(sa.String(32), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    #: Space-separated, as OAuth writes scopes.
    scopes: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))

    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())


api_key_table = _table(ApiKey)
# The report endpoint counts entries and exits over a time window.
sa.Index("ix_membership_change_at", change_table.c.at)


# --- Message handling: actions, AI instructions, refusal audit (migration 0004) ---


class Action(SQLModel, table=True):
    """Something the AI agent can do (look up an order, issue a refund), performed by POSTing to its webhook;
    `restricted_to_segments` empty means every contact may use it."""

    __tablename__ = "action"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    description: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False))
    restricted_to_segments: list[str] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    trigger_phrases: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    #: JSON schema of the arguments.
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False))
    #: `{"url", "headers"}`, or None for an action that calls nothing.
    webhook: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    #: 1 when created, +1 on every upsert: the catalog cache's staleness key is count + sum of versions.
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


class Instruction(SQLModel, table=True):
    """A piece of guidance in the AI agent's prompt, restricted to segments like an action."""

    __tablename__ = "instruction"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False, unique=True))
    text: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    restricted_to_segments: list[str] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False)
    )
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False, server_default="1"))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


class ActionRefusal(SQLModel, table=True):
    """The audit of refused actions: when, which contact (None: anonymous), which action, why, and which
    check refused it (`workflow`: the outbound interceptor, `worker`: the inbound one, `activity`:
    `segmentflow.RunAction` itself, `egress`: its webhook refused by the egress policy)."""

    __tablename__ = "action_refusal"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False, index=True))
    contact_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(512), nullable=True))
    action_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    side: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    workflow_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(512), nullable=True))
    #: With `workflow_id`, the refusing activity: unique (migration 0007), so a retry after the commit
    #: writes no second row. None outside an activity.
    run_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))
    activity_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(256), nullable=True))


action_table = _table(Action)
instruction_table = _table(Instruction)
refusal_table = _table(ActionRefusal)
sa.Index(
    "uq_action_refusal_activity",
    refusal_table.c.workflow_id,
    refusal_table.c.run_id,
    refusal_table.c.activity_id,
    unique=True,
)
__all__ += ["Action", "ActionRefusal", "Instruction", "action_table", "instruction_table", "refusal_table"]


# --- Outbound sequences: definitions, enrollments, sends (migration 0005) ---


class Sequence(SQLModel, table=True):
    """An outbound sequence: its JSON definition, whether it runs, and how far it has read the change feed
    of its segment (`feed_cursor`, a `membership_change.seq`)."""

    __tablename__ = "sequence"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    key: str = Field(sa_column=sa.Column(sa.String(128), nullable=False, unique=True))
    name: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    segment_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    definition: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    version: int = Field(default=1, sa_column=sa.Column(sa.Integer, nullable=False))
    #: "draft" (imported, never launched), "active" or "paused".
    status: str = Field(default="draft", sa_column=sa.Column(sa.String(16), nullable=False))
    feed_cursor: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    launched_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))

    def definition_model(self) -> SequenceDefinition:
        return SequenceDefinition.model_validate(self.definition)


class Enrollment(SQLModel, table=True):
    """One contact's pass through a sequence. `position` is the next step to run, due at `next_due_at`
    (indexed: the runner claims due enrollments by it). At most one active enrollment per contact and
    sequence (a partial unique index); a re-entry is a new row."""

    __tablename__ = "enrollment"

    id: int | None = Field(default=None, primary_key=True)
    sequence_id: uuid.UUID = Field(
        sa_column=sa.Column(sa.Uuid, sa.ForeignKey("sequence.id", ondelete="CASCADE"), nullable=False)
    )
    contact_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("contact.id", ondelete="CASCADE"), nullable=False)
    )
    contact_key: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    #: "active", "completed", "exited" or "failed".
    status: str = Field(default="active", sa_column=sa.Column(sa.String(16), nullable=False))
    position: int | None = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=True))
    next_due_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    enrolled_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    #: Why it ended early: "left_segment", "exit_step", or the error that failed it.
    reason: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    #: The round (workflow id/run id/activity id) whose claim leases it until `next_due_at`; a retried
    #: attempt of that round takes it back at once (migration 0007). None when not leased.
    lease_owner: str | None = Field(default=None, sa_column=sa.Column(sa.String(1024), nullable=True))


class Send(SQLModel, table=True):
    """One message of one enrollment's step, written (pending) and committed before the provider is
    called: unique per (enrollment, step), and its `idempotency_key` goes to the provider, so a retry after
    a crash re-sends the same key (which the provider deduplicates) and a sent row is never sent again."""

    __tablename__ = "send"

    id: int | None = Field(default=None, primary_key=True)
    enrollment_id: int = Field(
        sa_column=sa.Column(sa.Integer, sa.ForeignKey("enrollment.id", ondelete="CASCADE"), nullable=False)
    )
    step: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    sequence_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, nullable=False))
    contact_id: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    channel: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    idempotency_key: str = Field(sa_column=sa.Column(sa.String(128), nullable=False, unique=True))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    #: "pending" (written, maybe sent), "sent" or "failed".
    status: str = Field(default="pending", sa_column=sa.Column(sa.String(16), nullable=False))
    attempts: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False))
    response_status: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    response_body: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))


sequence_table = _table(Sequence)
enrollment_table = _table(Enrollment)
send_table = _table(Send)
sa.Index("ix_enrollment_due", enrollment_table.c.sequence_id, enrollment_table.c.next_due_at)
sa.Index(
    "uq_enrollment_active",
    enrollment_table.c.sequence_id,
    enrollment_table.c.contact_id,
    unique=True,
    sqlite_where=enrollment_table.c.status == "active",
    postgresql_where=enrollment_table.c.status == "active",
)
sa.Index("ix_enrollment_lease_owner", enrollment_table.c.lease_owner)
sa.Index("ix_enrollment_contact", enrollment_table.c.contact_id, enrollment_table.c.sequence_id)
sa.UniqueConstraint(send_table.c.enrollment_id, send_table.c.step, name="uq_send_enrollment_step")
sa.Index("ix_send_contact_created", send_table.c.contact_id, send_table.c.created_at)
sa.Index("ix_send_sequence_step", send_table.c.sequence_id, send_table.c.step)

__all__ += ["Enrollment", "Send", "Sequence", "enrollment_table", "send_table", "sequence_table"]


# --- SLA: policies, tickets, SLA events (migration 0006) ---


class SlaPolicy(SQLModel, table=True):
    """An SLA policy as the policy file holds it; `position` is its precedence (first match wins). The JSON
    is turned into the policy model in exactly one place: `definition_model()`."""

    __tablename__ = "sla_policy"

    key: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    position: int = Field(sa_column=sa.Column(sa.Integer, nullable=False, unique=True))
    definition: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))

    def definition_model(self) -> SlaPolicyDefinition:
        return SlaPolicyDefinition.model_validate(self.definition)


class Ticket(SQLModel, table=True):
    """A ticket under SLA: its contact (by fully-qualified key; None for an unknown requester), the
    `segmentflow.TicketSla` workflow that times it, and the facts its policy was selected on."""

    __tablename__ = "ticket"

    id: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    contact_key: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(512), nullable=True, index=True)
    )
    workflow_id: str = Field(sa_column=sa.Column(sa.String(512), nullable=False))
    priority: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    channel: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    #: "open" | "pending" | "solved"
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False, index=True))
    policy_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(256), nullable=True))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


class SlaEvent(SQLModel, table=True):
    """A warning or breach of one metric of a ticket, with the contact's segments when it fired (reports by
    segment need no join to memberships that have since changed). Unique per due time, so a retried
    activity records it once."""

    __tablename__ = "sla_event"
    __table_args__ = (sa.UniqueConstraint("ticket_id", "metric", "kind", "due_at", name="uq_sla_event_due"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str = Field(sa_column=sa.Column(sa.String(256), nullable=False, index=True))
    contact_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(512), nullable=True))
    segments: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    policy_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    metric: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    #: "warning" | "breach"
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    due_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    fired_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    #: Why its webhook failed for good (an egress refusal, a redirect, a 4xx); None: sent, or no webhook.
    webhook_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    #: The webhook outbox of events fired from `sla_timer` (None on events of per-ticket timers, whose
    #: workflow posts them): where to POST, "pending" | "sent" | "failed", tries so far, and when the next
    #: try is due (a claimed try holds it a lease ahead; None once sent or failed).
    webhook_url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    webhook_state: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    webhook_attempts: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    webhook_next_at: datetime | None = Field(
        default=None, sa_column=sa.Column(UTCDateTime, nullable=True, index=True)
    )


class SlaWatch(SQLModel, table=True):
    """Where a `segmentflow.WatchSlaMembershipChanges` watcher (by workflow id) is in the membership change
    feed (`cursor`, a `membership_change.seq`): a watcher started again resumes here."""

    __tablename__ = "sla_watch"

    id: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    cursor: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


class SlaTimer(SQLModel, table=True):
    """A pending warning or breach of one metric of a ticket (fired rows are deleted in the transaction that
    records their `sla_event`). `due_at` is the metric's due time (the event's), `fire_at` the moment it
    fires (the warning time for a warning); `slot` (0-15, from the ticket id) places it in one firer's
    share. Written by `segmentflow.PlanTicketSla`, fired in batches by `segmentflow.FireSlaTimers`."""

    __tablename__ = "sla_timer"
    __table_args__ = (
        sa.UniqueConstraint("ticket_id", "metric", "kind", name="uq_sla_timer_ticket_metric_kind"),
        sa.Index("ix_sla_timer_slot_fire_at", "slot", "fire_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    metric: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    #: "warning" | "breach"
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    due_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    fire_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    slot: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    policy_key: str = Field(sa_column=sa.Column(sa.String(256), nullable=False))
    contact_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(512), nullable=True))
    webhook_url: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))


class SlaFirer(SQLModel, table=True):
    """A running `segmentflow.FireSlaTimers` (by workflow id): the slots it fires (`slot % shards ==
    shard`) and when it next wakes, so a plan writing an earlier timer knows to wake it."""

    __tablename__ = "sla_firer"

    id: str = Field(sa_column=sa.Column(sa.String(512), primary_key=True))
    shard: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    shards: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    wake_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime, nullable=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


sla_policy_table = _table(SlaPolicy)
ticket_table = _table(Ticket)
sla_event_table = _table(SlaEvent)
sla_watch_table = _table(SlaWatch)
sla_timer_table = _table(SlaTimer)
sla_firer_table = _table(SlaFirer)
__all__ += [
    "SlaEvent",
    "SlaFirer",
    "SlaPolicy",
    "SlaTimer",
    "SlaWatch",
    "Ticket",
    "sla_event_table",
    "sla_firer_table",
    "sla_policy_table",
    "sla_timer_table",
    "sla_watch_table",
    "ticket_table",
]


class ConsoleSession(SQLModel, table=True):
    """A signed-in operator console session: only the SHA-256 of the cookie's token is kept. The API key it
    was opened with is re-checked on every request (a revoked key ends its sessions at once)."""

    __tablename__ = "console_session"

    id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    key_id: str = Field(sa_column=sa.Column(sa.String(32), nullable=False, index=True))
    #: The token every form of this session carries (compared in constant time on each write).
    csrf: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    created_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))
    last_seen_at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False))


console_session_table = _table(ConsoleSession)
__all__ += ["ConsoleSession", "console_session_table"]


# --- Reporting: conversation events (migration 0010) ---


class ConversationEventRecord(SQLModel, table=True):
    """One closed conversation (`POST /events`, `segmentflow events import`,
    `segmentflow.RecordConversation`), keyed by the caller's id so a repeat is a no-op. Attributed to
    segments only when reported, from the memberships and the change feed as they were at `at`."""

    __tablename__ = "conversation_event"

    id: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    contact_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(512), nullable=True))
    at: datetime = Field(sa_column=sa.Column(UTCDateTime, nullable=False, index=True))
    channel: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    handoff: bool | None = Field(default=None, sa_column=sa.Column(sa.Boolean, nullable=True))
    csat: int | None = Field(default=None, sa_column=sa.Column(sa.SmallInteger, nullable=True))
    messages: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=sa.Column(UTCDateTime, nullable=False))


class ReportDay(SQLModel, table=True):
    """One UTC day of the report's rollup: `dirty` when events of that day were recorded since it was
    built, and the change-feed `seq` it was built at (a feed row written later with an earlier `at`
    makes the days from then on stale)."""

    __tablename__ = "report_day"

    day: str = Field(sa_column=sa.Column(sa.String(10), primary_key=True))
    dirty: bool = Field(sa_column=sa.Column(sa.Boolean, nullable=False))
    feed_seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


class ReportDayFigures(SQLModel, table=True):
    """The rollup: additive conversation figures of one UTC day under one segment key (`"-"`: none;
    `""`: every conversation of the day), attributed at each conversation's time."""

    __tablename__ = "report_day_figures"

    day: str = Field(sa_column=sa.Column(sa.String(10), primary_key=True))
    segment_key: str = Field(sa_column=sa.Column(sa.String(256), primary_key=True))
    conversations: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    handoffs: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    handoff_known: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    csat_responses: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    csat_sum: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    csat_satisfied: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


conversation_event_table = _table(ConversationEventRecord)
report_day_table = _table(ReportDay)
report_day_figures_table = _table(ReportDayFigures)
# A contact's feed rows, and the report rewinding each (segment, contact) pair's feed: its rows in seq
# order, without a sort (migration 0016: one index for both, each feed row is a random insert into it).
sa.Index(
    "ix_membership_change_contact",
    change_table.c.contact_key,
    change_table.c.segment_key,
    change_table.c.seq,
)
# A sequence's next page of its segment's feed, by key (it follows a segment deleted and made again).
sa.Index("ix_membership_change_segment_key_seq", change_table.c.segment_key, change_table.c.seq)
__all__ += [
    "ConversationEventRecord",
    "ReportDay",
    "ReportDayFigures",
    "conversation_event_table",
    "report_day_figures_table",
    "report_day_table",
]


# --- The console's segment list: entries and exits per segment per UTC day and hour (migration 0011) ---


class SegmentChangeDay(SQLModel, table=True):
    """Entries and exits of one segment on one UTC day (the day of the feed row's `at`, as `date(at)`),
    folded in from the change feed up to `SegmentChangeRollup.seq`."""

    __tablename__ = "segment_change_day"

    segment_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, primary_key=True))
    day: str = Field(sa_column=sa.Column(sa.String(10), primary_key=True, index=True))
    entered: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    exited: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


class SegmentChangeHour(SQLModel, table=True):
    """Entries and exits of one segment in one UTC hour (its start), for the last 24 hours' counts; hours
    older than two days are pruned when the feed is folded in."""

    __tablename__ = "segment_change_hour"

    segment_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, primary_key=True))
    hour: datetime = Field(sa_column=sa.Column(UTCDateTime, primary_key=True))
    entered: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    exited: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


class SegmentChangeRollup(SQLModel, table=True):
    """The last change-feed seq folded in: `id` 1 into `segment_change_day` and `_hour`, `id` 2 into
    `contact_presence_change` and `presence_change_day` (`services.presence`)."""

    __tablename__ = "segment_change_rollup"

    id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    seq: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))


# A segment's page lists its newest entries and exits: the last rows of its feed, without a sort.
sa.Index("ix_membership_change_segment_seq", change_table.c.segment_id, change_table.c.seq)
segment_change_day_table = _table(SegmentChangeDay)
segment_change_hour_table = _table(SegmentChangeHour)
segment_change_rollup_table = _table(SegmentChangeRollup)
__all__ += [
    "SegmentChangeDay",
    "SegmentChangeHour",
    "SegmentChangeRollup",
    "segment_change_day_table",
    "segment_change_hour_table",
    "segment_change_rollup_table",
]


# --- The report's distinct contacts in any segment, kept as the change feed is folded (migration 0013) ---


class ContactPresenceChange(SQLModel, table=True):
    """When a contact came to be in at least one segment (`delta` 1) or in none any more (-1): the feed's
    rows of that contact replayed in `at` order, one row per instant where the answer flips. Rebuilt for
    every contact the feed gained rows for when the feed is folded (`services.presence.fold_presence`)."""

    __tablename__ = "contact_presence_change"

    contact_key: str = Field(sa_column=sa.Column(sa.String(512), primary_key=True))
    contact_id: int = Field(sa_column=sa.Column(sa.Integer, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_column=sa.Column(UTCDateTime, primary_key=True, index=True))
    delta: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))


class PresenceChangeDay(SQLModel, table=True):
    """Per UTC day of `at`: how many `contact_presence_change` rows came in (1) and went out (-1)."""

    __tablename__ = "presence_change_day"

    day: str = Field(sa_column=sa.Column(sa.String(10), primary_key=True))
    entered: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))
    exited: int = Field(sa_column=sa.Column(sa.Integer, nullable=False))


presence_change_table = _table(ContactPresenceChange)
presence_day_table = _table(PresenceChangeDay)
__all__ += [
    "ContactPresenceChange",
    "PresenceChangeDay",
    "presence_change_table",
    "presence_day_table",
]
