"""A contact's page: its context JSON, its segments, and for every segment why it is in or out (the rules
engine's `explain`)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from segmentflow.api.deps import WriteSession
from segmentflow.console.web import PREFIX, ConsoleError, Login, page, require
from segmentflow.rules import explain, parse_context
from segmentflow.services.contacts import get_contact
from segmentflow.services.membership import UnknownContactError, contact_segments
from segmentflow.services.segments import SegmentIndexCache

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/contacts")


@router.get("/{fqkey:path}", include_in_schema=False)
def contact_page(request: Request, session: WriteSession, login: Login, fqkey: str) -> Response:
    require(login, "segments:read")
    contact = get_contact(session=session, key=fqkey)
    if contact is None:
        raise ConsoleError(404, f'No contact "{fqkey}".')
    try:
        member_of, computed_at = contact_segments(session=session, contact_key=fqkey)
    except UnknownContactError:
        raise ConsoleError(404, f'No contact "{fqkey}".') from None
    cache: SegmentIndexCache = request.app.state.segment_index
    index = cache.get(session=session)
    context = parse_context(contact.context)
    explanations = []
    for key in sorted(index.compiled):
        compiled = index.compiled[key]
        why = explain(compiled, context)
        rule = None
        if why.rule_index is not None:
            rule = compiled.definition.rules[why.rule_index].to_json()
        explanations.append({"key": key, "stored": key in member_of, "why": why, "rule": rule})
    return page(
        request,
        "contact.html",
        {
            "contact": contact,
            "context_text": json.dumps(contact.context, indent=2, ensure_ascii=False),
            "member_of": member_of,
            "computed_at": computed_at,
            "explanations": explanations,
        },
        login=login,
    )
