"""The outbound-sequence activity: one round of a sequence (change feed, then due sends in batches).

Database work runs in worker threads, one transaction per step: a claim (enrollments leased in one
transaction, templates rendered with none open, pending send rows committed in a second before any provider
call), the provider calls (concurrent, paced by the sequence's rate limit), then the record of what was
delivered, made while the next batch's calls are on the wire (unpaced, just before the claim that follows, so
a claim finds every batch before the one in flight recorded). The round heartbeats all along (a background
beat every few seconds, with progress after every batch), so a killed worker's round is retried elsewhere
within the heartbeat timeout (10 s by default). Claims lease their enrollments to the round (workflow id, run
id, activity id): the retried attempt first takes back what its dead predecessor had claimed, and re-sends
only those pending rows, with their same keys; another round's leases are left alone until they run out
(`lease`). A batch's provider calls are cut at half the lease (the unfinished ones are recorded as retries),
so no claim can take a row whose send is still in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

import httpx
from segmentflow.activities._clients import HttpClients
from segmentflow.activities._heartbeat import HEARTBEAT_EVERY, heartbeating
from segmentflow.workflows.sequence_models import (
    PROCESS_SEQUENCE,
    ProcessSequenceInput,
    ProcessSequenceResult,
    SequenceCounts,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from segmentflow.policies.egress import address_refusal, literal_address
from segmentflow.services.delivery import Delivery, SmtpServer, post_webhook, send_email, webhook_client
from segmentflow.services.sequences import (
    ClaimResult,
    CompiledSequence,
    Outgoing,
    ProgramCache,
    UnknownSequenceError,
    claim_and_render,
    next_due_at,
    record_deliveries,
    release_leases,
    sync_enrollments,
)
from segmentflow.settings import Settings

__all__ = ["SequenceActivities"]

T = TypeVar("T")


def _lease_owner() -> str:
    """The round's identity as the owner of its leases: the same for every attempt of this activity."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"


def _record(
    session: Session, *, sequence: CompiledSequence, results: list[tuple[Outgoing, Delivery]], now: datetime
) -> dict[str, int]:
    return record_deliveries(session=session, sequence=sequence, results=results, now=now)


#: Under a rate limit a batch holds about this many seconds of sends, so the membership read at its claim
#: (exit on leave) is at most that old when the last of its messages goes out.
_PACED_BATCH_SECONDS = 1.0


