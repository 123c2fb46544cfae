"""Payloads of the SLA activities and workflows: frozen pydantic models, camelCase on the wire.

Pure (pydantic only), so workflow code imports it freely. `SelectSlaPolicyInput`/`Result` are a public
contract (`segmentflow.SelectSlaPolicy`, `segmentflow sla select`, `POST /sla/select`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field
from segmentflow.workflows.models import Payload
from temporalio.common import SearchAttributeKey

__all__ = [
    "DISPATCH_SLA_MEMBERSHIP_CHANGES",
    "FIRE_DUE_SLA_TIMERS",
    "FIRE_SLA_TIMERS",
    "PLAN_TICKET_SLA",
    "POST_SLA_WEBHOOK",
    "RECORD_SLA_EVENT",
    "SA_CONTACT_KEY",
    "SA_SLA_POLICY",
    "SA_TICKET_ID",
    "SA_TICKET_STATE",
    "SELECT_SLA_POLICY",
    "SLA_WATCH_ID",
    "TICKET_SLA",
    "WATCH_SLA_MEMBERSHIP_CHANGES",
    "DispatchSlaChangesInput",
    "DispatchSlaChangesResult",
    "FireDueSlaTimersInput",
    "FireDueSlaTimersResult",
    "FireSlaTimersInput",
    "FiredEvent",
    "FiredMarks",
    "MetricState",
    "PlanTicketSlaInput",
    "PlanTicketSlaResult",
    "PostSlaWebhookInput",
    "RecordSlaEventInput",
    "RecordSlaEventResult",
    "SelectSlaPolicyInput",
    "SelectSlaPolicyResult",
    "SlaDue",
    "SlaTarget",
    "SlaTicket",
    "TicketChange",
    "TicketReply",
    "TicketSlaCarry",
    "TicketSlaInput",
    "TicketSlaState",
    "WatchSlaChangesInput",
    "firer_workflow_id",
    "ticket_workflow_id",
]

SELECT_SLA_POLICY = "segmentflow.SelectSlaPolicy"
PLAN_TICKET_SLA = "segmentflow.PlanTicketSla"
RECORD_SLA_EVENT = "segmentflow.RecordSlaEvent"
POST_SLA_WEBHOOK = "segmentflow.PostSlaWebhook"
DISPATCH_SLA_MEMBERSHIP_CHANGES = "segmentflow.DispatchSlaMembershipChanges"
TICKET_SLA = "segmentflow.TicketSla"
WATCH_SLA_MEMBERSHIP_CHANGES = "segmentflow.WatchSlaMembershipChanges"
SLA_WATCH_ID = "segmentflow-sla-watch"
FIRE_SLA_TIMERS = "segmentflow.FireSlaTimers"
FIRE_DUE_SLA_TIMERS = "segmentflow.FireDueSlaTimers"

#: Search attributes of `TicketSla` (Keyword; register them on the namespace before turning them on).
SA_TICKET_ID = SearchAttributeKey.for_keyword("SegmentflowTicketId")
SA_CONTACT_KEY = SearchAttributeKey.for_keyword("SegmentflowContactKey")
SA_SLA_POLICY = SearchAttributeKey.for_keyword("SegmentflowSlaPolicy")
SA_TICKET_STATE = SearchAttributeKey.for_keyword("SegmentflowTicketState")

Priority = Literal["low", "normal", "high", "urgent"]
Metric = Literal["first_reply", "next_reply", "resolution"]
Status = Literal["open", "pending", "solved"]


#: Text stored in the ticket and SLA event tables: within their column sizes, and without NUL (which
#: PostgreSQL refuses in text), so a bad value is refused here rather than failing a transaction forever.
_NO_NUL = r"^[^\x00]*$"
Channel = Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_NUL)]
ContactKey = Annotated[str, Field(min_length=1, max_length=512, pattern=_NO_NUL)]
Tag = Annotated[str, Field(min_length=1, max_length=256, pattern=_NO_NUL)]
TicketId = Annotated[str, Field(min_length=1, max_length=256, pattern=_NO_NUL)]
MAX_TAGS = 200


def ticket_workflow_id(ticket_id: str) -> str:
    """The id of a ticket's `segmentflow.TicketSla` workflow: one per ticket."""
    return f"segmentflow-ticket-sla-{ticket_id}"


