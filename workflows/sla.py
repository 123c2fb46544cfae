"""`segmentflow.TicketSla`: one workflow per ticket, timing its SLA metrics; `segmentflow.FireSlaTimers`,
the few long-running firers of the ticket timers kept in SQL; and `segmentflow.WatchSlaMembershipChanges`,
which tells the ticket workflows when their contact's segments change.

The workflow is a small state machine over clocks (`first_reply` and `resolution` start at creation,
`next_reply` when a customer writes after an agent's reply); it computes no times itself. Changes and
replies arrive as Updates (`change`, `reply`: validated, answered with the planned state; the signals of
the same names remain for runs and clients of the earlier release), membership changes as the
`membershipChanged` signal. Each change (priority, channel, tags, status, a membership change of the
contact, the end of a pause, a reply) asks the `segmentflow.PlanTicketSla` local activity to select the
policy again and compute the due and warning times in business hours. Keeping that arithmetic in an
activity records its answer in the history: a tz database update on a worker (new DST rules) can then
never make a replay disagree with the times already planned.

Timers (`TABLE_TIMERS`, runs begun since, with `timers="table"`, the default): the plan also replaces the
ticket's pending warning and breach timers in the `sla_timer` table, in its own transaction, and wakes (or
starts) the firer of the ticket's slot when a timer is earlier than that firer's wake-up. The workflow sets
no timer itself: between changes it waits, costing the server nothing, and a firing costs no workflow task
of the ticket (that was the limit: ~25 workflow tasks/s on 2 cores made a 2,000-ticket burst fire 37-48 s
late; bench/sla.py). `pending` and `solved` remove the timers, a fulfilled clock's timers go with the
plan that follows the reply, a moved due time moves them. The query `state` shows `warned`/`breached` and
`events` as of the last plan (each plan reads the ticket's fired events back); the SLA events
(`/sla/tickets/{id}/events`) are the source of truth between plans, and the final state, planned when the
ticket is solved, has them all.

Runs begun before `TABLE_TIMERS` (and runs started with `timers="workflow"`, for a host running no firer)
keep the earlier design: they sleep on their own durable timers, record each warning or breach
(`segmentflow.RecordSlaEvent`, a local activity) and POST the webhook in the background
(`segmentflow.PostSlaWebhook`). `pending` pauses every running clock (the paused business time moves the
due times on), `solved` stops them and ends the workflow. Each change costs a few history events, so a run
continues as new, handing its state on (`TicketSlaCarry`), when the server suggests it or past `historyCap`
events, once the notifications in flight are done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from segmentflow.workflows.sla_models import (
        DISPATCH_SLA_MEMBERSHIP_CHANGES,
        FIRE_DUE_SLA_TIMERS,
        FIRE_SLA_TIMERS,
        PLAN_TICKET_SLA,
        POST_SLA_WEBHOOK,
        RECORD_SLA_EVENT,
        SA_CONTACT_KEY,
        SA_SLA_POLICY,
        SA_TICKET_ID,
        SA_TICKET_STATE,
        TICKET_SLA,
        WATCH_SLA_MEMBERSHIP_CHANGES,
        DispatchSlaChangesInput,
        DispatchSlaChangesResult,
        FireDueSlaTimersInput,
        FireDueSlaTimersResult,
        FireSlaTimersInput,
        Metric,
        MetricState,
        PlanTicketSlaInput,
        PlanTicketSlaResult,
        PostSlaWebhookInput,
        RecordSlaEventInput,
        RecordSlaEventResult,
        Status,
        TicketChange,
        TicketReply,
        TicketSlaCarry,
        TicketSlaInput,
        TicketSlaState,
        WatchSlaChangesInput,
    )

__all__ = [
    "AGENT_REPLY_SKIPS_PLAN",
    "PLAN_DURING_DRAIN",
    "TABLE_TIMERS",
    "FireSlaTimers",
    "TicketSla",
    "WatchSlaMembershipChanges",
]

#: `workflow.patched` id: the ticket's timers live in `sla_timer`, fired by `FireSlaTimers`; the run sets no
#: timer, and an agent's reply plans (the plan removes the fulfilled clock's timers). Runs begun before it
#: sleep on their own timers (replay keeps doing so); removed once none is open (README, "Deploying
#: changes").
TABLE_TIMERS = "ticket-sla-table-timers"

#: `workflow.patched` id: an agent's reply re-arms the timers without planning again (it changes no fact a
#: plan reads). Runs begun before it planned after every reply (a `PlanTicketSla` marker in their history),
#: and replay keeps doing so for them. Once no such run is open, this becomes `workflow.deprecate_patch`,
#: then goes (README, "Deploying changes").
AGENT_REPLY_SKIPS_PLAN = "ticket-sla-agent-reply-skips-plan"
#: `workflow.patched` id: a change arriving while a solved ticket's last notifications are still being
#: retried is planned at once (its Update answers at once), not after the retries end. Runs begun before it
#: planned such a change after the drain, and replay keeps doing so for them.
PLAN_DURING_DRAIN = "ticket-sla-plan-during-drain"

_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["InvalidInput"],
)
#: A webhook is tried for about an hour; a 4xx answer is not retried (it will not get better).
_WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=20,
    non_retryable_error_types=["WebhookRejected"],
)
#: A firing round is retried a few times, then the firer waits a poll interval and runs another.
_ROUND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=3
)
Kind = Literal["warning", "breach"]


@dataclass
class _Clock:
    started_at: datetime
    fulfilled_at: datetime | None = None
    due_at: datetime | None = None
    warn_at: datetime | None = None
    business_minutes: int | None = None
    warned: bool = False
    breached: bool = False

    def running(self) -> bool:
        return self.fulfilled_at is None

    def deadline(self) -> tuple[datetime, Kind] | None:
        if not self.running() or self.breached or self.due_at is None or self.warn_at is None:
            return None
        return (self.due_at, "breach") if self.warned else (self.warn_at, "warning")


@workflow.defn(name=TICKET_SLA)
class TicketSla:
    @workflow.init
    def __init__(self, params: TicketSlaInput) -> None:
        created = params.ticket.created_at
        self._params = params
        self._ticket = params.ticket
        self._status: Status = params.status
        self._paused_since: datetime | None = created if params.status == "pending" else None
        self._pauses: list[tuple[datetime, datetime]] = []
        self._clocks: dict[Metric, _Clock] = {
            "first_reply": _Clock(started_at=created),
            "resolution": _Clock(started_at=created),
        }
        self._policy: str | None = None
        self._events: list[str] = []
        self._dirty = False
        #: Re-arm the timers without planning (a clock was fulfilled).
        self._rearm = False
        #: Changes received, and the last one a plan covered: an update waits for its own.
        self._changes = 0
        self._planned_changes = 0
        #: Why the last plan was refused (None: it succeeded); an Update covered by it fails with this.
        self._plan_refusal: str | None = None
        self._indexed: tuple[str | None, str] | None = None
        self._planned_status: Status | None = None
        self._webhooks: list[asyncio.Task[None]] = []
        if params.carried is not None:  # a run continued as new: take the previous run's state over
            carried = params.carried
            self._ticket, self._status = carried.ticket, carried.status
            self._paused_since, self._pauses = carried.paused_since, list(carried.pauses)
            self._policy, self._events = carried.policy, list(carried.events)
            self._clocks = {
                metric: _Clock(
                    started_at=m.started_at or created,
                    fulfilled_at=m.fulfilled_at,
                    due_at=m.due_at,
                    warn_at=m.warn_at,
                    business_minutes=m.business_minutes,
                    warned=m.warned,
                    breached=m.breached,
                )
                for metric, m in carried.clocks.items()
            }

    def _table_timers(self) -> bool:
        """Whether this run's timers live in `sla_timer` (fixed for the run: the SDK memoizes patches)."""
        return self._params.timers == "table" and workflow.patched(TABLE_TIMERS)

    @workflow.run
    async def run(self, params: TicketSlaInput) -> TicketSlaState:
        self._table_timers()  # decided before anything else, so replay takes the same branch
        await self._plan()
        while True:
            await self._time_until_solved(params)
            # The last notifications; a change meanwhile (reopened) is planned without waiting for them.
            if workflow.patched(PLAN_DURING_DRAIN):
                await workflow.wait_condition(lambda: self._dirty or self._webhooks_done())
            else:
                await asyncio.gather(*self._webhooks)
            if not self._dirty:
                # Updates answered (their plan is done): nobody waits on a finished run.
                await workflow.wait_condition(workflow.all_handlers_finished)
                return self.state()
            # Reopened (or changed) while those were sent: plan the change and time on.

    async def _time_until_solved(self, params: TicketSlaInput) -> None:
        """Fire the timers and plan each change until a plan stored the ticket as solved."""
        while True:
            if self._dirty:  # a change arrived (perhaps while planning or firing): plan it first
                self._dirty = False
                await self._plan()
                continue
            self._rearm = False
            if self._planned_status == "solved":  # the last plan stored the ticket as solved
                return
            deadline = self._next_deadline()
            if deadline is not None and deadline[0] <= workflow.now():
                await self._fire(deadline[1], deadline[2])
                continue
            # Continue as new once the notifications in flight are done (they belong to this run); meanwhile
            # the timers keep firing.
            full = self._history_full()
            if full and self._webhooks_done() and workflow.all_handlers_finished():
                state = self.state()
                carried = TicketSlaCarry(
                    ticket=self._ticket,
                    status=self._status,
                    paused_since=self._paused_since,
                    pauses=self._pauses,
                    policy=self._policy,
                    clocks=state.metrics,
                    events=state.events,
                )
                workflow.continue_as_new(params.model_copy(update={"carried": carried}))
            timeout = None if deadline is None else deadline[0] - workflow.now()
            try:
                await workflow.wait_condition(self._waking(full), timeout=timeout)
            except TimeoutError:
                if self._dirty or self._rearm:  # a message in the timer's workflow task may move the clock
                    continue
                assert deadline is not None
                await self._fire(deadline[1], deadline[2])

    # ---- updates, signals and the query -----------------------------------------------------------------
    # `change` and `reply` are Updates: the validator refuses what cannot apply (the caller gets the error),
    # and the caller gets the state back once the change is planned (the new due times). The signals of the
    # same names are deprecated: runs begun before the Updates have them in their history, and a client of
    # the earlier version may still send them during a rolling deploy. They apply the same way, unanswered.

    @workflow.update(name="change")
    async def change(self, change: TicketChange) -> TicketSlaState:
        """The ticket's new priority, channel, tags or status; answers once planned (new due times)."""
        await self._until_planned(self._apply_change(change))
        return self.state()

    @change.validator
    def _validate_change(self, change: TicketChange) -> None:
        if not change.model_fields_set:  # e.g. only fields this version does not know
            raise ApplicationError("a change names nothing to change", type="InvalidInput")

    @workflow.update(name="reply")
    async def reply(self, reply: TicketReply) -> TicketSlaState:
        """A reply at `at` (clamped to now; default now); answers with the state once timed."""
        change = self._apply_reply(reply)
        if change is not None:
            await self._until_planned(change)
        return self.state()

    @reply.validator
    def _validate_reply(self, reply: TicketReply) -> None:
        created = self._ticket.created_at
        if reply.at is not None and reply.at < created:
            raise ApplicationError(
                f"reply at {reply.at.isoformat()} is before the ticket was created ({created.isoformat()})",
                type="InvalidInput",
                non_retryable=True,
            )

    @workflow.signal(name="change")
    def change_signal(self, change: TicketChange) -> None:
        """Deprecated: use the `change` Update. Kept for runs and clients of the earlier version."""
        self._apply_change(change)

    @workflow.signal(name="reply")
    def reply_signal(self, reply: TicketReply) -> None:
        """Deprecated: use the `reply` Update. Kept for runs and clients of the earlier version."""
        created = self._ticket.created_at
        if reply.at is not None and reply.at < created:
            reply = reply.model_copy(update={"at": created})
        self._apply_reply(reply)

    def _apply_change(self, change: TicketChange) -> int:
        """Apply a change; returns its number (an update waits until a plan covered it)."""
        update = {
            name: value
            for name, value in (
                ("priority", change.priority),
                ("channel", change.channel),
                ("tags", change.tags),
            )
            if value is not None
        }
        if update:
            self._ticket = self._ticket.model_copy(update=update)
        if change.status is not None and change.status != self._status:
            now = workflow.now()
            if self._paused_since is not None:
                self._pauses.append((self._paused_since, now))
                self._paused_since = None
            if change.status == "pending":
                self._paused_since = now
            self._status = change.status
        return self._replan()

    def _apply_reply(self, reply: TicketReply) -> int | None:
        """Apply a reply at `at` (never later than now: a reply is not in the future). An agent's reply
        fulfils the running reply clocks that started by then and re-arms the timers (None: nothing to
        plan); a customer's message after an agent's reply starts `next_reply`, which needs a plan."""
        now = workflow.now()
        at = now if reply.at is None else min(reply.at, now)
        if reply.by == "agent":
            replied: tuple[Metric, ...] = ("first_reply", "next_reply")
            for metric in replied:
                clock = self._clocks.get(metric)
                if clock is not None and clock.running() and clock.started_at <= at:
                    clock.fulfilled_at = at
            if self._table_timers():  # the plan removes the fulfilled clocks' timers
                return self._replan()
            if workflow.patched(AGENT_REPLY_SKIPS_PLAN):
                self._rearm = True
                return None
            return self._replan()
        waiting = self._clocks.get("next_reply")
        if not self._clocks["first_reply"].running() and (waiting is None or not waiting.running()):
            self._clocks["next_reply"] = _Clock(started_at=at)
        return self._replan()

    def _replan(self) -> int:
        self._dirty = True
        self._changes += 1
        return self._changes

    async def _until_planned(self, change: int) -> None:
        """Wait for the plan covering `change`; a refused plan fails the Update (the change itself is
        applied, and the ticket keeps its last due times until a plan succeeds)."""
        await workflow.wait_condition(lambda: self._planned_changes >= change)
        if self._plan_refusal is not None:
            raise ApplicationError(
                f"change applied, but the SLA plan was refused ({self._plan_refusal}); the ticket keeps "
                "its last due times until a later change plans again",
                type="PlanRefused",
            )

    @workflow.signal(name="membershipChanged")
    def membership_changed(self) -> None:
        """The contact entered or left a segment: select the policy again."""
        self._dirty = True

    @workflow.query(name="state")
    def state(self) -> TicketSlaState:
        return TicketSlaState(
            policy=self._policy,
            status=self._status,
            priority=self._ticket.priority,
            paused=self._paused_since is not None,
            metrics={
                metric: MetricState(
                    started_at=c.started_at,
                    due_at=c.due_at,
                    warn_at=c.warn_at,
                    business_minutes=c.business_minutes,
                    fulfilled_at=c.fulfilled_at,
                    warned=c.warned,
                    breached=c.breached,
                )
                for metric, c in self._clocks.items()
            },
            events=list(self._events),
        )

    # ---- steps --------------------------------------------------------------------------------------------

    async def _plan(self) -> None:
        running = {metric: c.started_at for metric, c in self._clocks.items() if c.running()}
        status = self._status
        covered = self._changes
        # A pause that ended before every running clock started moves no due time (and a clock started
        # later starts after it): drop it, so the plan's input stays small.
        earliest = min(running.values(), default=None)
        self._pauses = [p for p in self._pauses if earliest is not None and p[1] > earliest]
        table = self._table_timers()
        try:
            plan: PlanTicketSlaResult = await workflow.execute_local_activity(
                PLAN_TICKET_SLA,
                PlanTicketSlaInput(
                    ticket_id=self._params.ticket_id,
                    contact_key=self._params.contact_key,
                    ticket=self._ticket,
                    status=status,
                    starts=running,
                    pauses=self._pauses,
                    timers=table,
                    webhook_url=self._params.webhook_url if table else None,
                ),
                result_type=PlanTicketSlaResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_RETRY,
            )
        except (ActivityError, ApplicationError) as exc:  # refused for good (a bad stored policy): keep it
            workflow.logger.warning("SLA plan refused for %s", self._params.ticket_id, exc_info=True)
            cause = exc.cause if isinstance(exc, ActivityError) and exc.cause is not None else exc
            self._plan_refusal = str(cause)
            self._planned_status = status  # the next change plans again; solved still ends the workflow
            self._planned_changes = covered
            return
        self._policy = plan.policy
        self._planned_status = status
        if table:
            self._take_table_plan(plan, running, covered)
            return
        now = workflow.now()
        for metric in running:
            clock, due = self._clocks[metric], plan.targets.get(metric)
            if due is None:
                clock.due_at = clock.warn_at = clock.business_minutes = None
                continue
            if due.due_at != clock.due_at and clock.breached and due.due_at > now:
                clock.breached = False  # a later due time (another policy or priority): not breached yet
            if due.due_at != clock.due_at and not clock.breached:
                # A moved due time warns again, unless its warning moment has passed and one was given.
                clock.warned = clock.warned and due.warn_at <= now
            clock.due_at, clock.warn_at, clock.business_minutes = (
                due.due_at,
                due.warn_at,
                due.business_minutes,
            )
        self._planned_changes = covered
        self._plan_refusal = None
        self._index()

    def _take_table_plan(
        self, plan: PlanTicketSlaResult, running: dict[Metric, datetime], covered: int
    ) -> None:
        """Due times from the plan; warned/breached and the events as the plan read them back (a clock that
        is not running keeps its due time, and is marked by the events fired at it)."""
        fired = plan.fired or {}
        events = plan.events or []
        for metric, clock in self._clocks.items():
            if metric in running:
                continue
            clock.warned = clock.warned or any(
                e.metric == metric and e.kind == "warning" and e.due_at == clock.due_at for e in events
            )
            clock.breached = clock.breached or any(
                e.metric == metric and e.kind == "breach" and e.due_at == clock.due_at for e in events
            )
        for metric in running:
            clock, due = self._clocks[metric], plan.targets.get(metric)
            marks = fired.get(metric)
            clock.warned = marks is not None and marks.warned
            clock.breached = marks is not None and marks.breached
            if due is None:
                clock.due_at = clock.warn_at = clock.business_minutes = None
            else:
                clock.due_at, clock.warn_at, clock.business_minutes = (
                    due.due_at,
                    due.warn_at,
                    due.business_minutes,
                )
        if plan.events is not None:
            self._events = [f"{e.metric}:{e.kind}" for e in events]
        self._planned_changes = covered
        self._plan_refusal = None
        self._index()

    def _index(self) -> None:
        """Search attributes for the Web UI (`searchAttributes` on the input: registered on the namespace):
        the ticket id and contact key, the policy and the state, upserted when they change."""
        if not self._params.search_attributes:
            return
        indexed = (self._policy, self._status)
        if indexed == self._indexed:
            return
        updates = [
            SA_TICKET_ID.value_set(self._params.ticket_id),
            SA_TICKET_STATE.value_set(self._status),
            SA_SLA_POLICY.value_unset() if self._policy is None else SA_SLA_POLICY.value_set(self._policy),
        ]
        if self._params.contact_key is not None:
            updates.append(SA_CONTACT_KEY.value_set(self._params.contact_key))
        workflow.upsert_search_attributes(updates)
        self._indexed = indexed

    def _waking(self, full: bool) -> Callable[[], bool]:
        """What ends a wait besides a timer: a change, a fulfilled clock, or (history full) the
        notifications and update handlers finishing."""
        return lambda: (
            self._dirty
            or self._rearm
            or (full and self._webhooks_done() and workflow.all_handlers_finished())
        )

    def _webhooks_done(self) -> bool:
        return all(task.done() for task in self._webhooks)

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self._params.history_cap
        )

    def _next_deadline(self) -> tuple[datetime, Metric, Kind] | None:
        if self._paused_since is not None or self._policy is None or self._table_timers():
            return None
        found: list[tuple[datetime, int, Metric, Kind]] = []
        for metric, clock in self._clocks.items():
            deadline = clock.deadline()
            if deadline is not None:
                found.append((deadline[0], 0 if deadline[1] == "warning" else 1, metric, deadline[1]))
        if not found:
            return None
        at, _, metric, kind = min(found)
        return at, metric, kind

    async def _fire(self, metric: Metric, kind: Kind) -> None:
        clock = self._clocks[metric]
        due = clock.deadline()
        if (
            self._status == "solved"
            or self._dirty
            or self._policy is None
            or self._paused_since is not None
            or due is None
            or due[1] != kind
        ):
            return  # a signal in the same workflow task solved, changed, fulfilled, paused or moved it
        assert clock.due_at is not None  # a deadline implies a due time
        event = RecordSlaEventInput(
            ticket_id=self._params.ticket_id,
            contact_key=self._params.contact_key,
            policy=self._policy,
            metric=metric,
            kind=kind,
            due_at=clock.due_at,
            fired_at=workflow.now(),
        )
        segments: list[str] = []
        try:
            recorded: RecordSlaEventResult = await workflow.execute_local_activity(
                RECORD_SLA_EVENT,
                event,
                result_type=RecordSlaEventResult,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_RETRY,
            )
            segments = recorded.segments
        except (ActivityError, ApplicationError):
            # Refused for good (transient failures are retried): the moment still passed, so the clock is
            # marked and the webhook told (without segments); the ticket's timing goes on.
            workflow.logger.warning(
                "SLA event %s:%s not recorded for %s", metric, kind, self._params.ticket_id, exc_info=True
            )
        if kind == "warning":
            clock.warned = True
        else:
            clock.breached = True
        self._events.append(f"{metric}:{kind}")
        if self._params.webhook_url is not None:
            notice = PostSlaWebhookInput(url=self._params.webhook_url, event=event, segments=segments)
            self._webhooks = [task for task in self._webhooks if not task.done()]
            self._webhooks.append(asyncio.create_task(self._post(notice)))

    async def _post(self, params: PostSlaWebhookInput) -> None:
        try:
            await workflow.execute_activity(
                POST_SLA_WEBHOOK,
                params,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_WEBHOOK_RETRY,
            )
        except Exception:  # the event is recorded; a lost notification is only logged
            workflow.logger.warning("SLA webhook gave up for %s", params.event.ticket_id, exc_info=True)