class _Pacer:
    """Start times spaced 1/rate apart: a rate limit in messages per second (None: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self._gap = 0.0 if rate is None else 1.0 / rate
        self._next = time.monotonic()

    @property
    def paced(self) -> bool:
        return bool(self._gap)

    async def wait(self) -> None:
        if not self._gap:
            return
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._gap
        while slot > now:  # a slow rate must not starve the heartbeat
            await asyncio.sleep(min(slot - now, HEARTBEAT_EVERY))
            activity.heartbeat()
            now = time.monotonic()


class SequenceActivities:
    """Sequence rounds over one database engine and one pooled HTTP client."""

    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        settings = settings or Settings()
        self._engine = engine
        self._programs = ProgramCache()
        self._template_limits = settings.template_limits()
        self._http_timeout = settings.http_timeout
        self._egress = settings.egress_policy()
        self._max_body = settings.max_response_bytes
        if settings.smtp_host is not None:  # a literally refused host stops the worker, naming the setting
            address = literal_address(settings.smtp_host)
            refusal = (
                None if address is None else address_refusal(address, self._egress, host=settings.smtp_host)
            )
            if refusal is not None:
                raise ValueError(f"SEGMENTFLOW_SMTP_HOST: {refusal}")
        self._smtp = (
            None
            if settings.smtp_host is None
            else SmtpServer(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_sender,
                username=settings.smtp_username,
                password=settings.smtp_password,
                start_tls=settings.smtp_start_tls,
                timeout=settings.http_timeout,
                policy=self._egress,
            )
        )
        self._clients = HttpClients()

    def _client(self, concurrency: int) -> httpx.AsyncClient:
        return self._clients.get(
            lambda: webhook_client(
                policy=self._egress,
                max_connections=concurrency,
                timeout=self._http_timeout,
                max_body=self._max_body,
            )
        )

    def _in_transaction(self, work: Callable[[Session], T]) -> T:
        with Session(self._engine) as session, session.begin():
            return work(session)

    async def _run(self, work: Callable[[Session], T]) -> T:
        try:
            return await asyncio.to_thread(self._in_transaction, work)
        except UnknownSequenceError as exc:
            raise ApplicationError(str(exc), type="SequenceNotFound", non_retryable=True) from None

    async def _claim(
        self,
        *,
        sequence: CompiledSequence,
        now: datetime,
        limit: int,
        lease: timedelta,
        owner: str,
        exclude: Sequence[int] = (),
    ) -> ClaimResult:
        """Claim a batch for the round `owner`: lease in one transaction, render with none open, write the
        send rows in a second (`claim_and_render`)."""
        return await asyncio.to_thread(
            claim_and_render,
            self._in_transaction,
            sequence=sequence,
            now=now,
            limit=limit,
            exclude=exclude,
            lease=lease,
            owner=owner,
            limits=self._template_limits,
        )

    async def _deliver(
        self,
        outgoing: list[Outgoing],
        client: httpx.AsyncClient,
        pacers: dict[str, _Pacer],
        concurrency: int,
        cut_after: float,
    ) -> list[tuple[Outgoing, Delivery]]:
        """Each item's delivery; one that raises, or is still in flight after `cut_after` seconds, is a
        `retry` (its row stays pending and goes out again with the same key)."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: Outgoing) -> Delivery:
            async with gate:
                pacer = pacers[item.channel]
                await pacer.wait()
                try:
                    return await self._send(item, client, paced=pacer.paced)
                except Exception as exc:  # one bad send must not sink the batch
                    return Delivery("retry", None, f"{type(exc).__name__}: {exc}"[:2000])

        tasks = [asyncio.create_task(one(item)) for item in outgoing]
        if tasks:
            _, unfinished = await asyncio.wait(tasks, timeout=cut_after)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        return [
            (
                item,
                task.result()
                if not task.cancelled()
                else Delivery("retry", None, f"not delivered within {cut_after:g} s (half the lease)"),
            )
            for item, task in zip(outgoing, tasks, strict=True)
        ]

    async def _send(self, item: Outgoing, client: httpx.AsyncClient, *, paced: bool = False) -> Delivery:
        """`paced`: the channel has a rate limit, so no in-request retry of a response goes around it
        (a transient status comes back as `retry` and is rescheduled)."""
        if item.channel == "email":
            p = item.payload
            return await send_email(
                self._smtp,
                to=p["to"],
                subject=p["subject"],
                body=p["body"],
                idempotency_key=item.idempotency_key,
                attempts=1 if paced else 3,
            )
        assert item.url is not None
        return await post_webhook(
            client,
            url=item.url,
            payload=item.payload,
            idempotency_key=item.idempotency_key,
            retry_status=not paced,
            max_body=self._max_body,
        )

    @activity.defn(name=PROCESS_SEQUENCE)
    async def process_sequence(self, params: ProcessSequenceInput) -> ProcessSequenceResult:
        async with heartbeating():
            return await self._round(params, owner=_lease_owner())

    async def _round(self, params: ProcessSequenceInput, *, owner: str) -> ProcessSequenceResult:
        key = params.sequence_key
        lease = params.lease
        cut_after = lease.total_seconds() / 2

        def clock() -> datetime:  # never behind the workflow's clock (a time-skipping server runs ahead)
            return max(params.now, datetime.now(UTC))

        counts = SequenceCounts()
        while True:
            synced = await self._run(lambda s: sync_enrollments(session=s, key=key, now=clock()))
            counts = counts.plus(SequenceCounts(entered=synced.entered, exited=synced.exited))
            if not synced.more:
                break
        sequence: CompiledSequence = await self._run(lambda s: self._programs.get(session=s, key=key))
        if sequence.status != "active":
            return ProcessSequenceResult(status=sequence.status, counts=counts, next_due_at=None, more=False)
        if activity.info().attempt > 1:  # what a dead attempt of this round claimed is due again now
            released = await self._run(
                lambda s: release_leases(session=s, sequence_id=sequence.id, owner=owner, now=clock())
            )
            if released:
                activity.logger.info("took back %d enrollments from the previous attempt", released)
        rates = sequence.definition.rate_limit or {}
        pacers = {channel: _Pacer(rates.get(channel)) for channel in ("webhook", "email")}
        client = self._client(params.concurrency)
        more = False
        deadline = time.monotonic() + params.round_time.total_seconds()
        # Under a rate limit a batch takes size/rate seconds: keep it to about a second of sends, so the
        # membership read at its claim is fresh when its last message goes out (exit on leave).
        limit = params.batch_size
        if rates:
            limit = min(limit, max(1, int(min(rates.values()) * _PACED_BATCH_SECONDS)))
        now = clock()
        claim = await self._claim(sequence=sequence, now=now, limit=limit, lease=lease, owner=owner)
        batch = 0
        # A batch delivered but not yet recorded: its record overlaps the next batch's sends.
        unrecorded: tuple[ClaimResult, list[tuple[Outgoing, Delivery]], datetime] | None = None

        async def record(done: tuple[ClaimResult, list[tuple[Outgoing, Delivery]], datetime]) -> None:
            nonlocal counts
            claimed, results, at = done
            recorded = await self._run(partial(_record, sequence=sequence, results=results, now=at))
            counts = counts.plus(
                SequenceCounts(
                    exited=claimed.exited,
                    failed=claimed.failed + recorded["failed"],
                    sent=recorded["sent"],
                    retried=recorded["retry"],
                    deferred=claimed.deferred,
                    completed=claimed.completed,
                )
            )
            activity.heartbeat(batch, counts.sent)

        async def record_then_claim(
            previous: tuple[ClaimResult, list[tuple[Outgoing, Delivery]], datetime] | None,
            at: datetime | None,
            in_flight: list[int],
        ) -> ClaimResult | None:
            if previous is not None:
                await record(previous)
            if at is None:
                return None
            return await self._claim(
                sequence=sequence, now=at, limit=limit, lease=lease, owner=owner, exclude=in_flight
            )

        while claim.claimed:
            # While this batch is on the wire the previous one is recorded and, unpaced, the next one is
            # claimed (this one's enrollments are leased and left out), so the database and the provider
            # work at the same time. Paced, the next claim waits for this batch: its membership reads are
            # then at most one batch (about a second of sends) old when its messages go out.
            last = batch == params.max_batches - 1 or time.monotonic() > deadline
            next_now = clock()
            # A task group, not `gather`: if the record or the claim fails, this batch's sends are cancelled
            # with the attempt instead of going on unobserved (the retry re-sends them with the same keys).
            try:
                async with asyncio.TaskGroup() as group:
                    delivering = group.create_task(
                        self._deliver(claim.outgoing, client, pacers, params.concurrency, cut_after)
                    )
                    claiming = group.create_task(
                        record_then_claim(
                            unrecorded,
                            None if last or rates else next_now,
                            [o.enrollment_id for o in claim.outgoing],
                        )
                    )
            except BaseExceptionGroup as failed:  # the first failure, as `gather` raised it
                raise failed.exceptions[0]  # noqa: B904
            results, following = delivering.result(), claiming.result()
            unrecorded = (claim, results, now)
            if last:
                more = claim.claimed == limit
                break
            if following is None:
                next_now = clock()
                following = await self._claim(
                    sequence=sequence, now=next_now, limit=limit, lease=lease, owner=owner
                )
            claim, now, batch = following, next_now, batch + 1
        if unrecorded is not None:
            await record(unrecorded)
        due = await self._run(lambda s: next_due_at(session=s, sequence_id=sequence.id))
        return ProcessSequenceResult(status="active", counts=counts, next_due_at=due, more=more)

    async def aclose(self) -> None:
        """Close the HTTP clients (a later round opens a new one)."""
        await self._clients.aclose()

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [self.process_sequence]
