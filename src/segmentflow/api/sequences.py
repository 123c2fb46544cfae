"""Outbound sequences: list, read with status, save (JSON file format), launch, pause.

Launching here enrolls the segment's current members and marks the sequence active; its runner workflow
is started by `segmentflow sequences launch` (or `segmentflow.plugins.start_sequence_runner`), since the
API holds no Temporal client. A running runner picks up a resume at its next round."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Path, Request, Response, status
from sqlmodel import Session

from segmentflow.api.deps import (
    Egress,
    ReadSession,
    SequencesReadKey,
    SequencesWriteKey,
    WriteSession,
    now,
)
from segmentflow.api.errors import invalid, responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.db.tables import Sequence
from segmentflow.policies.egress import first_url_refusal, redact_url
from segmentflow.policies.sequences import SequenceError, parse_sequences, webhook_urls
from segmentflow.services.sequences import (
    UnknownSegmentForSequenceError,
    UnknownSequenceError,
    get_sequence,
    import_sequences,
    launch_sequence,
    list_sequences,
    pause_sequence,
    sequence_status,
)

__all__ = ["router"]

router = APIRouter(prefix="/sequences", tags=["sequences"], route_class=StrictJsonRoute)

SequenceKey = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="The sequence's key.")
]
Definition = Annotated[dict[str, Any], Body(description="One sequence in the JSON file format.")]


def _summary(record: Sequence) -> dict[str, Any]:
    return {
        "key": record.key,
        "name": record.name,
        "segment": record.segment_key,
        "status": record.status,
        "version": record.version,
        "launched_at": record.launched_at,
        "updated_at": record.updated_at,
    }


def _found(session: Session, key: str) -> Sequence:
    record = get_sequence(session=session, key=key)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f'unknown sequence "{key}"')
    return record


@router.get("", responses=responses(401, 403))
def list_all(session: ReadSession, _key: SequencesReadKey) -> dict[str, Any]:
    """Every sequence, by key."""
    return {"data": [_summary(r) for r in list_sequences(session=session)]}


@router.get("/{key}", responses=responses(401, 403, 404))
def read_one(session: ReadSession, _key: SequencesReadKey, key: SequenceKey) -> dict[str, Any]:
    """The sequence's definition (the JSON file format, webhook URLs with their secrets redacted: see
    `policies.egress.redact_url`) and its status: enrollments by status, and per step enrolled, sent,
    exited and failed."""
    record = _found(session, key)
    report = sequence_status(session=session, key=key)
    shown = _redacted(record.definition)
    return {**_summary(record), "definition": shown, "report": dataclasses.asdict(report)}


def _redacted(definition: Any) -> Any:
    """The stored definition with every send step's `url` redacted (userinfo, query values, token-like
    path segments); nothing else changes."""
    if isinstance(definition, list):
        return [_redacted(item) for item in definition]
    if not isinstance(definition, dict):
        return definition
    out = {k: _redacted(v) for k, v in definition.items()}
    if definition.get("type") == "send" and isinstance(definition.get("url"), str):
        out["url"] = redact_url(definition["url"])
    return out


@router.put("/{key}", responses=responses(401, 403))
def save(
    request: Request,
    session: WriteSession,
    _key: SequencesWriteKey,
    response: Response,
    definition: Definition,
    key: SequenceKey,
    egress: Egress,
) -> dict[str, Any]:
    """Create or replace a sequence (201 when created); its templates must parse and render within the
    template limits for a sample contact, and no webhook URL may be one the egress policy always refuses
    (422 naming the step's `url`)."""
    if definition.get("key", key) != key:
        raise invalid(["body", "key"], "the body's key differs from the path's")
    try:
        parsed = parse_sequences({**definition, "key": key})
        refused = first_url_refusal(webhook_urls(parsed[0]), egress)
        if refused is not None:
            raise invalid(["body", *refused[0]], refused[1])
        [(record, created)] = import_sequences(
            session=session, sequences=parsed, now=now(), limits=request.app.state.template_limits
        )
    except SequenceError as exc:
        raise invalid(["body"], str(exc)) from None
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _summary(record)


@router.post("/{key}/launch", responses=responses(401, 403, 404, 409))
def launch(session: WriteSession, _key: SequencesWriteKey, key: SequenceKey) -> dict[str, Any]:
    """Enroll the segment's current members (first launch) or resume; `changed` is false when it was
    already active."""
    try:
        result = launch_sequence(session=session, key=key, now=now())
    except UnknownSequenceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    except UnknownSegmentForSequenceError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc.args[0])) from None
    return dataclasses.asdict(result)


@router.post("/{key}/pause", responses=responses(401, 403, 404))
def pause(session: WriteSession, _key: SequencesWriteKey, key: SequenceKey) -> dict[str, Any]:
    """Stop sending; enrollments keep their place. `changed` is false when it was not active."""
    try:
        changed = pause_sequence(session=session, key=key, now=now())
    except UnknownSequenceError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0])) from None
    return {"key": key, "status": _found(session, key).status, "changed": changed}
