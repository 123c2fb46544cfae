"""SLA activities: policy selection, a ticket's due times, SLA events, the webhook and the change-feed
dispatch. Each opens a session (in a worker thread), calls a service and returns a `...Result`; the webhook
goes through one shared `httpx.AsyncClient`. Invalid input becomes a non-retryable `ApplicationError`;
database errors and 5xx answers propagate so Temporal retries them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import httpx
from segmentflow.activities._clients import HttpClients
from segmentflow.activities._heartbeat import heartbeating
from segmentflow.workflows.sla_models import (
    DISPATCH_SLA_MEMBERSHIP_CHANGES,
    PLAN_TICKET_SLA,
    POST_SLA_WEBHOOK,
    RECORD_SLA_EVENT,
    SELECT_SLA_POLICY,
    DispatchSlaChangesInput,
    DispatchSlaChangesResult,
    PlanTicketSlaInput,
    PlanTicketSlaResult,
    PostSlaWebhookInput,
    RecordSlaEventInput,
    RecordSlaEventResult,
    SelectSlaPolicyInput,
    SelectSlaPolicyResult,
    SlaDue,
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
    advance_watch_cursor,
    plan_ticket,
    record_event,
    record_webhook_failure,
    select_for_contact,
    selection_result,
    ticket_facts,
    tickets_to_signal,
)
from segmentflow.settings import Settings

__all__ = ["SIGNAL_CONCURRENCY", "SlaActivities"]

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
        info = activity.info()
        facts = ticket_facts(params.ticket)
        planned = await self._run(
            lambda s: plan_ticket(
                session=s,
                ticket_id=params.ticket_id,
                workflow_id=info.workflow_id or "",
                contact_key=params.contact_key,
                ticket=facts,
                status=params.status,
                starts=params.starts,
                pauses=params.pauses,
                now=info.current_attempt_scheduled_time,
            )
        )
        return PlanTicketSlaResult(
            policy=None if planned.policy is None else planned.policy.key,
            targets={
                metric: SlaDue(due_at=d.due_at, warn_at=d.warn_at, business_minutes=d.business_minutes)
                for metric, d in planned.targets.items()
            },
        )

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
        http = self._given or self._clients.get(
            lambda: webhook_client(policy=self._egress, timeout=self._timeout, max_body=self._max_body)
        )
        event = params.event
        body = event.model_dump(mode="json", by_alias=True, exclude={"kind"})
        body = {"event": f"sla.{event.kind}", **body, "segments": params.segments}
        key = f"{event.ticket_id}:{event.metric}:{event.kind}:{body['dueAt']}"
        sent = await post_webhook(
            http,
            url=params.url,
            payload=body,
            idempotency_key=key,
            attempts=1,
            max_body=self._max_body,
        )
        shown = redact_url(params.url)
        if sent.outcome == "failed":
            # Egress refusal (no status), redirect or 4xx: kept on the event, never retried.
            reason = f"webhook {shown}: " + (
                sent.response or ""
                if sent.status_code is None
                else f"HTTP {sent.status_code}: {sent.response}"
            )
            await self._run(
                lambda s: record_webhook_failure(
                    session=s,
                    ticket_id=event.ticket_id,
                    metric=event.metric,
                    kind=event.kind,
                    due_at=event.due_at,
                    reason=reason,
                )
            )
            refused = (sent.response or "").startswith("egress refused")
            kind = "EgressRefused" if refused else "WebhookRejected"
            raise ApplicationError(reason, type=kind, non_retryable=True)
        if sent.outcome == "retry":
            raise ApplicationError(
                f"webhook {shown}: {sent.status_code or sent.response}", type="WebhookRetry"
            )

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
        await self._clients.aclose()

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [
            self.select_sla_policy,
            self.plan_ticket_sla,
            self.record_sla_event,
            self.post_sla_webhook,
            self.dispatch_sla_membership_changes,
        ]