def firer_workflow_id(task_queue: str, shard: int = 0, shards: int = 1) -> str:
    """The id of the `segmentflow.FireSlaTimers` firing share `shard` of `shards` for a task queue."""
    return f"segmentflow-sla-firer-{task_queue}-{shard}-of-{shards}"


class SlaTicket(Payload):
    priority: Priority
    channel: Channel | None = None
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)
    created_at: AwareDatetime


class SelectSlaPolicyInput(Payload):
    """`contactKey`: the requester's fully-qualified key, or null (a ticket without a known contact)."""

    contact_key: ContactKey | None = None
    ticket: SlaTicket


class SlaTarget(Payload):
    due_at: datetime
    business_minutes: int


class SelectSlaPolicyResult(Payload):
    """`policy` null means no policy matched: no SLA (and no targets)."""

    policy: str | None
    targets: dict[Metric, SlaTarget]


class SlaDue(Payload):
    due_at: datetime
    warn_at: datetime
    business_minutes: int


class PlanTicketSlaInput(Payload):
    ticket_id: TicketId
    contact_key: ContactKey | None
    ticket: SlaTicket
    status: Status
    #: When each running clock started.
    starts: dict[Metric, datetime]
    #: Closed pending intervals `[from, to]`.
    pauses: list[tuple[datetime, datetime]] = Field(default_factory=list)
    #: Also replace the ticket's pending timers in `sla_timer` (fired by `FireSlaTimers`, which the plan
    #: wakes or starts when it writes an earlier timer); false for runs that sleep on their own timers.
    timers: bool = False
    #: Where the fired timers' webhooks go (with `timers`).
    webhook_url: str | None = None


class FiredMarks(Payload):
    warned: bool = False
    breached: bool = False


class FiredEvent(Payload):
    metric: Metric
    kind: Literal["warning", "breach"]
    due_at: datetime


class PlanTicketSlaResult(Payload):
    """With table timers (`timers` on the input), `fired`: whether each running metric's warning and
    breach have fired; `events`: the ticket's SLA events so far, in firing order."""

    policy: str | None
    targets: dict[Metric, SlaDue]
    fired: dict[Metric, FiredMarks] | None = None
    events: list[FiredEvent] | None = None


class RecordSlaEventInput(Payload):
    ticket_id: TicketId
    contact_key: ContactKey | None
    policy: str
    metric: Metric
    kind: Literal["warning", "breach"]
    due_at: datetime
    fired_at: datetime


class RecordSlaEventResult(Payload):
    segments: list[str]


class PostSlaWebhookInput(Payload):
    url: str
    event: RecordSlaEventInput
    segments: list[str]


class MetricState(Payload):
    started_at: datetime | None = None
    due_at: datetime | None = None
    warn_at: datetime | None = None
    business_minutes: int | None = None
    fulfilled_at: datetime | None = None
    warned: bool = False
    breached: bool = False


class TicketSlaCarry(Payload):
    """What a `TicketSla` run hands to the next when it continues as new: the ticket's facts, status,
    pauses, policy, clocks and the events fired."""

    ticket: SlaTicket
    status: Status
    paused_since: datetime | None = None
    pauses: list[tuple[datetime, datetime]] = Field(default_factory=list)
    policy: str | None = None
    clocks: dict[Metric, MetricState]
    events: list[str] = Field(default_factory=list)


