"""Segment pages: the list (members, 24-hour entries and exits, a 30-day chart), the editor (rules builder
and raw JSON in step, audience preview, save, conflict), and one segment's page."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from segmentflow.api.deps import WriteSession
from segmentflow.api.models import SegmentCreate, SegmentReplace
from segmentflow.console.builder import (
    DEFINITION_FIELDS,
    OPERATOR_NAMES,
    apply_edit,
    builder_view,
    definition_from_fields,
)
from segmentflow.console.charts import sparkline
from segmentflow.console.jobs import Job, JobBoard, owner_of
from segmentflow.console.web import PREFIX, ConsoleError, Form, Login, check_csrf, field, now, page, require
from segmentflow.console.words import describe_definition
from segmentflow.db.tables import SegmentRecord
from segmentflow.rules import RuleError, segment_problems
from segmentflow.services import segment_admin
from segmentflow.services.membership import member_counts
from segmentflow.services.preview import SegmentPreview, candidate_segment, count_contacts, preview_segment
from segmentflow.services.reports import SegmentTrendCache, list_members, list_segment_changes
from segmentflow.services.segments import get_segment, list_segments
from segmentflow.services.usage import segment_usage

__all__ = ["jobs_router", "router"]

router = APIRouter(prefix=f"{PREFIX}/segments")
#: Progress of the editor's long operations (`console.jobs`).
jobs_router = APIRouter(prefix=f"{PREFIX}/jobs")

_EMPTY: dict[str, Any] = {
    "rules": [],
    "included": [],
    "excluded": [],
    "includedContexts": [],
    "excludedContexts": [],
}
_PAGE = 50


def _definition(record: SegmentRecord) -> dict[str, Any]:
    """The `definition` object the API takes, from a stored segment."""
    stored = record.definition
    return {k: stored[k] for k in DEFINITION_FIELDS if k in stored} | {
        k: v
        for k, v in stored.items()
        if k not in ("key", "name", "description", "version", "deleted", *DEFINITION_FIELDS)
    }


def _found(session: Session, key: str) -> SegmentRecord:
    record = get_segment(session=session, ref=key)
    if record is None:
        raise ConsoleError(404, f'No segment "{key}".')
    return record


@router.get("", include_in_schema=False)
def list_page(
    request: Request, session: WriteSession, login: Login, q: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    require(login, "segments:read")
    cache: SegmentTrendCache = request.app.state.segment_trends
    trends = cache.get(session=session, now=now(), days=30)
    needle = q.strip().lower()
    rows = [
        {"a": t.activity, "spark": sparkline(t.daily_members)}
        for t in trends
        if not needle or needle in t.activity.key.lower() or needle in t.activity.name.lower()
    ]
    return page(request, "segments.html", {"rows": rows, "q": q, "total": len(trends)}, login=login)


def _editor(
    request: Request,
    session: Session,
    login: Login,
    *,
    key: str,
    name: str,
    description: str,
    definition: dict[str, Any],
    original: str,
    version: int | None,
    errors: list[RuleError | str] | None = None,
    preview: SegmentPreview | None = None,
    source: str = "builder",
    status: int = 200,
    conflict: SegmentRecord | None = None,
    raw_text: str | None = None,
    job: Job | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    errors = errors or []
    rule_errors = [e for e in errors if isinstance(e, RuleError)]
    context = {
        "key": key,
        "name": name,
        "description": description,
        "definition_text": raw_text
        if raw_text is not None
        else json.dumps(definition, indent=2, ensure_ascii=False),
        "builder": builder_view(definition),
        "operators": OPERATOR_NAMES,
        "segment_keys": [r.key for r in list_segments(session=session) if r.key != (original or key)],
        "original": original,
        "version": version,
        "errors": [str(e) for e in errors],
        "rule_errors": {
            (e.rule_index, e.clause_index): e.detail for e in rule_errors if e.rule_index is not None
        },
        "preview": preview,
        "job": job,
        "source": source,
        "conflict": conflict,
        "conflict_text": None
        if conflict is None
        else json.dumps(_definition(conflict), indent=2, ensure_ascii=False),
    }
    return page(request, "editor.html", context, login=login, status=status, headers=headers)


@router.get("/new", include_in_schema=False)
def new(request: Request, session: WriteSession, login: Login) -> Response:
    require(login, "segments:write")
    return _editor(
        request,
        session,
        login,
        key="",
        name="",
        description="",
        definition=dict(_EMPTY),
        original="",
        version=None,
    )


@router.get("/{key}/edit", include_in_schema=False)
def edit(request: Request, session: WriteSession, login: Login, key: str) -> Response:
    require(login, "segments:write")
    record = _found(session, key)
    return _editor(
        request,
        session,
        login,
        key=record.key,
        name=record.name,
        description=record.description or "",
        definition=_definition(record),
        original=record.key,
        version=record.version,
    )


def _posted_definition(form: Any, source: str) -> tuple[dict[str, Any], list[RuleError | str]]:
    """The definition from the tab the operator used (the builder's fields or the raw JSON). Raw JSON that
    does not parse is an error, and the builder's fields stand in for it meanwhile (the page keeps the
    text as typed)."""
    text = field(form, "definition")
    error = None
    try:
        parsed = json.loads(text) if text.strip() else dict(_EMPTY)
    except ValueError as exc:
        parsed, error = {}, f"definition: not JSON ({exc})"
    if error is None and not isinstance(parsed, dict):
        parsed, error = {}, "definition: must be a JSON object"
    if source == "json" and error is None:
        return parsed, []
    built = definition_from_fields(lambda n: field(form, n), form.getlist, parsed)
    return built, [error] if source == "json" and error is not None else []


def _refused(exc: ValidationError, key: str) -> RuleError:
    """The API's first validation error as a `RuleError` naming the rule and clause (shown beside them)."""
    err = exc.errors()[0]
    loc = [part for part in err["loc"] if part != "definition"]
    rule = clause = None
    rest: list[str] = []
    for index, part in enumerate(loc):
        previous = loc[index - 1] if index else None
        if isinstance(part, int) and previous == "rules":
            rule = part
        elif isinstance(part, int) and previous == "clauses":
            clause = part
        elif part not in ("rules", "clauses"):
            rest.append(str(part))
    where = ".".join(rest)
    return RuleError(
        err["msg"], segment_key=key, rule_index=rule, clause_index=clause, field=f'field "{where}"'
    )


