"""The HTTP API's request and response bodies (FastAPI-template naming: `XCreate`, `XReplace`, `XPublic`).

Segment definitions are LaunchDarkly's segment JSON and reuse the rules engine's own models, so the OpenAPI
schema shows their real shape and a malformed rule is refused at the edge with the field's path.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from segmentflow.rules import Rule, Target
from segmentflow.rules.patch import Instruction
from segmentflow.services.segments import is_uuid_shaped

__all__ = [
    "RESERVED_KEYS",
    "ChangePublic",
    "ChangesPublic",
    "ContactDeleted",
    "ContactPublic",
    "ContactSegmentsPublic",
    "ErrorMessage",
    "Health",
    "MemberPublic",
    "MembersPublic",
    "MembershipPublic",
    "ReportPublic",
    "SegmentActivityPublic",
    "SegmentCreate",
    "SegmentDefinition",
    "SegmentDeleted",
    "SegmentPatch",
    "SegmentPublic",
    "SegmentReplace",
    "SegmentSaved",
    "SegmentsPublic",
    "UtcDateTime",
]

#: Keys that would be shadowed by fixed paths under /contacts/segments/.
RESERVED_KEYS = frozenset({"changes", "report", "contacts"})
_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: Text stored in a column: no NUL character (PostgreSQL refuses it).
_TEXT = r"^[^\x00]*$"


def _to_utc(value: datetime) -> datetime:
    """A naive time is read as UTC; one outside the representable range is refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range") from None


UtcDateTime = Annotated[datetime, AfterValidator(_to_utc)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SegmentDefinition(BaseModel):
    """LaunchDarkly's segment JSON without its identity: targets, rules and salt. Other LaunchDarkly fields
    (`tags`, `_links`, ...) are kept; `key`, when present, must be the segment's."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    included: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    included_contexts: list[Target] = Field(default_factory=list, alias="includedContexts")
    excluded_contexts: list[Target] = Field(default_factory=list, alias="excludedContexts")
    rules: list[Rule] = Field(default_factory=list)
    salt: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SegmentCreate(_Body):
    key: str = Field(min_length=1, max_length=256, pattern=_KEY_PATTERN)
    name: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=_TEXT, description="Defaults to the key."
    )
    description: str | None = Field(default=None, pattern=_TEXT)
    definition: SegmentDefinition = Field(default_factory=SegmentDefinition)

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, key: str) -> str:
        if key in RESERVED_KEYS:
            raise ValueError(f'"{key}" is reserved by the API paths under /contacts/segments/')
        if is_uuid_shaped(key):
            raise ValueError(f'"{key}" looks like a segment id (a UUID); a segment key must not')
        return key


class SegmentReplace(_Body):
    """A whole new name, description and definition (an omitted name becomes the key)."""

    name: str | None = Field(default=None, min_length=1, max_length=512, pattern=_TEXT)
    description: str | None = Field(default=None, pattern=_TEXT)
    definition: SegmentDefinition
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="The version being replaced.")


class SegmentPatch(_Body):
    """LaunchDarkly's semantic patch: instructions applied in order, all or none."""

    instructions: list[Instruction] = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1, description="The version being patched.")
    comment: str | None = None


class SegmentPublic(BaseModel):
    id: uuid.UUID
    key: str
    name: str
    description: str | None
    version: int
    definition: dict[str, Any] = Field(description="LaunchDarkly's segment JSON.")
    created_at: datetime
    updated_at: datetime
    member_count: int


class SegmentSaved(SegmentPublic):
    """A segment as a write saved it, with the warnings of that save."""

    warnings: list[str] = Field(
        default_factory=list,
        description="One line per clause value that was kept although it never matches (a malformed version "
        "or date, a value of the wrong type), as `segmentflow segments lint` prints it.",
    )


class SegmentsPublic(BaseModel):
    data: list[SegmentPublic]
    total: int
    page: int
    limit: int
    next_page: int | None


class SegmentDeleted(BaseModel):
    key: str
    exited: int = Field(description="Members that got an `exited` change event.")


class ContactSegmentsPublic(BaseModel):
    data: list[SegmentPublic]
    contact_key: str
    computed_at: datetime


class MembershipPublic(BaseModel):
    """Is the contact in the segment: the shape of `segmentflow check` and the Temporal activity."""

    model_config = ConfigDict(populate_by_name=True)

    is_member: bool = Field(alias="isMember")
    segment_id: uuid.UUID = Field(alias="segmentId")
    segment_key: str = Field(alias="segmentKey")
    contact_key: str = Field(alias="contactKey")
    computed_at: datetime = Field(alias="computedAt")


class MemberPublic(BaseModel):
    key: str
    since: datetime


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    limit: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class ChangePublic(BaseModel):
    seq: int
    segment_id: uuid.UUID
    segment_key: str
    contact_key: str
    change: Literal["entered", "exited"]
    at: datetime


class ChangesPublic(BaseModel):
    data: list[ChangePublic]
    limit: int
    next_after: int = Field(description="Pass as `after` to continue: the last seq returned, or `after`.")


class SegmentActivityPublic(BaseModel):
    segment_id: uuid.UUID
    segment_key: str
    name: str
    members: int
    entered: int
    exited: int


class ReportPublic(BaseModel):
    since: datetime
    until: datetime
    data: list[SegmentActivityPublic]


class ContactPublic(BaseModel):
    key: str = Field(description="The fully-qualified key.")
    kinds: list[str]
    context: dict[str, Any]
    updated_at: datetime
    computed_at: datetime | None
    segments: list[str]


class ContactDeleted(BaseModel):
    key: str
    exited: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str


class ErrorMessage(BaseModel):
    detail: str