class TicketSlaInput(Payload):
    """One ticket to time. `webhookUrl`: where warnings and breaches are POSTed (none: recorded only).
    `historyCap`: a run continues as new past this many history events (or when the server suggests it);
    `searchAttributes`: upsert the ticket id, contact key, policy and state as search attributes (they must
    be registered on the namespace, or the workflow's tasks fail until they are);
    `carried`: the state a previous run handed on (set by the workflow itself)."""

    ticket_id: TicketId
    contact_key: ContactKey | None = None
    ticket: SlaTicket
    status: Status = "open"
    webhook_url: str | None = None
    history_cap: int = Field(default=10_000, ge=10)
    search_attributes: bool = False
    carried: TicketSlaCarry | None = None
    #: "table" (default): the timers live in `sla_timer`, fired by `segmentflow.FireSlaTimers`; "workflow":
    #: the run sleeps on its own durable timers (the earlier design, for a host running no firer).
    timers: Literal["table", "workflow"] = "table"


class TicketChange(Payload):
    """Update `change`: the ticket's new priority, channel, tags or status (omitted: unchanged). A change
    naming none of them is refused."""

    priority: Priority | None = None
    channel: Channel | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS)
    status: Status | None = None


class TicketReply(Payload):
    """Update `reply`: an agent's reply fulfils `first_reply` and a running `next_reply`; a customer's
    message after an agent's reply starts `next_reply`. `at`: when the reply was written (default: when
    the workflow handles it; a later time is clamped to then, an earlier one than the ticket's creation is
    refused), so a busy worker does not turn a met SLA into a breach."""

    by: Literal["agent", "customer"]
    at: AwareDatetime | None = None


class TicketSlaState(Payload):
    """Query `state`, and the workflow's result."""

    policy: str | None
    status: Status
    priority: Priority
    paused: bool
    metrics: dict[Metric, MetricState]
    events: list[str] = Field(default_factory=list)


class WatchSlaChangesInput(Payload):
    """Follow the membership change feed and signal the `TicketSla` workflows of open tickets whose contact
    changed. The cursor is stored per watcher id (table `sla_watch`): a watcher started again resumes
    there; `after` only places a watcher that has no stored cursor yet (None: the feed's current end)."""

    after: int | None = None
    poll_interval: timedelta = timedelta(seconds=30)
    batch: int = Field(default=500, ge=1, le=10_000)
    #: Polls per workflow run before continuing as new (bounds the history).
    polls_per_run: int = Field(default=500, ge=1)


class FireSlaTimersInput(Payload):
    """A firer of SLA timers: share `shard` of `shards` (timer slots with `slot % shards == shard`).
    `pollInterval`: the longest sleep (a plan writing an earlier timer wakes it at once; a ticket written
    without a workflow is seen by the next poll); `batch`: timers per claim; `roundsPerRun`: rounds before
    continuing as new. The default poll (30 minutes) is the firer's a plan starts itself (plans wake it);
    `worker.py` starts its firers polling every minute."""

    shard: int = Field(default=0, ge=0, le=15)
    shards: int = Field(default=1, ge=1, le=16)
    poll_interval: timedelta = timedelta(minutes=30)
    batch: int = Field(default=500, ge=1, le=2000)
    rounds_per_run: int = Field(default=500, ge=1)


class FireDueSlaTimersInput(Payload):
    firer_id: str = Field(min_length=1, max_length=512)
    shard: int
    shards: int
    #: The firer's clock (workflow time) when the round began.
    now: datetime
    batch: int
    poll_interval: timedelta


class FireDueSlaTimersResult(Payload):
    fired: int
    #: When the firer should wake next (the earliest timer of its share or webhook retry, at most a poll
    #: interval away).
    wake_at: datetime


class DispatchSlaChangesInput(Payload):
    """`watchId`: whose stored cursor to read and advance; `after`: where a watcher with no stored cursor
    starts (None: at the feed's current end)."""

    watch_id: str = Field(min_length=1, max_length=256)
    after: int | None
    limit: int


class DispatchSlaChangesResult(Payload):
    next_after: int
    changes: int
    signalled: int
    #: Tickets whose signal the server refused for good (logged, skipped).
    failed: int = 0
