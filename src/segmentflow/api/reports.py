"""The segment report over HTTP: `GET /reports/segments`, as JSON or (with `Accept: text/csv`) CSV. Scope
`reports:read`."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from segmentflow.api.deps import ReadSession, ReportsReadKey
from segmentflow.api.errors import invalid, responses
from segmentflow.api.models import UtcDateTime
from segmentflow.services.reporting import ReportError, report_csv, segment_report

__all__ = ["router"]

router = APIRouter(prefix="/reports", tags=["reports"])


class _Public(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class CsatPublic(_Public):
    responses: int = Field(description="Conversations with a survey answer.")
    average: float | None = Field(description="Mean answer (1-5); null without answers.")
    satisfied: float | None = Field(description="Share of answers of 4 or 5; null without answers.")


class SlaCountsPublic(_Public):
    warnings: int
    breaches: int


class ReportFigures(_Public):
    members: int | None = Field(
        description='Members at `until` (in a series: at the end of the day); null for "-".'
    )
    conversations: int
    handoff_rate: float | None = Field(
        alias="handoffRate",
        description="Share of conversations handed to a human, of those that say; null when none do.",
    )
    csat: CsatPublic
    sla: SlaCountsPublic = Field(description="SLA warnings and breaches fired in the window.")


class ReportDay(ReportFigures):
    day: date = Field(alias="date", description="The UTC day.")


class ReportRowPublic(ReportFigures):
    segment: str | None = Field(
        description='The segment key; "-" for anonymous, unknown and unsegmented contacts; null overall.'
    )
    name: str | None
    series: list[ReportDay] | None = Field(default=None, description="Per UTC day, with `interval=day`.")


class SegmentReportPublic(_Public):
    since: datetime
    until: datetime
    data: list[ReportRowPublic]
    overall: ReportRowPublic


@router.get(
    "/segments",
    response_model=SegmentReportPublic,
    responses={
        **responses(401, 403),
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    },
)
def read_segment_report(
    request: Request,
    session: ReadSession,
    _key: ReportsReadKey,
    since: Annotated[UtcDateTime, Query(description="Window start, inclusive (RFC 3339).")],
    until: Annotated[UtcDateTime, Query(description="Window end, exclusive (RFC 3339).")],
    interval: Annotated[
        Literal["day"] | None, Query(description="`day`: each row gains a per-UTC-day `series`.")
    ] = None,
) -> Any:
    """Conversations, handoff rate, CSAT and SLA events per segment over [since, until), each conversation
    counted under the segments its contact was in at its time (`"-"`: anonymous, unknown or in none); a
    contact in several segments counts once in each and once in `overall`. `members` is the count at
    `until`. `Accept: text/csv` gives the same report as CSV. Scope `reports:read`."""
    try:
        report = segment_report(session=session, since=since, until=until, interval=interval)
    except ReportError as exc:
        raise invalid(["query", exc.field], str(exc)) from None
    if "text/csv" in request.headers.get("accept", ""):
        return Response(report_csv(report), media_type="text/csv; charset=utf-8")
    return JSONResponse(report.to_json())
