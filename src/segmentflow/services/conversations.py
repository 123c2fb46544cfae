"""Conversation events in: validate each against the event model, then insert all of them in the caller's
transaction, idempotently by id (a repeat, stored before or earlier in the same batch, is counted as a
duplicate and changes nothing), marking their days dirty in the report's rollup. Never commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session

from segmentflow.db.bulk import insert_new
from segmentflow.db.tables import conversation_event_table
from segmentflow.inputs import LineError, iter_json_lines
from segmentflow.services.reporting import mark_days_dirty
from segmentflow.workflows.conversation_models import ConversationEvent, SubmittedConversationEvent

__all__ = [
    "RecordCounts",
    "describe_validation_error",
    "iter_event_lines",
    "parse_event",
    "record_conversations",
]


@dataclass(frozen=True, slots=True)
class RecordCounts:
    recorded: int
    duplicates: int


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of a refused event, naming its field: `csat: Input should be less than or ...`."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or "event"
    return f"{field}: {first['msg']}"


def parse_event(data: Any) -> ConversationEvent:
    """One event from decoded JSON (unknown fields refused); raises `ValidationError` naming the field."""
    return SubmittedConversationEvent.model_validate(data)


def iter_event_lines(path: Path) -> Iterator[tuple[int, ConversationEvent | str]]:
    """(line number, event or the reason it was refused) for each non-blank line of a JSON-lines file.
    Raises `OSError` when the file cannot be opened."""
    with path.open("rb") as handle:
        for number, data in iter_json_lines(handle, skip_blank=True):
            if isinstance(data, LineError):
                yield number, str(data)
                continue
            try:
                yield number, parse_event(data)
            except ValidationError as exc:
                yield number, describe_validation_error(exc)


_COLUMNS = ("id", "contact_key", "at", "channel", "handoff", "csat", "messages", "recorded_at")


def record_conversations(
    *, session: Session, events: Sequence[ConversationEvent], now: datetime
) -> RecordCounts:
    """Insert the events whose id is not stored yet (the first of a repeated id within `events` wins).
    Concurrent writers of the same id are safe: the database keeps one and the other counts a duplicate."""
    unique: dict[str, ConversationEvent] = {}
    for event in events:
        unique.setdefault(event.id, event)
    rows = [
        (e.id, e.contact_key, e.at, e.channel, e.handoff, e.csat, e.messages, now) for e in unique.values()
    ]
    recorded = insert_new(session, conversation_event_table, _COLUMNS, rows, key="id")
    if recorded:
        mark_days_dirty(session=session, days={e.at.astimezone(UTC).date() for e in unique.values()})
    return RecordCounts(recorded=recorded, duplicates=len(events) - recorded)
