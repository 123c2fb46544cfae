"""The SLA page: policies in precedence order, a what-if form (which policy a ticket would get and every
due time, in business hours), and warnings and breaches per segment over a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from segmentflow.api.deps import WriteSession
from segmentflow.console.web import PREFIX, Login, now, page, require
from segmentflow.policies.sla import METRICS, Priority, TicketFacts
from segmentflow.services.sla import event_counts_by_segment, list_policies, select_for_contact

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/sla")
PRIORITIES: tuple[str, ...] = get_args(Priority)


def _created_at(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@router.get("", include_in_schema=False)
def sla_page(
    request: Request,
    session: WriteSession,
    login: Login,
    contact: Annotated[str, Query(max_length=512)] = "",
    priority: Annotated[str, Query(max_length=16)] = "",
    channel: Annotated[str, Query(max_length=64)] = "",
    created_at: Annotated[str, Query(max_length=64)] = "",
    days: Annotated[int, Query(ge=1, le=365)] = 7,
) -> Response:
    require(login, "sla:read")
    whatif: dict[str, Any] | None = None
    error = None
    if priority:
        try:
            if priority not in PRIORITIES:
                raise ValueError(f"priority must be one of {', '.join(PRIORITIES)}")
            start = _created_at(created_at) if created_at.strip() else now()
            facts = TicketFacts(priority=priority, channel=channel.strip() or None, created_at=start)
            chosen = select_for_contact(session=session, contact_key=contact.strip() or None, ticket=facts)
            whatif = {"selection": chosen, "created_at": start, "metrics": METRICS}
        except ValueError as exc:
            error = str(exc)
    until = now()
    counts = event_counts_by_segment(session=session, since=until - timedelta(days=days), until=until)
    context = {
        "policies": [p.to_json() for p in list_policies(session=session)],
        "priorities": PRIORITIES,
        "form": {"contact": contact, "priority": priority, "channel": channel, "created_at": created_at},
        "whatif": whatif,
        "error": error,
        "days": days,
        "counts": counts,
    }
    return page(request, "sla.html", context, login=login)
