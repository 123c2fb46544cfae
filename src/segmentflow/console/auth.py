"""Sign in with an API key (a server-side session behind an HttpOnly, SameSite=Strict cookie), sign out,
and the contact lookup box every page carries."""

from __future__ import annotations

import hmac
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from segmentflow.api.deps import WriteSession
from segmentflow.console.web import (
    COOKIE,
    PREFIX,
    SIGNIN_COOKIE,
    Form,
    Login,
    check_csrf,
    field,
    new_signin_token,
    now,
    page,
)
from segmentflow.services.console_sessions import close_session, open_session, resume_session

__all__ = ["router"]

router = APIRouter(prefix=PREFIX)


def _next(target: str) -> str:
    """Only a path inside the console (never another site: `//host` or a scheme)."""
    ok = target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target
    return target if ok else f"{PREFIX}/segments"


#: Where a sign-in lands: the segments, or the first page a key without `segments:read` may see.
_LANDINGS = (
    ("segments:read", "segments"),
    ("sequences:read", "sequences"),
    ("sla:read", "sla"),
    ("messages:read", "messages"),
    ("reports:read", "reports"),
)


def _landing(scopes: frozenset[str]) -> str:
    return next((f"{PREFIX}/{path}" for scope, path in _LANDINGS if scope in scopes), f"{PREFIX}/segments")


def _sign_in_page(request: Request, next_path: str, error: str | None, status: int = 200) -> Response:
    token = new_signin_token()
    response = page(
        request, "signin.html", {"csrf": token, "next": next_path, "error": error}, login=None, status=status
    )
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    return response


@router.get("/", include_in_schema=False)
def sign_in_form(
    request: Request, session: WriteSession, next_path: Annotated[str, Query(alias="next")] = ""
) -> Response:
    cookie = request.cookies.get(COOKIE)
    idle = request.app.state.console_idle
    if cookie and resume_session(session=session, cookie=cookie, now=now(), idle=idle) is not None:
        return RedirectResponse(_next(next_path), status_code=303)
    return _sign_in_page(request, next_path, None)


@router.post("/sign-in", include_in_schema=False)
def sign_in(request: Request, session: WriteSession, form: Form) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    sent = field(form, "csrf")
    next_path = field(form, "next")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _sign_in_page(request, next_path, "The sign-in form expired: please try again.", 403)
    opened = open_session(session=session, token=field(form, "token")[:200], now=now())
    if opened is None:
        return _sign_in_page(request, next_path, "Unknown or revoked API key.", 401)
    cookie, login = opened
    response = RedirectResponse(
        _next(next_path) if next_path else _landing(login.key.scopes), status_code=303
    )
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="strict", secure=request.url.scheme == "https", path=PREFIX
    )
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return response


@router.post("/sign-out", include_in_schema=False)
def sign_out(request: Request, session: WriteSession, login: Login, form: Form) -> Response:
    check_csrf(login, form)
    close_session(session=session, cookie=request.cookies.get(COOKIE, ""))
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


@router.get("/lookup", include_in_schema=False)
def lookup(login: Login, contact: Annotated[str, Query(max_length=512)] = "") -> Response:
    if not contact.strip():
        return RedirectResponse(f"{PREFIX}/segments", status_code=303)
    return RedirectResponse(f"{PREFIX}/contacts/{quote(contact.strip(), safe='')}", status_code=303)
