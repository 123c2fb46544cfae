"""Conversation events in over HTTP: `POST /events`, a JSON list recorded all or none. Scope
`events:write`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from segmentflow.api.deps import EventsWriteKey, WriteSession, now
from segmentflow.api.errors import responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.services.conversations import record_conversations
from segmentflow.workflows.conversation_models import SubmittedConversationEvent

__all__ = ["MAX_EVENTS", "router"]

router = APIRouter(tags=["reports"], route_class=StrictJsonRoute)

#: Events per request; send more in several requests (each is idempotent by id).
MAX_EVENTS = 10_000


class EventsRecorded(BaseModel):
    recorded: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events whose id was stored before (or repeated in the list).")


@router.post("/events", responses=responses(401, 403))
def post_events(
    events: Annotated[list[SubmittedConversationEvent], Body(max_length=MAX_EVENTS)],
    session: WriteSession,
    _key: EventsWriteKey,
) -> EventsRecorded:
    """Record closed conversations: `{"id", "contactKey", "at", "channel"?, "handoff"?, "csat"?,
    "messages"?}` each. All or none: one refused event is a 422 naming its index and field
    (`["body", 3, "csat"]`) and nothing is stored. A repeated id changes nothing and is counted in
    `duplicates`. Scope `events:write`."""
    counts = record_conversations(session=session, events=events, now=now())
    return EventsRecorded(recorded=counts.recorded, duplicates=counts.duplicates)