def _validated(
    *, original: str, key: str, name: str, description: str, definition: dict[str, Any]
) -> tuple[str | None, str | None, dict[str, Any]]:
    """The fields through the API's own request models (`SegmentCreate` / `SegmentReplace`): the same checks
    and messages as `POST` / `PUT /contacts/segments`. Returns name, description and the wire definition."""
    fields = {"name": name or None, "description": description or None, "definition": definition}
    try:
        body = (
            SegmentReplace.model_validate(fields)
            if original
            else SegmentCreate.model_validate({"key": key, **fields})
        )
    except ValidationError as exc:
        raise _refused(exc, key) from None
    return body.name, body.description, body.definition.to_wire()


def _store(
    session: Session,
    *,
    original: str,
    key: str,
    name: str,
    description: str,
    definition: dict[str, Any],
    version: int | None,
    progress: segment_admin.Progress | None = None,
) -> segment_admin.SegmentSaved:
    """The console's one call into the segment write path (the API's own service functions)."""
    name_, description_, wire = _validated(
        original=original, key=key, name=name, description=description, definition=definition
    )
    if original:
        return segment_admin.replace_segment(
            session=session,
            ref=original,
            name=name_,
            description=description_,
            definition=wire,
            expected_version=version,
            now=now(),
            progress=progress,
        )
    return segment_admin.create_segment(
        session=session,
        key=key,
        name=name_,
        description=description_,
        definition=wire,
        now=now(),
        progress=progress,
    )


@router.post("/editor", include_in_schema=False)
def editor_post(request: Request, session: WriteSession, login: Login, form: Form) -> Response:
    """Every editor button posts here: a builder edit or sync (re-render), `preview`, or `save`."""
    require(login, "segments:write")
    check_csrf(login, form)
    original = field(form, "original")
    version_text = field(form, "version")
    version = int(version_text) if version_text.isdigit() else None
    key = original or field(form, "key").strip()
    name, description = field(form, "name").strip(), field(form, "description").strip()
    sync = field(form, "sync")
    source = sync or ("json" if field(form, "source") == "json" else "builder")
    definition, errors = _posted_definition(form, source)
    shown_source = field(form, "source") or "builder"
    common: dict[str, Any] = {
        "key": key,
        "name": name,
        "description": description,
        "original": original,
        "version": version,
        "source": shown_source,
    }
    if errors:  # the raw JSON does not parse: shown with the text as typed
        raw = field(form, "definition")
        return _editor(
            request, session, login, definition=definition, errors=errors, status=422, raw_text=raw, **common
        )
    edit_op = field(form, "edit")
    if edit_op:
        definition = apply_edit(definition, edit_op)
    if edit_op or sync:
        return _editor(request, session, login, definition=definition, **common)
    if not key:
        return _editor(
            request,
            session,
            login,
            definition=definition,
            errors=["key: a segment needs a key"],
            status=422,
            **common,
        )
    jobs = _board(request) if request.headers.get("hx-request") else None
    try:
        if "preview" in form:
            name_, description_, wire = _validated(
                original=original, key=key, name=name, description=description, definition=definition
            )
            candidate = candidate_segment(key=key, name=name_, description=description_, definition=wire)
            if jobs is not None:
                job = _start_preview(
                    request, session, login, jobs, candidate, {"definition": definition, **common}
                )
                if job is not None:
                    return _editor(request, session, login, definition=definition, job=job, **common)
            result = preview_segment(session=session, segment=candidate)
            return _editor(request, session, login, definition=definition, preview=result, **common)
        if "save" not in form:
            return _editor(request, session, login, definition=definition, **common)
        if jobs is not None:
            job = _start_save(request, session, login, jobs, {"definition": definition, **common})
            if job is not None:
                return _editor(request, session, login, definition=definition, job=job, **common)
        record = _store(
            session,
            original=original,
            key=key,
            name=name,
            description=description,
            definition=definition,
            version=version,
        ).record
    except RuleError as exc:
        return _editor(request, session, login, definition=definition, errors=[exc], status=422, **common)
    except segment_admin.VersionConflictError:
        current = _found(session, original)
        return _editor(request, session, login, definition=definition, conflict=current, status=409, **common)
    except segment_admin.ConflictError as exc:
        return _editor(
            request, session, login, definition=definition, errors=[str(exc)], status=409, **common
        )
    target = f"{PREFIX}/segments/{quote(record.key, safe='')}"
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def _board(request: Request) -> JobBoard | None:
    """The process's job board, or None where a job cannot have a connection of its own (an in-memory
    SQLite database is one shared connection)."""
    if isinstance(request.app.state.engine.pool, StaticPool):
        return None
    board: JobBoard = request.app.state.console_jobs
    return board


