"""Sequence pages: every sequence with its status and per-step funnel; one sequence's definition, a
template preview for a chosen contact (the same sandboxed renderer as real sends), recent sends, and
launch and pause behind a confirmation."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from segmentflow.api.deps import WriteSession
from segmentflow.console.web import PREFIX, ConsoleError, Form, Login, check_csrf, now, page, require
from segmentflow.db.tables import Sequence
from segmentflow.policies.sequences import SendStep
from segmentflow.services.contacts import get_contact
from segmentflow.services.membership import contact_segment_set
from segmentflow.services.reports import list_sends
from segmentflow.services.sequences import (
    ProgramCache,
    UnknownSegmentForSequenceError,
    UnknownSequenceError,
    get_sequence,
    launch_sequence,
    list_sequences,
    pause_sequence,
    sequence_status,
)
from segmentflow.services.templates import TemplateError, render_template

__all__ = ["router"]

router = APIRouter(prefix=f"{PREFIX}/sequences")
Action = Literal["launch", "pause"]


def _found(session: Session, key: str) -> Sequence:
    record = get_sequence(session=session, key=key)
    if record is None:
        raise ConsoleError(404, f'No sequence "{key}".')
    return record


@router.get("", include_in_schema=False)
def list_page(request: Request, session: WriteSession, login: Login) -> Response:
    require(login, "sequences:read")
    reports = [sequence_status(session=session, key=r.key) for r in list_sequences(session=session)]
    return page(request, "sequences.html", {"reports": reports}, login=login)


def _previews(
    session: Session, programs: ProgramCache, record: Sequence, contact_key: str
) -> tuple[list[dict[str, Any]], str | None]:
    """Each send step rendered for the contact as a real send renders it: the runner's compiled templates
    (`ProgramCache`), the stored context and the contact's sorted segments."""
    contact = get_contact(session=session, key=contact_key)
    if contact is None:
        return [], f'No contact "{contact_key}".'
    segments = sorted(contact_segment_set(session=session, contact_key=contact_key))
    compiled = programs.get(session=session, key=record.key)
    out = []
    for node in compiled.program.nodes:
        if not isinstance(node.step, SendStep):
            continue
        rendered: dict[str, Any] = {"step": node.index, "channel": node.step.channel}
        for part, template in (
            ("subject", compiled.subjects.get(node.index)),
            ("body", compiled.templates[node.index]),
        ):
            if template is None:
                continue
            try:
                rendered[part] = render_template(template, contact=contact.context, segments=segments)
            except TemplateError as exc:
                rendered[f"{part}_error"] = str(exc)
        out.append(rendered)
    return out, None


@router.get("/{key}", include_in_schema=False)
def sequence_page(
    request: Request,
    session: WriteSession,
    login: Login,
    key: str,
    contact: Annotated[str, Query(max_length=512)] = "",
) -> Response:
    require(login, "sequences:read")
    record = _found(session, key)
    programs: ProgramCache = request.app.state.console_programs
    wanted = contact.strip()
    previews, preview_error = _previews(session, programs, record, wanted) if wanted else ([], None)
    context = {
        "record": record,
        "report": sequence_status(session=session, key=key),
        "definition_text": json.dumps(record.definition, indent=2, ensure_ascii=False),
        "contact": contact,
        "previews": previews,
        "preview_error": preview_error,
        "sends": list_sends(session=session, sequence_id=record.id, limit=20),
    }
    return page(request, "sequence.html", context, login=login)


@router.get("/{key}/{action}", include_in_schema=False)
def confirm(request: Request, session: WriteSession, login: Login, key: str, action: Action) -> Response:
    require(login, "sequences:write")
    record = _found(session, key)
    return page(request, "confirm.html", {"record": record, "action": action}, login=login)


@router.post("/{key}/{action}", include_in_schema=False)
def act(
    request: Request, session: WriteSession, login: Login, form: Form, key: str, action: Action
) -> Response:
    require(login, "sequences:write")
    check_csrf(login, form)
    try:
        if action == "launch":
            launch_sequence(session=session, key=key, now=now())
        else:
            pause_sequence(session=session, key=key, now=now())
    except UnknownSequenceError:
        raise ConsoleError(404, f'No sequence "{key}".') from None
    except UnknownSegmentForSequenceError as exc:
        raise ConsoleError(409, str(exc.args[0])) from None
    return RedirectResponse(f"{PREFIX}/sequences/{key}", status_code=303)
