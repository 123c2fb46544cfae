"""segmentflow's MCP server (the official `mcp` SDK): membership checks, segments, explanations and the
segment report as tools for a model. Each tool is a thin layer over the same services the HTTP API calls,
and answers in the API's shapes.

Over stdio the server trusts its caller (the local process that started it) and checks no key. Over
streamable HTTP (`/mcp`) every request needs `Authorization: Bearer <API key>` (401 without a live key),
and each tool checks the scope its HTTP twin needs: `segments:read` for segments and memberships,
`reports:read` for the report. An unknown segment or contact, a missing scope or a bad window is a tool
error with a message the model can act on, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field
from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from segmentflow.api.models import ContactSegmentsPublic, MembershipPublic, SegmentsPublic
from segmentflow.api.segments import public_segments
from segmentflow.db.tables import SegmentRecord
from segmentflow.rules import ContextError, parse_context
from segmentflow.rules.compile import Explanation
from segmentflow.services import reporting
from segmentflow.services.contacts import get_contact
from segmentflow.services.keys import VerifiedKey, verify_token
from segmentflow.services.membership import (
    UnknownContactError,
    UnknownSegmentError,
    check_membership,
    contact_segments,
)
from segmentflow.services.reporting import ReportError
from segmentflow.services.segments import SegmentIndexCache, page_segments
from segmentflow.services.segments import get_segment as find_segment

__all__ = ["TOOLS", "build_server", "http_app", "serve_http", "serve_stdio"]

T = TypeVar("T")

#: Every tool, with the scope it needs over HTTP.
TOOLS: dict[str, str] = {
    "check_contact_in_segment": "segments:read",
    "list_segments": "segments:read",
    "get_segment": "segments:read",
    "list_contact_segments": "segments:read",
    "explain_membership": "segments:read",
    "segment_report": "reports:read",
}

SegmentArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        pattern=r"^[^\x00]+$",
        description='The segment\'s key (e.g. "vip") or its UUID id.',
    ),
]
ContactArg = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^[^\x00]+$",
        description='The contact\'s fully-qualified key: the plain key for a user (e.g. "alice"), '
        '"kind:key" for other kinds (e.g. "organization:acme").',
    ),
]


def _bearer(request: Any) -> str | None:
    header = request.headers.get("authorization", "") if request is not None else ""
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class _RequireKey:
    """ASGI middleware: 401 for an HTTP request without a live API key (the tools then check scopes)."""

    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    def _verify(self, token: str) -> VerifiedKey | None:
        with Session(self.engine) as session:
            return verify_token(session=session, token=token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            token = _bearer(Request(scope))
            key = await anyio.to_thread.run_sync(self._verify, token) if token else None
            if key is None:
                detail = "unknown or revoked API key" if token else "missing Bearer token"
                response = JSONResponse(
                    {"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _explanation_words(found: Explanation, contact: str, rules: list[dict[str, Any]]) -> str:
    segment = f'segment "{found.segment_key}"'
    kind = f" (as its {found.context_kind} context)" if found.context_kind else ""
    if found.reason == "included":
        return f'"{contact}" is in {segment}: it is listed in the segment\'s included targets{kind}.'
    if found.reason == "excluded":
        return (
            f'"{contact}" is not in {segment}: it is listed in the segment\'s excluded targets{kind}, '
            "which win over its rules."
        )
    if found.reason == "rule":
        rule_id = f' (id "{found.rule_id}")' if found.rule_id else ""
        return f'"{contact}" is in {segment}: rule {found.rule_index}{rule_id} matched{kind}.'
    checked = f"none of its {len(rules)} rule(s) matched" if rules else "it has no rules"
    return f'"{contact}" is not in {segment}: no target list names it and {checked}.'


def build_server(engine: Engine, *, authorize: bool) -> MCPServer:
    """The server over `engine`. `authorize`: check each call's API key scope (HTTP); off for stdio."""
    server = MCPServer(
        "segmentflow",
        instructions="Contact segments (LaunchDarkly's rule model) with precomputed memberships: check "
        "whether a contact is in a segment, list and read segments, explain a membership, and report "
        "conversations, CSAT, handoff rate and SLA events per segment.",
    )
    indexes = SegmentIndexCache()

    def require(ctx: Context, scope: str) -> None:
        if not authorize:
            return
        token = _bearer(ctx.request_context.request)
        if token is None:
            raise ToolError("missing Bearer API key")
        with Session(engine) as session:
            key = verify_token(session=session, token=token)
        if key is None:
            raise ToolError("unknown or revoked API key")
        if scope not in key.scopes:
            raise ToolError(f'this API key lacks the "{scope}" scope')

    async def run(ctx: Context, scope: str, work: Callable[[Session], T]) -> T:
        def in_transaction() -> T:
            require(ctx, scope)
            with Session(engine, expire_on_commit=False) as session, session.begin():
                try:
                    return work(session)
                except (UnknownSegmentError, UnknownContactError, ReportError) as exc:
                    raise ToolError(str(exc)) from None

        return await anyio.to_thread.run_sync(in_transaction)

    def record_of(session: Session, ref: str) -> SegmentRecord:
        record = find_segment(session=session, ref=ref)
        if record is None:
            raise UnknownSegmentError(f'unknown segment "{ref}": list_segments shows the keys there are')
        return record

    @server.tool()
    async def check_contact_in_segment(
        segment: SegmentArg, contact: ContactArg, ctx: Context
    ) -> dict[str, Any]:
        """Is the contact a member of the segment? Answers from the precomputed memberships (a contact
        never computed is computed now): `isMember`, the segment's `segmentKey` and `segmentId`, the
        `contactKey` and `computedAt` (when the membership was last computed). Use it to gate a feature or
        pick a branch for one contact."""

        def work(session: Session) -> dict[str, Any]:
            result = check_membership(session=session, segment_ref=segment, contact_key=contact)
            public = MembershipPublic.model_validate(result, from_attributes=True)
            return public.model_dump(mode="json", by_alias=True)

        return await run(ctx, "segments:read", work)

    @server.tool()
    async def list_segments(
        ctx: Context,
        page: Annotated[int, Field(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
        limit: Annotated[int, Field(ge=1, le=100, description="Segments per page (at most 100).")] = 50,
    ) -> dict[str, Any]:
        """The segments in key order, a page at a time: `data` (each with key, name, description,
        version, LaunchDarkly definition and member_count), `total`, `page`, `limit` and `next_page`
        (null on the last page)."""

        def work(session: Session) -> dict[str, Any]:
            records, total = page_segments(session=session, offset=(page - 1) * limit, limit=limit)
            body = SegmentsPublic(
                data=public_segments(session, records),
                total=total,
                page=page,
                limit=limit,
                next_page=page + 1 if page * limit < total else None,
            )
            return body.model_dump(mode="json")

        return await run(ctx, "segments:read", work)

    @server.tool()
    async def get_segment(segment: SegmentArg, ctx: Context) -> dict[str, Any]:
        """One segment by key or UUID id: key, name, description, version, its LaunchDarkly definition
        (included/excluded targets and rules) and member_count."""

        def work(session: Session) -> dict[str, Any]:
            return public_segments(session, [record_of(session, segment)])[0].model_dump(mode="json")

        return await run(ctx, "segments:read", work)

    @server.tool()
    async def list_contact_segments(contact: ContactArg, ctx: Context) -> dict[str, Any]:
        """The segments a contact belongs to (`data`, in key order), its `contact_key` and `computed_at`
        (computing its memberships now if they never were)."""

        def work(session: Session) -> dict[str, Any]:
            keys, computed_at = contact_segments(session=session, contact_key=contact)
            records = [record_of(session, key) for key in keys]
            body = ContactSegmentsPublic(
                data=public_segments(session, records), contact_key=contact, computed_at=computed_at
            )
            return body.model_dump(mode="json")

        return await run(ctx, "segments:read", work)

    @server.tool()
    async def explain_membership(segment: SegmentArg, contact: ContactArg, ctx: Context) -> dict[str, Any]:
        """Why the contact is or is not in the segment: evaluates the segment's current definition against
        the stored contact and says which target list or rule decided, in words (`explanation`) and as
        data (`isMember`, `reason`: included | excluded | rule | no_match, `ruleIndex` from 0, `ruleId`,
        `contextKind`, and the `rule` itself). `stored` is the precomputed answer the other tools give,
        which can lag a definition changed since the last recompute."""

        def work(session: Session) -> dict[str, Any]:
            record = record_of(session, segment)
            stored = get_contact(session=session, key=contact)
            if stored is None:
                raise UnknownContactError(f'unknown contact "{contact}"')
            try:
                context = parse_context(stored.context)
            except ContextError as exc:  # stored contacts were validated; a defensive, clear message
                raise ToolError(f'contact "{contact}" cannot be evaluated: {exc}') from None
            compiled = indexes.get(session=session).compiled[record.key]
            found = compiled.explain(context)
            rules: list[dict[str, Any]] = list(record.definition.get("rules") or [])
            check = check_membership(session=session, segment_ref=str(record.id), contact_key=contact)
            return {
                "segmentKey": record.key,
                "segmentId": str(record.id),
                "contactKey": contact,
                "isMember": found.is_member,
                "reason": found.reason,
                "ruleIndex": found.rule_index,
                "ruleId": found.rule_id,
                "rule": rules[found.rule_index] if found.rule_index is not None else None,
                "contextKind": found.context_kind,
                "explanation": _explanation_words(found, contact, rules),
                "stored": {"isMember": check.is_member, "computedAt": check.computed_at.isoformat()},
            }

        return await run(ctx, "segments:read", work)

    @server.tool()
    async def segment_report(
        since: Annotated[datetime, Field(description="Window start, inclusive (RFC 3339, with offset).")],
        until: Annotated[datetime, Field(description="Window end, exclusive (RFC 3339, with offset).")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Conversations, handoff rate, CSAT (responses, average, share satisfied = 4 or 5) and SLA
        warnings/breaches per segment over [since, until), each conversation counted under the segments
        its contact was in at its time ("-": anonymous, unknown or in no segment); `members` at `until`;
        `overall` counts each conversation once. The same body as GET /reports/segments."""
        if since.tzinfo is None or until.tzinfo is None:
            raise ToolError("since and until need a UTC offset (e.g. 2026-03-01T00:00:00Z)")

        def work(session: Session) -> dict[str, Any]:
            return reporting.segment_report(session=session, since=since, until=until).to_json()

        return await run(ctx, "reports:read", work)

    return server


def http_app(engine: Engine, *, host: str = "127.0.0.1") -> ASGIApp:
    """The streamable HTTP app (`/mcp`) served on `host`, behind the API-key check."""
    server = build_server(engine, authorize=True)
    return _RequireKey(server.streamable_http_app(streamable_http_path="/mcp", host=host), engine)


def serve_stdio(engine: Engine) -> None:
    build_server(engine, authorize=False).run("stdio")


def serve_http(engine: Engine, *, host: str, port: int) -> None:
    uvicorn.run(http_app(engine, host=host), host=host, port=port, log_level="warning")