def _start_preview(
    request: Request, session: Session, login: Login, jobs: JobBoard, candidate: Any, context: dict[str, Any]
) -> Job | None:
    """The preview in a thread of its own, on a session of its own that only reads."""
    engine = request.app.state.engine

    def work(job: Job) -> SegmentPreview:
        def step(so_far: SegmentPreview) -> None:
            job.done, job.running = so_far.contacts, so_far.members

        with Session(engine) as own:
            return preview_segment(session=own, segment=candidate, progress=step)

    total = count_contacts(session=session)
    return jobs.start(owner=owner_of(login.csrf), kind="preview", total=total, context=context, work=work)


def _start_save(
    request: Request, session: Session, login: Login, jobs: JobBoard, context: dict[str, Any]
) -> Job | None:
    """The save and its recompute in a thread of its own, in one transaction of its own, as the request
    would have made it."""
    engine = request.app.state.engine
    fields = {k: context[k] for k in ("original", "key", "name", "description", "definition", "version")}

    def work(job: Job) -> str:
        def step(done: int) -> None:
            job.done = done

        with Session(engine, expire_on_commit=False) as own, own.begin():
            return _store(own, progress=step, **fields).record.key

    total = count_contacts(session=session)
    return jobs.start(owner=owner_of(login.csrf), kind="save", total=total, context=context, work=work)


@jobs_router.get("/{token}", include_in_schema=False)
def job_progress(
    request: Request,
    session: WriteSession,
    login: Login,
    token: Annotated[str, Path(max_length=64)],
) -> Response:
    """A running job's progress (the page polls it), or its outcome once it ended: the preview, the
    segment's page after a save, or the editor with what went wrong."""
    require(login, "segments:write")
    board: JobBoard = request.app.state.console_jobs
    job = board.get(token, owner_of(login.csrf))
    if job is None or not job.finished:
        return page(request, "job.html", {"job": job, "token": token, "preview": None}, login=login)
    context = dict(job.context)
    definition = context.pop("definition")
    # The editor replaces the one on the page (its form and the outcome), as a post's answer would.
    editor = {"HX-Retarget": "#editor", "HX-Reswap": "outerHTML", "HX-Reselect": "#editor"}
    error = job.error
    if error is None and job.kind == "preview":
        return page(request, "job.html", {"job": job, "token": token, "preview": job.outcome}, login=login)
    if error is None:
        return Response(
            status_code=200, headers={"HX-Redirect": f"{PREFIX}/segments/{quote(job.outcome, safe='')}"}
        )
    if isinstance(error, RuleError):
        errors: list[RuleError | str] = [error]
        return _editor(
            request,
            session,
            login,
            definition=definition,
            errors=errors,
            status=422,
            headers=editor,
            **context,
        )
    if isinstance(error, segment_admin.VersionConflictError):
        current = _found(session, context["original"])
        return _editor(
            request,
            session,
            login,
            definition=definition,
            conflict=current,
            status=409,
            headers=editor,
            **context,
        )
    if isinstance(error, segment_admin.ConflictError):
        return _editor(
            request,
            session,
            login,
            definition=definition,
            errors=[str(error)],
            status=409,
            headers=editor,
            **context,
        )
    raise error


@router.get("/{key}", include_in_schema=False)
def segment_page(
    request: Request,
    session: WriteSession,
    login: Login,
    key: str,
    after: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    require(login, "segments:read")
    record = _found(session, key)
    members = list_members(session=session, segment_id=record.id, after=after, limit=_PAGE + 1)
    context = {
        "record": record,
        "definition_text": json.dumps(_definition(record), indent=2, ensure_ascii=False),
        # Clause values kept that never match (LaunchDarkly accepts them): shown, as the CLI and API warn.
        "warnings": [str(w) for w in segment_problems(record.definition_model(), lenient=True)[1]],
        "words": describe_definition(record.definition),
        "members": members[:_PAGE],
        "next_after": members[_PAGE - 1].contact_id if len(members) > _PAGE else None,
        "after": after,
        "count": member_counts(session=session, segment_ids=[record.id]).get(record.id, 0),
        "changes": list_segment_changes(session=session, segment_id=record.id, limit=20),
        "usage": segment_usage(session=session, key=record.key),
    }
    return page(request, "segment.html", context, login=login)