@workflow.defn(name=FIRE_SLA_TIMERS)
class FireSlaTimers:
    """Fires the SLA timers of its share of `sla_timer` (slots with `slot % shards == shard`) in rounds: a
    round (`segmentflow.FireDueSlaTimers`, a local activity: one workflow task, no activity task) claims
    the due timers in batches, records their SLA events (their webhooks go to the outbox, posted by the
    worker's background deliverer) and answers when to wake next: the earliest timer of the share or
    webhook retry, at most `pollInterval` away. The firer sleeps on a durable timer until then, or until a
    plan that wrote an earlier timer signals `wake`. One round fires any number of timers, so a burst costs
    the server a workflow task per round, not per ticket. The table is the cursor: each batch commits its
    claims, so a failed round leaves nothing half-done. Continues as new after `roundsPerRun` rounds (or
    when the server suggests it)."""

    def __init__(self) -> None:
        self._woken = False

    @workflow.signal(name="wake")
    def wake(self) -> None:
        """A plan wrote a timer earlier than this firer's wake-up."""
        self._woken = True

    @workflow.run
    async def run(self, params: FireSlaTimersInput) -> None:
        firer_id = workflow.info().workflow_id
        for _ in range(params.rounds_per_run):
            self._woken = False
            try:
                result: FireDueSlaTimersResult = await workflow.execute_local_activity(
                    FIRE_DUE_SLA_TIMERS,
                    FireDueSlaTimersInput(
                        firer_id=firer_id,
                        shard=params.shard,
                        shards=params.shards,
                        now=workflow.now(),
                        batch=params.batch,
                        poll_interval=params.poll_interval,
                    ),
                    result_type=FireDueSlaTimersResult,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=_ROUND_RETRY,
                )
                wake_at = result.wake_at
            except ActivityError:  # the database is down, say: try again after a poll interval
                workflow.logger.warning("SLA firing round failed; retrying later", exc_info=True)
                wake_at = workflow.now() + params.poll_interval
            wait = wake_at - workflow.now()
            if wait > timedelta(0) and not self._woken:
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(lambda: self._woken, timeout=wait)
            if workflow.info().is_continue_as_new_suggested():
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(params)


