"""Payloads of segmentflow's activities and workflows: frozen pydantic models, camelCase on the wire.

Pure (pydantic only), so workflow code imports it freely. Type names are namespaced (`segmentflow.X`) so
they never collide with a host application's own.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "CHECK_CONTACT_IN_SEGMENT",
    "FINISH_RECOMPUTE",
    "LIST_CONTACT_SEGMENTS",
    "PLAN_RECOMPUTE",
    "RECOMPUTE_MEMBERSHIPS",
    "RECOMPUTE_RANGE",
    "CheckContactInSegmentInput",
    "CheckContactInSegmentResult",
    "ContactRange",
    "FinishRecomputeInput",
    "ListContactSegmentsInput",
    "ListContactSegmentsResult",
    "PlanRecomputeInput",
    "PlanRecomputeResult",
    "RecomputeCountsModel",
    "RecomputeMembershipsInput",
    "RecomputeMembershipsResult",
    "RecomputeRangeInput",
    "RecomputeRangeResult",
]

CHECK_CONTACT_IN_SEGMENT = "segmentflow.CheckContactInSegment"
LIST_CONTACT_SEGMENTS = "segmentflow.ListContactSegments"
PLAN_RECOMPUTE = "segmentflow.PlanRecompute"
RECOMPUTE_RANGE = "segmentflow.RecomputeRange"
FINISH_RECOMPUTE = "segmentflow.FinishRecompute"
RECOMPUTE_MEMBERSHIPS = "segmentflow.RecomputeMemberships"


class Payload(BaseModel):
    """A wire model. Unknown fields are ignored, not refused: during a rolling deploy a newer client (or
    worker) sends fields this version does not know, and refusing them would drop a recorded signal or fail
    a workflow for good. Bad values of known fields are still refused. (`RunActionInput`, the input of the
    permission-checked path, stays strict.)"""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class CheckContactInSegmentInput(Payload):
    """Which segment (by `segmentKey`, or by `segmentId` UUID) and which contact. `contactKey` is the
    contact's fully-qualified key, or, with `contextKind`, its key within that kind."""

    segment_key: str | None = None
    segment_id: uuid.UUID | None = None
    contact_key: str = Field(min_length=1)
    context_kind: str | None = None

    @model_validator(mode="after")
    def _one_segment_reference(self) -> CheckContactInSegmentInput:
        if (self.segment_key is None) == (self.segment_id is None):
            raise ValueError("give exactly one of segmentKey and segmentId")
        return self


class CheckContactInSegmentResult(Payload):
    is_member: bool
    segment_key: str
    segment_id: uuid.UUID
    contact_key: str
    computed_at: datetime


class ListContactSegmentsInput(Payload):
    contact_key: str = Field(min_length=1)
    context_kind: str | None = None


class ListContactSegmentsResult(Payload):
    contact_key: str
    segments: list[str]
    computed_at: datetime


class ContactRange(Payload):
    index: int
    first_id: int
    last_id: int


class RecomputeCountsModel(Payload):
    contacts: int = 0
    entered: int = 0
    exited: int = 0

    def plus(self, other: RecomputeCountsModel) -> RecomputeCountsModel:
        return RecomputeCountsModel(
            contacts=self.contacts + other.contacts,
            entered=self.entered + other.entered,
            exited=self.exited + other.exited,
        )


class PlanRecomputeInput(Payload):
    segment_keys: list[str] | None = None
    range_size: int = Field(ge=1)


class PlanRecomputeResult(Payload):
    ranges: list[ContactRange]
    #: The requested segments plus everything that depends on them; None means every segment.
    segment_keys: list[str] | None


class RecomputeRangeInput(Payload):
    run_token: str
    range: ContactRange
    page_size: int = Field(ge=1)
    segment_keys: list[str] | None = None


class RecomputeRangeResult(Payload):
    counts: RecomputeCountsModel
    worker: str


class FinishRecomputeInput(Payload):
    run_token: str


class RecomputeMembershipsInput(Payload):
    """Recompute every segment, or `segmentKeys` and the segments that depend on them.

    Contacts are cut into id ranges of about `rangeSize`; up to `parallelism` ranges run at once as
    activities (on any worker of the task queue), each paging `pageSize` contacts per transaction. The
    remaining fields carry state across continue-as-new and are not for callers."""

    segment_keys: list[str] | None = None
    parallelism: int = Field(default=4, ge=1, le=256)
    range_size: int = Field(default=20_000, ge=1)
    page_size: int = Field(default=2_000, ge=1)
    #: A range heartbeats in the background (every quarter of this, at most every 5 s): a dead worker's
    #: range is retried on another worker after about this long.
    range_heartbeat_timeout: timedelta = timedelta(seconds=10)
    #: Tries of one range (a worker crash counts as one) before the run fails with
    #: `RecomputeRangeFailed` naming the range.
    range_attempts: int = Field(default=8, ge=1)
    #: Ranges per workflow run before continuing as new (bounds each run's history).
    ranges_per_run: int = Field(default=400, ge=1)
    run_token: str | None = None
    pending: list[ContactRange] | None = None
    planned_segment_keys: list[str] | None = None
    counts: RecomputeCountsModel = RecomputeCountsModel()
    ranges_done: int = 0
    workers: list[str] = Field(default_factory=list)


class RecomputeMembershipsResult(Payload):
    contacts: int
    entered: int
    exited: int
    ranges: int
    #: Identities of the workers that processed ranges, sorted.
    workers: list[str]
