"""segmentflow's activities: thin async wrappers that run one service call in a worker thread.

Each method opens a session, calls a service, commits, returns a `...Result`. Invalid input (an unknown
segment or contact) becomes a non-retryable `ApplicationError` with a stable `type`; database errors
propagate so Temporal retries them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from segmentflow.activities._heartbeat import heartbeating
from segmentflow.workflows.models import (
    CHECK_CONTACT_IN_SEGMENT,
    FINISH_RECOMPUTE,
    LIST_CONTACT_SEGMENTS,
    PLAN_RECOMPUTE,
    RECOMPUTE_RANGE,
    CheckContactInSegmentInput,
    CheckContactInSegmentResult,
    ContactRange,
    FinishRecomputeInput,
    ListContactSegmentsInput,
    ListContactSegmentsResult,
    PlanRecomputeInput,
    PlanRecomputeResult,
    RecomputeCountsModel,
    RecomputeRangeInput,
    RecomputeRangeResult,
)
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from segmentflow.services.contacts import contact_key
from segmentflow.services.membership import (
    EvaluatedPage,
    UnknownContactError,
    UnknownSegmentError,
    check_membership,
    contact_segments,
)
from segmentflow.services.runs import (
    RangeProgress,
    evaluate_range_step,
    expand_segment_keys,
    finish_run,
    plan_ranges,
    recompute_range_step,
)
from segmentflow.services.segments import SegmentIndexCache

__all__ = ["MembershipActivities"]

T = TypeVar("T")


def _not_found(exc: LookupError) -> ApplicationError:
    kind = "SegmentNotFound" if isinstance(exc, UnknownSegmentError) else "ContactNotFound"
    return ApplicationError(str(exc), type=kind, non_retryable=True)


class MembershipActivities:
    """Membership reads and recompute steps over one database engine."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._indexes = SegmentIndexCache()

    def _in_transaction(self, work: Callable[[Session], T]) -> T:
        with Session(self._engine) as session, session.begin():
            return work(session)

    async def _run(self, work: Callable[[Session], T]) -> T:
        try:
            return await asyncio.to_thread(self._in_transaction, work)
        except (UnknownSegmentError, UnknownContactError) as exc:
            raise _not_found(exc) from None

    @activity.defn(name=CHECK_CONTACT_IN_SEGMENT)
    async def check_contact_in_segment(
        self, params: CheckContactInSegmentInput
    ) -> CheckContactInSegmentResult:
        ref = params.segment_key if params.segment_key is not None else str(params.segment_id)
        key = contact_key(params.contact_key, params.context_kind)
        found = await self._run(lambda s: check_membership(session=s, segment_ref=ref, contact_key=key))
        return CheckContactInSegmentResult.model_validate(found, from_attributes=True)

    @activity.defn(name=LIST_CONTACT_SEGMENTS)
    async def list_contact_segments(self, params: ListContactSegmentsInput) -> ListContactSegmentsResult:
        key = contact_key(params.contact_key, params.context_kind)
        segments, computed_at = await self._run(lambda s: contact_segments(session=s, contact_key=key))
        return ListContactSegmentsResult(contact_key=key, segments=segments, computed_at=computed_at)

    @activity.defn(name=PLAN_RECOMPUTE)
    async def plan_recompute(self, params: PlanRecomputeInput) -> PlanRecomputeResult:
        def plan(session: Session) -> PlanRecomputeResult:
            try:
                keys = expand_segment_keys(self._indexes.get(session=session), params.segment_keys)
            except KeyError as exc:
                raise UnknownSegmentError(f'unknown segment "{exc.args[0]}"') from None
            ranges = plan_ranges(session=session, range_size=params.range_size)
            return PlanRecomputeResult(
                ranges=[ContactRange(index=i, first_id=a, last_id=b) for i, (a, b) in enumerate(ranges)],
                segment_keys=None if keys is None else sorted(keys),
            )

        return await self._run(plan)

    @activity.defn(name=RECOMPUTE_RANGE)
    async def recompute_range(self, params: RecomputeRangeInput) -> RecomputeRangeResult:
        """Pages through one contact range; the cursor is durable (committed with each page) and also
        heartbeated, so a retry on any worker resumes where the last commit left off. A background beat
        keeps a slow page from looking like a dead worker."""
        async with heartbeating():
            return await self._recompute_range(params)

    async def _recompute_range(self, params: RecomputeRangeInput) -> RecomputeRangeResult:
        index = await self._run(lambda s: self._indexes.get(session=s))
        keys = None if params.segment_keys is None else set(params.segment_keys)
        rng = params.range
        step: dict[str, Any] = {
            "index": index,
            "run_token": params.run_token,
            "range_index": rng.index,
            "first_id": rng.first_id,
            "last_id": rng.last_id,
            "page_size": params.page_size,
            "segment_keys": keys,
        }
        while True:
            # Read and evaluate outside the write transaction, then apply (re-checked) under it: on SQLite
            # several workers' ranges so evaluate side by side instead of one page at a time.
            evaluated = await asyncio.to_thread(self._evaluate, step)
            progress = await self._run(functools.partial(self._apply, step, evaluated))
            activity.heartbeat(progress.cursor)
            if progress.done:
                counts = progress.counts
                return RecomputeRangeResult(
                    counts=RecomputeCountsModel(
                        contacts=counts.contacts, entered=counts.entered, exited=counts.exited
                    ),
                    worker=activity.client().identity,
                )

    @staticmethod
    def _apply(step: dict[str, Any], evaluated: EvaluatedPage | None, session: Session) -> RangeProgress:
        return recompute_range_step(session=session, evaluated=evaluated, **step)

    def _evaluate(self, step: dict[str, Any]) -> EvaluatedPage | None:
        with Session(self._engine) as session:
            return evaluate_range_step(session=session, **step)

    @activity.defn(name=FINISH_RECOMPUTE)
    async def finish_recompute(self, params: FinishRecomputeInput) -> None:
        await self._run(lambda s: finish_run(session=s, run_token=params.run_token))

    def all(self) -> list[Callable[..., object]]:
        """Every activity method, for worker registration."""
        return [
            self.check_contact_in_segment,
            self.list_contact_segments,
            self.plan_recompute,
            self.recompute_range,
            self.finish_recompute,
        ]
