"""Message handling over HTTP: actions and AI instructions (list, upsert by key, in the import file
formats), what applies to a contact now, and the refusal audit. Scopes `messages:read`, `messages:write`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session

from segmentflow.api.deps import Egress, MessagesReadKey, MessagesWriteKey, ReadSession, WriteSession, now
from segmentflow.api.errors import invalid, responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.policies.egress import REDACTED, first_url_refusal, redact_url
from segmentflow.policies.restrictions import missing_segments
from segmentflow.services.messages import (
    ActionSpec,
    ImportReport,
    InstructionSpec,
    MessageCatalogCache,
    existing_segment_keys,
    list_actions,
    list_instructions,
    list_refusals,
    resolve_message,
    upsert_actions,
    upsert_instructions,
)

__all__ = ["router"]

router = APIRouter(prefix="/messages", tags=["messages"], route_class=StrictJsonRoute)


class WebhookPublic(BaseModel):
    #: Userinfo, query values and token-like path segments redacted (`policies.egress.redact_url`).
    url: str
    #: Header names, each with the value redacted.
    headers: dict[str, str]


class ActionPublic(BaseModel):
    """A stored action as `GET /messages/actions` shows it: a plain model (what was stored was validated
    on the way in), webhook header values redacted."""

    key: str
    name: str
    description: str
    restricted_to_segments: list[str]
    trigger_phrases: list[str]
    parameters: dict[str, Any]
    webhook: WebhookPublic | None
    #: Listed segments that do not exist: while any is listed, the action is withheld from everyone.
    missing_segments: list[str]
    updated_at: datetime


def _webhook(stored: dict[str, Any] | None) -> WebhookPublic | None:
    if stored is None:
        return None
    return WebhookPublic(
        url=redact_url(stored["url"]), headers=dict.fromkeys(stored.get("headers") or {}, REDACTED)
    )


class InstructionPublic(InstructionSpec):
    missing_segments: list[str]
    updated_at: datetime


class ActionsPublic(BaseModel):
    data: list[ActionPublic]


class InstructionsPublic(BaseModel):
    data: list[InstructionPublic]


class ImportedPublic(BaseModel):
    """The keys stored, and the restrictions that name segments that do not exist (by item key)."""

    imported: list[str]
    unknown_segments: dict[str, list[str]]


class ResolveBody(BaseModel):
    contact_key: str | None = Field(default=None, alias="contactKey", max_length=512, pattern=r"^[^\x00]*$")


class WithheldPublic(BaseModel):
    kind: str
    key: str
    missing_segments: list[str]


class ResolvedPublic(BaseModel):
    """What applies to the contact for its next message (the `segmentflow.ResolveMessage` view)."""

    contact_key: str | None
    segments: list[str] | None
    actions: list[str]
    instructions: list[str]
    withheld: list[WithheldPublic]


class RefusalPublic(BaseModel):
    at: datetime
    contact_key: str | None
    action: str
    reason: str
    side: str
    workflow_id: str | None


class RefusalsPublic(BaseModel):
    data: list[RefusalPublic]


def _unique(items: list[Any]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.key in seen:
            raise invalid(["body", index, "key"], f'"{item.key}" appears twice')
        seen.add(item.key)


def _imported(report: ImportReport) -> ImportedPublic:
    return ImportedPublic(imported=report.keys, unknown_segments=report.unknown_segments)


@router.get("/actions", responses=responses(401, 403))
def get_actions(session: ReadSession, _key: MessagesReadKey) -> ActionsPublic:
    """Every action in key order, with the listed segments that no longer exist. Scope `messages:read`."""
    segments = existing_segment_keys(session=session)
    return ActionsPublic(
        data=[
            ActionPublic(
                key=a.key,
                name=a.name,
                description=a.description,
                restricted_to_segments=a.restricted_to_segments,
                trigger_phrases=a.trigger_phrases,
                parameters=a.parameters,
                webhook=_webhook(a.webhook),
                missing_segments=list(missing_segments(a.restricted_to_segments, segments)),
                updated_at=a.updated_at,
            )
            for a in list_actions(session=session)
        ]
    )


@router.post("/actions", responses=responses(400, 401, 403))
def post_actions(
    body: list[ActionSpec], session: WriteSession, _key: MessagesWriteKey, egress: Egress
) -> ImportedPublic:
    """Upsert actions by key (the `segmentflow actions import` format); all or none. A webhook URL the
    egress policy always refuses is a 422 naming it. Scope `messages:write`."""
    _unique(body)
    refused = first_url_refusal(
        (((i, "webhook", "url"), a.webhook.url) for i, a in enumerate(body) if a.webhook is not None), egress
    )
    if refused is not None:
        raise invalid(["body", *refused[0]], refused[1])
    return _imported(upsert_actions(session=session, actions=body, now=now()))


@router.get("/instructions", responses=responses(401, 403))
def get_instructions(session: ReadSession, _key: MessagesReadKey) -> InstructionsPublic:
    """Every AI instruction in key order. Scope `messages:read`."""
    segments = existing_segment_keys(session=session)
    return InstructionsPublic(
        data=[
            InstructionPublic(
                key=i.key,
                text=i.text,
                restricted_to_segments=i.restricted_to_segments,
                missing_segments=list(missing_segments(i.restricted_to_segments, segments)),
                updated_at=i.updated_at,
            )
            for i in list_instructions(session=session)
        ]
    )


@router.post("/instructions", responses=responses(400, 401, 403))
def post_instructions(
    body: list[InstructionSpec], session: WriteSession, _key: MessagesWriteKey
) -> ImportedPublic:
    """Upsert AI instructions by key (the `segmentflow instructions import` format). Scope
    `messages:write`."""
    _unique(body)
    return _imported(upsert_instructions(session=session, instructions=body, now=now()))


def _catalogs(request: Request) -> MessageCatalogCache:
    """The app's catalog cache (one per app: a cache is only valid for one database)."""
    cache: MessageCatalogCache | None = getattr(request.app.state, "message_catalogs", None)
    if cache is None:
        cache = request.app.state.message_catalogs = MessageCatalogCache()
    return cache


def _resolve(session: Session, cache: MessageCatalogCache, contact_key: str | None) -> ResolvedPublic:
    found = resolve_message(session=session, catalog=cache.get(session=session), contact_key=contact_key)
    return ResolvedPublic(
        contact_key=contact_key,
        segments=None if found.segments is None else sorted(found.segments),
        actions=[a.key for a in found.actions],
        instructions=[i.key for i in found.instructions],
        withheld=[
            WithheldPublic(kind=kind, key=w.key, missing_segments=list(w.missing_segments))
            for kind, w in found.withheld
        ],
    )


@router.post("/resolve", responses=responses(400, 401, 403))
def post_resolve(
    body: ResolveBody, request: Request, session: ReadSession, _key: MessagesReadKey
) -> ResolvedPublic:
    """The actions offered and instructions applied to a contact now (`contactKey` null: anonymous).
    Scope `messages:read`."""
    return _resolve(session, _catalogs(request), body.contact_key)


@router.get("/refusals", responses=responses(401, 403))
def get_refusals(
    session: ReadSession, _key: MessagesReadKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> RefusalsPublic:
    """The refusal audit, newest first: when, contact, action, why, which check. Scope `messages:read`."""
    return RefusalsPublic(
        data=[
            RefusalPublic(
                at=r.at,
                contact_key=r.contact_key,
                action=r.action_key,
                reason=r.reason,
                side=r.side,
                workflow_id=r.workflow_id,
            )
            for r in list_refusals(session=session, limit=limit)
        ]
    )
