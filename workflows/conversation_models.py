"""The conversation event: one closed conversation, as `POST /events`, `segmentflow events import` and the
`segmentflow.RecordConversation` activity take it. A frozen pydantic model, camelCase on the wire.

Pure (pydantic only), so a host workflow imports it freely to record the end of a conversation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt
from segmentflow.workflows.models import Payload

__all__ = [
    "RECORD_CONVERSATION",
    "ConversationEvent",
    "RecordConversationInput",
    "RecordConversationResult",
    "SubmittedConversationEvent",
]

RECORD_CONVERSATION = "segmentflow.RecordConversation"

# Stored text: within the column sizes, and without NUL (which PostgreSQL refuses in text).
_NO_NUL = r"^[^\x00]*$"
EventId = Annotated[str, Field(min_length=1, max_length=256, pattern=_NO_NUL)]
ContactKey = Annotated[str, Field(min_length=1, max_length=512, pattern=_NO_NUL)]
Channel = Annotated[str, Field(min_length=1, max_length=64, pattern=_NO_NUL)]


def _rfc3339(value: Any) -> Any:
    """Only text (or a datetime, from Python callers): pydantic would otherwise read a number as Unix time."""
    if isinstance(value, (str, datetime)):
        return value
    raise ValueError("must be an RFC 3339 date-time string")


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class ConversationEvent(Payload):
    """One closed conversation.

    - `id`: unique; recording the same id again changes nothing and counts as a duplicate.
    - `contactKey`: the contact's fully-qualified key, or null for an anonymous visitor.
    - `at`: when the conversation closed, RFC 3339 with an offset (a time without one is refused).
    - `handoff`: handed to a human (true/false; omitted when unknown, and then left out of the rate).
    - `csat`: the survey answer, an integer from 1 to 5, or null when there was none.
    - `messages`: how many messages the conversation had (kept, not reported on yet).
    """

    id: EventId
    contact_key: ContactKey | None
    at: Rfc3339
    channel: Channel | None = None
    handoff: StrictBool | None = None
    csat: Annotated[StrictInt, Field(ge=1, le=5)] | None = None
    messages: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)] | None = None


class SubmittedConversationEvent(ConversationEvent):
    """The event as written at the edge (`POST /events`, `segmentflow events import`): a field this version
    does not know is refused, so a misspelt `csat` is an error naming it, never an answer silently dropped.
    (The activity's input ignores unknown fields, as every wire model does, for rolling deploys.)"""

    model_config = ConfigDict(extra="forbid")


#: The activity takes the event itself.
RecordConversationInput = ConversationEvent


class RecordConversationResult(Payload):
    """`recorded` 1 and `duplicates` 0 for a new event; the reverse when its id was recorded before."""

    recorded: int
    duplicates: int
