"""SLA policies over HTTP: read and replace the ordered policy list, select a policy for a ticket (the
`segmentflow.SelectSlaPolicy` shapes), a ticket's warnings and breaches, and counts per segment.
Scopes `sla:read` and `sla:write`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, Field

from segmentflow.api.deps import ReadSession, SlaReadKey, SlaWriteKey, WriteSession, now
from segmentflow.api.errors import invalid, responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.api.models import UtcDateTime
from segmentflow.policies.sla import SlaPolicyError, parse_policies
from segmentflow.services.sla import (
    event_counts_by_segment,
    import_policies,
    list_events,
    list_policies,
    selection_result,
    ticket_facts,
)
from segmentflow.services.sla import select_for_contact as select_policy
from segmentflow.workflows.sla_models import SelectSlaPolicyInput, SelectSlaPolicyResult

__all__ = ["router"]

router = APIRouter(prefix="/sla", tags=["sla"], route_class=StrictJsonRoute)

_DEFAULT_WINDOW = timedelta(days=7)


class SlaEventPublic(BaseModel):
    ticket_id: str
    contact_key: str | None
    segments: list[str]
    policy: str
    metric: str
    kind: str
    due_at: datetime
    fired_at: datetime
    #: Why its webhook failed for good (egress refusal, redirect, 4xx); null when sent or none is set.
    webhook_error: str | None = None


class SlaEventsPublic(BaseModel):
    data: list[SlaEventPublic]


class SlaSegmentCounts(BaseModel):
    segment: str = Field(description='A segment the contact was in when the event fired ("-": none).')
    warnings: int
    breaches: int


class SlaReportPublic(BaseModel):
    since: datetime
    until: datetime
    data: list[SlaSegmentCounts]


@router.get("/policies", responses=responses(401, 403))
def read_policies(session: ReadSession, _key: SlaReadKey) -> list[dict[str, Any]]:
    """The stored policies in precedence order, in the policy file's format. Scope `sla:read`."""
    return [p.to_json() for p in list_policies(session=session)]


@router.put("/policies", responses=responses(400, 401, 403))
def replace_policies(
    session: WriteSession,
    _key: SlaWriteKey,
    policies: Annotated[list[Any], Body(description="The policy file: a JSON list, order = precedence.")],
) -> list[dict[str, Any]]:
    """Replace every policy with the list (as `segmentflow sla import`); a refused policy is a 422 naming its
    index and field, and nothing is written. Scope `sla:write`."""
    try:
        parsed = parse_policies(policies)
        import_policies(session=session, policies=parsed, now=now())
    except SlaPolicyError as exc:
        raise invalid(
            ["body", exc.index if exc.index is not None else 0], str(exc), "sla_policy_error"
        ) from None
    return [p.to_json() for p in parsed]


@router.post("/select", responses=responses(400, 401, 403))
def select(session: ReadSession, _key: SlaReadKey, params: SelectSlaPolicyInput) -> SelectSlaPolicyResult:
    """The policy a ticket gets and its due times (`"policy": null`: none matched, no SLA), as the
    `segmentflow.SelectSlaPolicy` activity answers. Scope `sla:read`."""
    try:
        chosen = select_policy(
            session=session, contact_key=params.contact_key, ticket=ticket_facts(params.ticket)
        )
    except ValueError as exc:  # a due time past the year 9999
        raise invalid(["body", "ticket", "createdAt"], str(exc)) from None
    return selection_result(chosen)


@router.get("/tickets/{ticket_id}/events", responses=responses(401, 403))
def read_ticket_events(
    ticket_id: Annotated[str, Path(pattern=r"^[^\x00]+$", max_length=256)],
    session: ReadSession,
    _key: SlaReadKey,
) -> SlaEventsPublic:
    """A ticket's warnings and breaches in the order they fired. Scope `sla:read`."""
    rows = list_events(session=session, ticket_id=ticket_id)
    return SlaEventsPublic(
        data=[
            SlaEventPublic(
                ticket_id=r.ticket_id,
                contact_key=r.contact_key,
                segments=r.segments,
                policy=r.policy_key,
                metric=r.metric,
                kind=r.kind,
                due_at=r.due_at,
                fired_at=r.fired_at,
                webhook_error=r.webhook_error,
            )
            for r in rows
        ]
    )


@router.get("/report", responses=responses(401, 403))
def read_report(
    session: ReadSession,
    _key: SlaReadKey,
    since: Annotated[
        UtcDateTime | None, Query(description="Window start, inclusive (default: 7 days before `until`).")
    ] = None,
    until: Annotated[UtcDateTime | None, Query(description="Window end, exclusive (default: now).")] = None,
) -> SlaReportPublic:
    """Warnings and breaches fired in `[since, until)`, per segment of the ticket's contact. Scope
    `sla:read`."""
    end = until or now()
    try:
        start = since or end - _DEFAULT_WINDOW
    except OverflowError:
        raise invalid(["query", "until"], "too early to open a default window before it") from None
    if start >= end:
        raise invalid(["query", "since"], "since must be before until")
    counts = event_counts_by_segment(session=session, since=start, until=end)
    return SlaReportPublic(
        since=start,
        until=end,
        data=[
            SlaSegmentCounts(segment=s, warnings=c["warning"], breaches=c["breach"])
            for s, c in counts.items()
        ],
    )
