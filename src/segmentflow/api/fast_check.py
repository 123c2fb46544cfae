"""The membership check's fast path. `GET /contacts/segments/{segment_id}/contacts/{contact_id}` is the
API's hottest route; a plain ASGI middleware just inside the guard (so the token check, the failure limit,
the body limit, the metrics and every header are exactly as for any route) answers its plain case itself:
no FastAPI routing and dependency solving, no threadpool hop for a sync endpoint and its response
validation. On PostgreSQL the read runs on the event loop (`AsyncReadPool`), so no thread is involved.

It answers only when the router would give the request to `check_contact` (a GET, the route's path and
no earlier route's), the parameters pass the route's own checks, the key holds `segments:read`, and the
contact was computed already; its answer has the same bytes and headers as the route's. Everything else
(a 403, 404 or 422, a contact's first computation, a database error) passes through to the route, which
answers as it always has."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from segmentflow.api.deps import CONTACT_ID_MAX, SEGMENT_REF_MAX
from segmentflow.api.guard import verified_key
from segmentflow.api.models import MembershipPublic
from segmentflow.services.membership import MembershipCheck

__all__ = ["CheckFastPath", "CheckReader"]

#: Reads one computed membership (segment reference, contact key): None when the route must answer.
CheckReader = Callable[[str, str], Awaitable[MembershipCheck | None]]

_SCOPE = "segments:read"
_HEADERS = [(b"content-type", b"application/json")]
# The route's own parameter checks (`segmentflow.api.deps.SegmentRef` / `ContactId`): the regex of the
# route excludes "/" from the segment; NUL and the lengths (the same constants) are checked here.


def serialize(check: MembershipCheck) -> bytes:
    """The route's response body for `check`, byte for byte (FastAPI dumps the response model by alias)."""
    model = MembershipPublic.model_validate(check, from_attributes=True)
    return model.__pydantic_serializer__.to_json(model, by_alias=True)


class CheckFastPath:
    """See the module docstring. `route` is the check's route; `earlier` are the routes the router tries
    before it whose paths can look like a check (the memberships router's `/contacts/{contact_id}`)."""

    def __init__(
        self, app: ASGIApp, *, route: APIRoute, earlier: Sequence[APIRoute], read: CheckReader
    ) -> None:
        self.app = app
        self._route = route
        self._regex = route.path_regex
        self._earlier: tuple[re.Pattern[str], ...] = tuple(
            r.path_regex for r in earlier if "GET" in (r.methods or ())
        )
        self._read = read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            match = self._regex.match(path)
            if match is not None and not any(rx.match(path) for rx in self._earlier):
                body = await self._answer(scope, match["segment_id"], match["contact_id"])
                if body is not None:
                    scope["route"] = self._route  # the metrics label it by its template, as routed
                    headers = [(b"content-length", str(len(body)).encode()), *_HEADERS]
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, segment: str, contact: str) -> bytes | None:
        key = verified_key(scope)
        if key is None or _SCOPE not in key.scopes:
            return None
        if not contact or len(segment) > SEGMENT_REF_MAX or len(contact) > CONTACT_ID_MAX:
            return None
        if "\x00" in segment or "\x00" in contact:
            return None
        check = await self._read(segment, contact)
        return None if check is None else serialize(check)
