"""Contacts: upsert a LaunchDarkly context (memberships recomputed in the request) or delete it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response, status

from segmentflow.api.deps import ContactId, ContactsKey, IndexCache, WriteSession, now
from segmentflow.api.errors import invalid, responses
from segmentflow.api.json_body import StrictJsonRoute
from segmentflow.api.models import ContactDeleted, ContactPublic
from segmentflow.rules import parse_context
from segmentflow.services.contact_admin import delete_contact, save_contact
from segmentflow.services.membership import list_contact_segments

__all__ = ["router"]

router = APIRouter(prefix="/contacts", tags=["contacts"], route_class=StrictJsonRoute)

ContextBody = Annotated[
    dict[str, Any],
    Body(
        description="A LaunchDarkly context (single-kind, multi-kind or the legacy user shape).",
        examples=[{"kind": "user", "key": "u1", "plan": "vip"}],
    ),
]


@router.put(
    "/{contact_id:path}",
    responses={
        **responses(400, 401, 403),
        status.HTTP_201_CREATED: {"model": ContactPublic, "description": "Created."},
    },
)
def upsert_contact(
    contact_id: ContactId,
    body: ContextBody,
    session: WriteSession,
    _key: ContactsKey,
    indexes: IndexCache,
    response: Response,
) -> ContactPublic:
    """Insert or replace a contact; its memberships are recomputed before the response, so the next read
    sees them. The context's fully-qualified key must be `contact_id`. Scope `contacts:write`."""
    context = parse_context(body)
    if context.fully_qualified_key != contact_id:
        raise invalid(
            ["path", "contact_id"],
            f'the context\'s fully-qualified key is "{context.fully_qualified_key}", not "{contact_id}"',
        )
    contact, created = save_contact(session=session, context=context, indexes=indexes, now=now())
    assert contact.id is not None
    if created:
        response.status_code = status.HTTP_201_CREATED
    return ContactPublic(
        key=contact.key,
        kinds=contact.kinds.split(","),
        context=contact.context,
        updated_at=contact.updated_at,
        computed_at=contact.computed_at,
        segments=list_contact_segments(session=session, contact_id=contact.id),
    )


@router.delete("/{contact_id:path}", responses=responses(401, 403, 404))
def remove_contact(contact_id: ContactId, session: WriteSession, _key: ContactsKey) -> ContactDeleted:
    """Delete a contact; each of its memberships gets an `exited` event first. Scope `contacts:write`."""
    exited = delete_contact(session=session, key=contact_id, now=now())
    return ContactDeleted(key=contact_id, exited=exited)
