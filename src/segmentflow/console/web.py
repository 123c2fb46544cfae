"""What every console page shares: the Jinja2 environment (autoescape on for every template), the signed-in
operator as a dependency, scope and CSRF checks, the security headers, and the error pages."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segmentflow.api.deps import WriteSession
from segmentflow.console.words import describe_clause
from segmentflow.services.console_sessions import ConsoleLogin, resume_session

__all__ = [
    "COOKIE",
    "CSP",
    "ConsoleError",
    "Form",
    "Login",
    "SecurityHeaders",
    "check_csrf",
    "now",
    "page",
    "require",
]

COOKIE = "sf_console"
#: The sign-in form's CSRF token (there is no session yet): a cookie the form must echo.
SIGNIN_COOKIE = "sf_console_signin"
PREFIX = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]

# Autoescape everywhere: contact attributes, segment names and rule values are data from outside.
ENV = Environment(
    loader=PackageLoader("segmentflow.console", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["q"] = lambda value: quote(str(value), safe="")
ENV.globals["describe_clause"] = describe_clause


def now() -> datetime:
    return datetime.now(UTC)


class SecurityHeaders:
    """ASGI middleware: the console's security headers on every response under `/ui`, error pages and
    static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                names = {name.lower() for name, _ in message["headers"]}
                message["headers"] = list(message["headers"]) + [h for h in _HEADERS if h[0] not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


class ConsoleError(Exception):
    """A console request refused: rendered as an error page with this status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    """No live session: the browser goes to the sign-in page."""


def page(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    login: ConsoleLogin | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render one page (every page gets the login, for the navigation, the scopes and the CSRF token)."""
    html = ENV.get_template(template).render(
        {"request": request, "login": login, "scopes": login.key.scopes if login else frozenset(), **context}
    )
    return HTMLResponse(html, status_code=status, headers=dict(headers or {}))


def _login(request: Request, session: WriteSession) -> ConsoleLogin:
    cookie = request.cookies.get(COOKIE)
    idle: timedelta = request.app.state.console_idle
    login = None if not cookie else resume_session(session=session, cookie=cookie, now=now(), idle=idle)
    if login is None:
        raise SignInRequired()
    request.state.console_login = login
    return login


#: The signed-in operator (else the browser is sent to the sign-in page).
Login = Annotated[ConsoleLogin, Depends(_login)]


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=2000)


#: The posted form (read on the event loop, so `def` endpoints get it ready-made).
Form = Annotated[FormData, Depends(_form)]


def require(login: ConsoleLogin, scope: str) -> None:
    """Refuse (403 page) an operator whose API key lacks `scope`, whatever the browser sent."""
    if scope not in login.key.scopes:
        raise ConsoleError(403, f'Your API key "{login.key.name or login.key.id}" lacks the "{scope}" scope.')


def check_csrf(login: ConsoleLogin, form: FormData) -> None:
    """Every write carries the session's CSRF token."""
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), login.csrf.encode()):
        raise ConsoleError(403, "This form has expired or did not come from this console: reload and retry.")


def field(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name, default)
    return value if isinstance(value, str) else default


def new_signin_token() -> str:
    return secrets.token_urlsafe(24)


async def console_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleError)
    login = getattr(request.state, "console_login", None)
    headers = {}
    if request.headers.get(
        "hx-request"
    ):  # an htmx swap shows the error page's content in place of the page's
        headers = {"HX-Retarget": "#main", "HX-Reselect": "#main", "HX-Reswap": "outerHTML"}
    context = {"status": exc.status, "message": exc.message}
    return page(request, "error.html", context, login=login, status=exc.status, headers=headers)


async def sign_in_redirect(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = f"{PREFIX}/segments"
    location = f"{PREFIX}/?next={quote(target, safe='')}"
    if request.headers.get("hx-request"):  # htmx would follow a 303 itself: have the browser go instead
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)