@workflow.defn(name=WATCH_SLA_MEMBERSHIP_CHANGES)
class WatchSlaMembershipChanges:
    """Polls the membership change feed after its cursor; the `DispatchSlaMembershipChanges` activity
    signals `membershipChanged` to the open tickets of every contact that entered or left a segment a
    policy names. The cursor is stored in the database under the watcher's workflow id and advanced by the
    activity, so a watcher that failed or was terminated resumes where it was when started again (a
    retried dispatch signals again, which only makes a ticket select its policy once more)."""

    @workflow.run
    async def run(self, params: WatchSlaChangesInput) -> None:
        after = params.after
        watch_id = workflow.info().workflow_id
        for _ in range(params.polls_per_run):
            try:
                result: DispatchSlaChangesResult = await workflow.execute_activity(
                    DISPATCH_SLA_MEMBERSHIP_CHANGES,
                    DispatchSlaChangesInput(watch_id=watch_id, after=after, limit=params.batch),
                    result_type=DispatchSlaChangesResult,
                    start_to_close_timeout=timedelta(minutes=5),
                    # It heartbeats its progress: a dead worker's dispatch resumes elsewhere in seconds.
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=_RETRY,
                )
            except ActivityError:
                # Refused for good (a stored policy that no longer loads): the watcher keeps watching,
                # and tries again after a poll interval, instead of stopping until the next restart.
                workflow.logger.warning("SLA membership dispatch failed; retrying later", exc_info=True)
                await workflow.sleep(params.poll_interval)
                continue
            after = result.next_after
            if result.changes < params.batch:
                await workflow.sleep(params.poll_interval)
        workflow.continue_as_new(params.model_copy(update={"after": after}))
