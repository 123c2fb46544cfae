"""SLA activities: policy selection, a ticket's due times (and its timers), SLA events, firing due timers, the
webhook and the change-feed dispatch. Each opens a session (in a worker thread), calls a service and returns
a `...Result`; the webhook goes through one shared `httpx.AsyncClient`. Invalid input becomes a
non-retryable `ApplicationError`; database errors and 5xx answers propagate so Temporal retries them.

Webhooks of timers fired from the table are posted by one background task per worker process (`_deliver`),
which a firing round starts or nudges and never waits for: it claims due tries from the outbox with a lease,
posts at most `WEBHOOK_CONCURRENCY` at once and settles each, so a slow endpoint never delays a firing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal, TypeVar

import httpx
from segmentflow.activities._clients import HttpClients
from segmentflow.activities._heartbeat import heartbeating
from segmentflow.workflows.sla_models import (
    DISPATCH_SLA_MEMBERSHIP_CHANGES,
    FIRE_DUE_SLA_TIMERS,
    FIRE_SLA_TIMERS,
    PLAN_TICKET_SLA,
    POST_SLA_WEBHOOK,
    RECORD_SLA_EVENT,
    SELECT_SLA_POLICY,
    DispatchSlaChangesInput,
    DispatchSlaChangesResult,
    FiredEvent,
    FiredMarks,
    FireDueSlaTimersInput,
    FireDueSlaTimersResult,
    FireSlaTimersInput,
    PlanTicketSlaInput,
    PlanTicketSlaResult,
    PostSlaWebhookInput,
    RecordSlaEventInput,
    RecordSlaEventResult,
    SelectSlaPolicyInput,
    SelectSlaPolicyResult,
    SlaDue,
    firer_workflow_id,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from sqlmodel import Session
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from segmentflow.policies.egress import redact_url
from segmentflow.services.delivery import post_webhook, webhook_client
from segmentflow.services.sla import (
    PlannedTicket,
    advance_watch_cursor,
    plan_ticket,
    record_event,
    record_webhook_failure,
    select_for_contact,
    selection_result,
    ticket_facts,
    tickets_to_signal,
)
from segmentflow.services.sla_timers import (
    FiredTimer,
    Outgoing,
    claim_webhooks,
    fire_due,
    firer_slots,
    firers_to_wake,
    firers_woken,
    next_fire_at,
    next_webhook_at,
    settle_webhook,
    store_firer,
    timer_slot,
)
from segmentflow.settings import Settings

__all__ = ["LINGER_S", "ROUND_BUDGET_S", "SIGNAL_CONCURRENCY", "WEBHOOK_CONCURRENCY", "SlaActivities"]

#: Webhook POSTs in flight at once per worker process, and tries claimed per outbox read.
WEBHOOK_CONCURRENCY = 16
#: How long a claimed webhook try is held before another worker may take it over.
WEBHOOK_LEASE = timedelta(minutes=2)
#: A firing round stops claiming after this many seconds (the firer runs another at once): a local
#: activity stays well inside its workflow task's timeout.
ROUND_BUDGET_S = 4.0
#: A round that has fired everything due waits in place for a timer due within this many seconds.
LINGER_S = 1.0

#: Signals the watcher has in flight at once, and contacts per heartbeated group.
SIGNAL_CONCURRENCY = 32
#: Server answers worth a retry of the dispatch (any other refusal of one ticket's signal is logged and
#: skipped, so it cannot stop the watcher).
_TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.CANCELLED,
    }
)

T = TypeVar("T")


class SlaActivities:
    """SLA work over one database engine and one HTTP client: `http` when given (its owner closes it),
    else one made on first use, closed by `aclose` and made again by the next webhook."""

    def __init__(
        self, engine: Engine, *, settings: Settings | None = None, http: httpx.AsyncClient | None = None
    ) -> None:
        settings = settings or Settings()
        self._engine = engine
        self._given = http
        self._clients = HttpClients()
        self._egress = settings.egress_policy()
        self._timeout = settings.http_timeout
        self._max_body = settings.max_response_bytes
        self._deliverer: asyncio.Task[None] | None = None
        self._deliver_again = False
        self._deliver_clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _in_transaction(self, work: Callable[[Session], T]) -> T:
        with Session(self._engine) as session, session.begin():
            return work(session)

    async def _run(self, work: Callable[[Session], T]) -> T:
        try:
            return await asyncio.to_thread(self._in_transaction, work)
        except ValueError as exc:  # a stored policy that no longer loads, a due time past the year 9999
            raise ApplicationError(str(exc), type="InvalidInput", non_retryable=True) from None
        except DataError as exc:  # a value the database refuses (too long, NUL): retrying cannot help
            message = f"the database refused a value: {exc.orig}"
            raise ApplicationError(message, type="InvalidInput", non_retryable=True) from None

    @activity.defn(name=SELECT_SLA_POLICY)
    async def select_sla_policy(self, params: SelectSlaPolicyInput) -> SelectSlaPolicyResult:
        facts = ticket_facts(params.ticket)
        chosen = await self._run(
            lambda s: select_for_contact(session=s, contact_key=params.contact_key, ticket=facts)
        )
        return selection_result(chosen)

    @activity.defn(name=PLAN_TICKET_SLA)
    async def plan_ticket_sla(self, params: PlanTicketSlaInput) -> PlanTicketSlaResult:
        """Select, compute the due times and store the ticket; with `timers`, replace its pending timers
        and wake (or start) the firer of its slot when a timer is earlier than that firer's wake-up."""
        info = activity.info()
        facts = ticket_facts(params.ticket)

        def plan(s: Session) -> tuple[PlannedTicket, tuple[list[str], bool], datetime | None]:
            planned = plan_ticket(
                session=s,
                ticket_id=params.ticket_id,
                workflow_id=info.workflow_id or "",
                contact_key=params.contact_key,
                ticket=facts,
                status=params.status,
                starts=params.starts,
                pauses=params.pauses,
                now=info.current_attempt_scheduled_time,
                timers=params.timers,
                webhook_url=params.webhook_url,
            )
            earliest = None if planned.timers is None else planned.timers.earliest
            if earliest is None:
                return planned, ([], True), None
            slot = timer_slot(params.ticket_id)
            return planned, firers_to_wake(session=s, slot=slot, fire_at=earliest), earliest

        planned, (late, covered), earliest = await self._run(plan)
        if params.timers and earliest is not None and (late or not covered):
            # After the commit (a firer woken earlier would not see the timer); a failed signal fails the
            # attempt, and the retry plans and wakes again.
            await self._wake_firers(late, covered, info.task_queue)
            await self._run(lambda s: firers_woken(session=s, firer_ids=late, fire_at=earliest))
        return PlanTicketSlaResult(
            policy=None if planned.policy is None else planned.policy.key,
            targets={
                metric: SlaDue(due_at=d.due_at, warn_at=d.warn_at, business_minutes=d.business_minutes)
                for metric, d in planned.targets.items()
            },
            fired=None
            if planned.timers is None
            else {m: FiredMarks(warned=w, breached=b) for m, (w, b) in planned.timers.marks.items()},
            events=None
            if planned.events is None
            else [FiredEvent(metric=m, kind=k, due_at=d) for m, k, d in planned.events],
        )

    async def _wake_firers(self, late: list[str], covered: bool, task_queue: str) -> None:
        """Signal `wake` to the firers sleeping past a new timer, starting any that is not running; with no
        firer covering the slot, start (or wake) the task queue's default one (share 0 of 1)."""
        client = activity.client()
        targets = [(firer, _share(firer)) for firer in late]
        if not covered:
            targets.append((firer_workflow_id(task_queue), (0, 1)))
        for firer, (shard, shards) in targets:
            await client.start_workflow(
                FIRE_SLA_TIMERS,
                FireSlaTimersInput(shard=shard, shards=shards),
                id=firer,
                task_queue=task_queue,
                start_signal="wake",
            )

    @activity.defn(name=FIRE_DUE_SLA_TIMERS)
    async def fire_due_sla_timers(self, params: FireDueSlaTimersInput) -> FireDueSlaTimersResult:
        """One firing round (a local activity of `segmentflow.FireSlaTimers`): claim and record the due
        timers of the firer's share in batches until none is due within `LINGER_S` (waiting in place for
        one that is) or `ROUND_BUDGET_S` passed, start the
        webhook deliverer when a try is due, store and return when the firer should wake next. The round's
        clock is the firer's (workflow time) moved on by the time the round has taken, or the wall clock
        when that is later; each batch's events are fired at the moment it is claimed."""
        begun = time.monotonic()

        def clock() -> datetime:
            return max(params.now + timedelta(seconds=time.monotonic() - begun), datetime.now(UTC))

        slots = firer_slots(params.shard, params.shards)

        def claim(s: Session) -> list[FiredTimer]:
            now = clock()
            return fire_due(session=s, slots=slots, now=now, fired_at=now, limit=params.batch)

        fired = 0
        while time.monotonic() - begun < ROUND_BUDGET_S:
            batch = await self._run(claim)
            fired += len(batch)
            if len(batch) == params.batch:
                continue
            # Drained: a timer due within `LINGER_S` is waited for here rather than on a workflow timer
            # (a workflow task, and the server's timers fire up to a second late).
            upcoming = await self._run(lambda s: next_fire_at(session=s, slots=slots))
            ahead = None if upcoming is None else (upcoming - clock()).total_seconds()
            if ahead is None or ahead > LINGER_S:
                break
            await asyncio.sleep(max(ahead, 0.0))

        def next_wake(s: Session) -> tuple[datetime, datetime | None]:
            now = clock()
            upcoming = [at for at in (next_fire_at(session=s, slots=slots), next_webhook_at(session=s)) if at]
            wake_at = min([*upcoming, now + params.poll_interval])
            store_firer(
                session=s,
                firer_id=params.firer_id,
                shard=params.shard,
                shards=params.shards,
                wake_at=wake_at,
                now=now,
            )
            return wake_at, next_webhook_at(session=s)

        wake_at, webhook_at = await self._run(next_wake)
        if webhook_at is not None and webhook_at <= clock():
            self._start_deliverer(clock)
        return FireDueSlaTimersResult(fired=fired, wake_at=wake_at)

    # ---- the webhook deliverer ----------------------------------------------------------------------------

    def _start_deliverer(self, clock: Callable[[], datetime]) -> None:
        self._deliver_clock = clock
        if self._deliverer is None or self._deliverer.done():
            self._deliverer = asyncio.create_task(self._deliver())
        else:
            self._deliver_again = True

    async def _deliver(self) -> None:
        """Post the due webhook tries until the outbox has none due and none is in flight, at most
        `WEBHOOK_CONCURRENCY` at once: a free place is filled from the outbox at once, so a hanging
        endpoint holds one place, not the others (a failure is logged; the next round starts it again)."""
        flying: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._deliver_again = False
                free = WEBHOOK_CONCURRENCY - len(flying)
                claimed = []
                if free > 0:
                    claimed = await self._run(partial(self._claim_webhooks, limit=free))
                flying |= {asyncio.create_task(self._deliver_one(item)) for item in claimed}
                if not flying:
                    if self._deliver_again:
                        continue
                    return
                if len(claimed) == free and free > 0:
                    continue  # the outbox may hold more: fill the places as they free up
                done, flying = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        except Exception:
            activity.logger.warning("SLA webhook deliverer stopped; the next round starts it", exc_info=True)
        finally:
            for task in flying:
                task.cancel()

    def _claim_webhooks(self, session: Session, *, limit: int) -> list[Outgoing]:
        return claim_webhooks(session=session, now=self._deliver_clock(), lease=WEBHOOK_LEASE, limit=limit)

    async def _deliver_one(self, item: Outgoing) -> None:
        event = RecordSlaEventInput(
            ticket_id=item.ticket_id,
            contact_key=item.contact_key,
            policy=item.policy_key,
            metric=item.metric,
            kind=item.kind,
            due_at=item.due_at,
            fired_at=item.fired_at,
        )
        try:
            outcome, reason, _ = await self._send(item.url, event, list(item.segments or []))
        except Exception as exc:  # a transport error: try again after the backoff
            outcome, reason = "retry", f"webhook {redact_url(item.url)}: {type(exc).__name__}: {exc}"
        await self._run(
            lambda s: settle_webhook(
                session=s,
                event_id=item.event_id,
                attempt=item.attempt,
                outcome=outcome,
                reason=reason,
                now=self._deliver_clock(),
            )
        )

    async def _send(
        self, url: str, event: RecordSlaEventInput, segments: list[str]
    ) -> tuple[Literal["sent", "failed", "retry"], str | None, bool]:
        """POST one SLA event (see `post_sla_webhook` for the body and key): sent, failed for good (an
        egress refusal, a redirect, a 4xx other than 408/425/429, with the reason) or to retry; and
        whether the egress policy refused it."""
        http = self._given or self._clients.get(
            lambda: webhook_client(policy=self._egress, timeout=self._timeout, max_body=self._max_body)
        )
        body = event.model_dump(mode="json", by_alias=True, exclude={"kind"})
        body = {"event": f"sla.{event.kind}", **body, "segments": segments}
        key = f"{event.ticket_id}:{event.metric}:{event.kind}:{body['dueAt']}"
        sent = await post_webhook(
            http, url=url, payload=body, idempotency_key=key, attempts=1, max_body=self._max_body
        )
        shown = redact_url(url)
        if sent.outcome == "failed":
            reason = f"webhook {shown}: " + (
                sent.response or ""
                if sent.status_code is None
                else f"HTTP {sent.status_code}: {sent.response}"
            )
            return "failed", reason, (sent.response or "").startswith("egress refused")
        if sent.outcome == "retry":
            return "retry", f"webhook {shown}: {sent.status_code or sent.response}", False
        return "sent", None, False

    @activity.defn(name=RECORD_SLA_EVENT)
    async def record_sla_event(self, params: RecordSlaEventInput) -> RecordSlaEventResult:
        segments = await self._run(
            lambda s: record_event(
                session=s,
                ticket_id=params.ticket_id,
                contact_key=params.contact_key,
                policy_key=params.policy,
                metric=params.metric,
                kind=params.kind,
                due_at=params.due_at,
                fired_at=params.fired_at,
            )
        )
        return RecordSlaEventResult(segments=segments)

    @activity.defn(name=POST_SLA_WEBHOOK)
    async def post_sla_webhook(self, params: PostSlaWebhookInput) -> None:
        """POST `{"event": "sla.warning"|"sla.breach", "ticketId", "contactKey", "policy", "metric", "dueAt",
        "firedAt", "segments"}` with the `Idempotency-Key` `ticket:metric:kind:dueAt` (the same on every
        try) through the webhook channel's helper: a 4xx other than 408, 425 and 429, a 3xx (never
        followed) and an egress refusal are final (`WebhookRejected` / `EgressRefused`, the reason kept on
        the SLA event); 5xx, those and transport errors are retried by Temporal."""
        event = params.event
        outcome, reason, refused = await self._send(params.url, event, params.segments)
        if outcome == "failed":
            # Egress refusal (no status), redirect or 4xx: kept on the event, never retried.
            await self._run(
                lambda s: record_webhook_failure(
                    session=s,
                    ticket_id=event.ticket_id,
                    metric=event.metric,
                    kind=event.kind,
                    due_at=event.due_at,
                    reason=reason or "",
                )
            )
            kind = "EgressRefused" if refused else "WebhookRejected"
            raise ApplicationError(reason or "", type=kind, non_retryable=True)
        if outcome == "retry":
            raise ApplicationError(reason or "", type="WebhookRetry")

    @activity.defn(name=DISPATCH_SLA_MEMBERSHIP_CHANGES)
    async def dispatch_sla_membership_changes(
        self, params: DispatchSlaChangesInput
    ) -> DispatchSlaChangesResult:
        """Signal `membershipChanged` to the open tickets of contacts with changes after the watcher's
        stored cursor, in segments some stored policy names (other changes cannot move a ticket), then
        advance the cursor. A new watcher starts at `after` (None: the feed's current end), signalling
        nothing.

        Contacts are taken in change-feed order, in groups of `SIGNAL_CONCURRENCY`, with at most that many
        signals in flight; after each group the feed position every earlier contact is done up to is
        heartbeated, so a retry (a dead worker, a server hiccup) carries on from there rather than from the
        start of the batch. A ticket whose
        workflow has finished is skipped; one the server refuses for good (a value it will never take) is
        logged and counted in `failed`, and the others still get their signal; a transient server error
        fails the attempt, to be retried. A retry signals a group again at most, which only makes those
        tickets select their policy once more."""
        info = activity.info()
        now = info.current_attempt_scheduled_time
        resumed = info.heartbeat_details[0] if info.heartbeat_details else None

        found = await self._run(
            lambda s: tickets_to_signal(
                session=s, watch_id=params.watch_id, start=params.after, limit=params.limit, now=now
            )
        )
        cursor, count, contacts = found.cursor, found.changes, found.contacts
        if isinstance(resumed, int):  # a retry: what the last attempt finished is done
            contacts = [item for item in contacts if item[0] > resumed]
        client = activity.client()
        signalled = failed = 0
        gate = asyncio.Semaphore(SIGNAL_CONCURRENCY)  # a contact may have many open tickets

        async def signal(contact: str, workflow_id: str) -> None:
            nonlocal signalled, failed
            handle: WorkflowHandle[object, object] = client.get_workflow_handle(workflow_id)
            try:
                async with gate:
                    await handle.signal("membershipChanged")
                signalled += 1
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # a finished workflow: nothing to move
                    return
                if exc.status in _TRANSIENT:
                    raise
                failed += 1
                activity.logger.warning(
                    "membershipChanged to %s (contact %s) refused: %s %s",
                    workflow_id,
                    contact,
                    exc.status.name,
                    exc.message,
                )

        async with heartbeating():
            for start in range(0, len(contacts), SIGNAL_CONCURRENCY):
                group = contacts[start : start + SIGNAL_CONCURRENCY]
                await asyncio.gather(*(signal(c, w) for _seq, c, ids in group for w in ids))
                activity.heartbeat(group[-1][0])
        await self._run(
            lambda s: advance_watch_cursor(session=s, watch_id=params.watch_id, cursor=cursor, now=now)
        )
        return DispatchSlaChangesResult(next_after=cursor, changes=count, signalled=signalled, failed=failed)

    async def aclose(self) -> None:
        if self._deliverer is not None and not self._deliverer.done():
            self._deliverer.cancel()  # its claimed tries are taken over once their lease runs out
            await asyncio.gather(self._deliverer, return_exceptions=True)
        await self._clients.aclose()

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [
            self.select_sla_policy,
            self.plan_ticket_sla,
            self.record_sla_event,
            self.post_sla_webhook,
            self.fire_due_sla_timers,
            self.dispatch_sla_membership_changes,
        ]


def _share(firer_id: str) -> tuple[int, int]:
    """(shard, shards) of a firer id made by `firer_workflow_id` (`...-{shard}-of-{shards}`)."""
    head, shards = firer_id.rsplit("-of-", 1)
    return int(head.rsplit("-", 1)[1]), int(shards)
