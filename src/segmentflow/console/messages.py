"""The message-restrictions page: actions and instructions with the segments they are restricted to, what
applies to one contact ("as contact X"), and the refusal audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from segmentflow.api.deps import WriteSession
from segmentflow.console.web import PREFIX, Login, page, require
from segmentflow.policies.restrictions import missing_segments
from segmentflow.services.messages import (
    MessageCatalogCache,
    existing_segment_keys,
    list_actions,
    list_instructions,
    list_refusals,
    resolve_message,
)

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/messages")


@router.get("", include_in_schema=False)
def messages_page(
    request: Request, session: WriteSession, login: Login, contact: Annotated[str, Query(max_length=512)] = ""
) -> Response:
    require(login, "messages:read")
    existing = existing_segment_keys(session=session)
    resolution = None
    if contact.strip():
        cache: MessageCatalogCache | None = getattr(request.app.state, "message_catalogs", None)
        if cache is None:
            cache = request.app.state.message_catalogs = MessageCatalogCache()
        resolution = resolve_message(
            session=session, catalog=cache.get(session=session), contact_key=contact.strip()
        )
    context = {
        "actions": [
            (a, missing_segments(a.restricted_to_segments, existing)) for a in list_actions(session=session)
        ],
        "instructions": [
            (i, missing_segments(i.restricted_to_segments, existing))
            for i in list_instructions(session=session)
        ],
        "contact": contact,
        "resolution": resolution,
        "refusals": list_refusals(session=session, limit=50),
    }
    return page(request, "messages.html", context, login=login)
