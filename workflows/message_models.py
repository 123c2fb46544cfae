"""Payloads of message handling: `segmentflow.HandleMessage`, `segmentflow.RunAction` and the activities
between them. Frozen pydantic models, camelCase on the wire.

Pure (pydantic only), so workflow code and the workflow-side interceptor import it freely.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import ConfigDict, Field
from segmentflow.workflows.models import Payload

__all__ = [
    "ACTION_KEY_MAX",
    "CONTACT_HEADER",
    "CONTACT_KEY_MAX",
    "HANDLE_MESSAGE",
    "REFUSAL_HEADER",
    "REFUSE_ACTION",
    "RENDER_REPLY",
    "RESOLVE_MESSAGE",
    "RESPOND",
    "RUN_ACTION",
    "RUN_ACTION_HEARTBEAT",
    "SEGMENT_RESTRICTED",
    "AppliedInstruction",
    "HandleMessageInput",
    "HandleMessageResult",
    "OfferedAction",
    "RefuseActionInput",
    "RenderReplyInput",
    "ResolveMessageInput",
    "ResolveMessageResult",
    "RespondInput",
    "RespondResult",
    "RunActionInput",
    "RunActionRequest",
    "RunActionResult",
    "WithheldItem",
]

HANDLE_MESSAGE = "segmentflow.HandleMessage"
RESOLVE_MESSAGE = "segmentflow.ResolveMessage"
RESPOND = "segmentflow.Respond"
RUN_ACTION = "segmentflow.RunAction"
REFUSE_ACTION = "segmentflow.RefuseAction"
RENDER_REPLY = "segmentflow.RenderReply"
#: `ApplicationError.type` of every refusal (non-retryable), whichever check refused.
SEGMENT_RESTRICTED = "SegmentRestricted"
#: Workflow and activity header carrying the current contact's key (absent: anonymous or unknown).
CONTACT_HEADER = "segmentflow-contact"
#: Activity header marking a `RefuseAction` the workflow-side interceptor swapped in for a refused
#: `RunAction`; the worker runs no `RefuseAction` without it.
REFUSAL_HEADER = "segmentflow-refusal"
#: The heartbeat timeout of `RunAction` (it heartbeats in the background) when its caller gave none: a
#: dead worker's call is retried after this long, not at its start-to-close timeout.
RUN_ACTION_HEARTBEAT = timedelta(seconds=10)

#: Bounds at the edges, the column sizes of the audit table: a key of 1-256 characters for an action, at
#: most 512 for a contact, neither with NUL (PostgreSQL's text refuses it).
_NO_NUL = r"^[^\x00]*$"
ACTION_KEY_MAX = 256
CONTACT_KEY_MAX = 512


class HandleMessageInput(Payload):
    """One message of a conversation; `contactKey` is None for an anonymous contact."""

    contact_key: str | None = Field(default=None, max_length=CONTACT_KEY_MAX, pattern=_NO_NUL)
    conversation_id: str
    text: str


class HandleMessageResult(Payload):
    """What applied to the contact (`actions` offered, `instructions` applied, as keys), the action that
    ran or was refused (at most one of them), and the reply."""

    actions: list[str]
    instructions: list[str]
    ran: str | None
    refused: str | None
    reply: str


class RunActionRequest(Payload):
    """`segmentflow.RunAction`'s input as a worker reads it off the wire: any JSON object, so a malformed
    one reaches the activity, which refuses it (audited, non-retryable `SegmentRestricted`) instead of
    Temporal failing to decode it on every retry. Callers build `RunActionInput`."""

    model_config = ConfigDict(extra="allow")

    action: Any = None
    contact_key: Any = None
    arguments: Any = None


class RunActionInput(RunActionRequest):
    """`segmentflow.RunAction`: perform `action` for `contactKey` (None: anonymous) with `arguments`.

    Strict, unlike the other wire models: it is the input of the permission-checked path, where an unknown
    field (a misspelt `contactKey`) would otherwise run the action for someone else; it is refused and
    audited as malformed."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=ACTION_KEY_MAX, pattern=_NO_NUL)
    contact_key: str | None = Field(default=None, max_length=CONTACT_KEY_MAX, pattern=_NO_NUL)
    arguments: dict[str, Any] = Field(default_factory=dict)


class RunActionResult(Payload):
    action: str
    contact_key: str | None
    #: The webhook's HTTP status, or None for an action without a webhook.
    status: int | None
    #: The webhook's JSON response (or its text when it is not JSON), read up to
    #: `SEGMENTFLOW_MAX_RESPONSE_BYTES`; past that it is the text read so far and `responseTruncated` is set.
    response: Any = None
    response_truncated: bool = False


class ResolveMessageInput(Payload):
    contact_key: str | None = Field(default=None, max_length=CONTACT_KEY_MAX, pattern=_NO_NUL)


class OfferedAction(Payload):
    """An action as a responder sees it."""

    key: str
    name: str
    description: str
    parameters: dict[str, Any]
    trigger_phrases: list[str]


class AppliedInstruction(Payload):
    """An instruction as a responder sees it."""

    key: str
    text: str


class WithheldItem(Payload):
    """An action or instruction withheld from everyone: its restriction names segments that do not exist."""

    kind: str  # "action" | "instruction"
    key: str
    missing_segments: list[str]


class ResolveMessageResult(Payload):
    """The contact's memberships read once, and the keys of what applies to it (the activities after it
    read the details from their cached catalog, so a message does not carry every definition through
    history). `segments` is None for an anonymous contact."""

    contact_key: str | None
    segments: list[str] | None
    actions: list[str]
    instructions: list[str]
    withheld: list[WithheldItem] = Field(default_factory=list)


class RespondInput(Payload):
    """The message, and the keys of the actions offered and instructions applied."""

    contact_key: str | None
    conversation_id: str
    text: str
    actions: list[str]
    instructions: list[str]


class RespondResult(Payload):
    """The responder's choice: an action to run (or None) with its arguments, and its own reply if any."""

    action: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    reply: str | None = None


class RefuseActionInput(Payload):
    """Record a refusal decided in the workflow (the outbound check), then fail with `SegmentRestricted`."""

    action: str
    contact_key: str | None
    reason: str
    side: str = "workflow"


class RenderReplyInput(Payload):
    contact_key: str | None
    text: str
    ran: str | None = None
    refused: str | None = None
    responder_reply: str | None = None
    result: Any = None
