"""Domain errors to HTTP: unknown things are 404, conflicts 409, refused input 422 in FastAPI's own
validation shape (`{"detail": [{"loc", "msg", "type"}]}`, naming the field), a database outage 503."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import psycopg
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from segmentflow.api.models import ErrorMessage
from segmentflow.rules import ContextError, RuleError
from segmentflow.rules.patch import PatchError
from segmentflow.services.keys import UnknownKeyError
from segmentflow.services.membership import UnknownContactError, UnknownSegmentError
from segmentflow.services.segment_admin import ConflictError

__all__ = ["document_body_errors", "install_error_handlers", "invalid", "responses"]

_FIELD = re.compile(r'field "(.*)"')


def invalid(loc: Sequence[str | int], msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 naming the field at `loc`, in FastAPI's shape."""
    return RequestValidationError([{"type": kind, "loc": tuple(loc), "msg": msg}])


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the `{"detail": "..."}` error responses an endpoint can give."""
    described = {
        400: "The body could not be read as JSON.",
        401: "Missing, unknown or revoked API key.",
        403: "The API key lacks the scope.",
        404: "No such segment or contact.",
        409: "Conflict: stale version, existing key, or a segment still referenced.",
        413: "The body is over the size limit (`SEGMENTFLOW_MAX_BODY_BYTES`; imports: "
        "`SEGMENTFLOW_MAX_IMPORT_BODY_BYTES`).",
        429: "Too many failed authentications from this client: retry after `Retry-After` seconds.",
        503: "The database is unavailable.",
    }
    return {code: {"model": ErrorMessage, "description": described[code]} for code in codes}


def _detail(code: int, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc.args[0] if exc.args else exc)}, status_code=code)


def _rule_loc(exc: RuleError) -> list[str | int]:
    loc: list[str | int] = ["body", "definition"]
    if exc.rule_index is not None:
        loc += ["rules", exc.rule_index]
    if exc.clause_index is not None:
        loc += ["clauses", exc.clause_index]
    match = _FIELD.fullmatch(exc.field or "")
    if match:
        loc += match.group(1).split(".")
    return loc


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_404_NOT_FOUND, exc)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return _detail(status.HTTP_409_CONFLICT, exc)


async def _rule_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RuleError)
    return await request_validation_exception_handler(
        request, invalid(_rule_loc(exc), str(exc), "rule_error")
    )


async def _patch_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PatchError)
    error = invalid(["body", "instructions", exc.index], str(exc), "patch_error")
    return await request_validation_exception_handler(request, error)


async def _context_error(request: Request, exc: Exception) -> JSONResponse:
    error = invalid(["body"], f"invalid context: {exc}", "context_error")
    return await request_validation_exception_handler(request, error)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # A value the database cannot store (a lone surrogate, NaN in JSON...): the client's input, not an outage.
    error = invalid(["body"], "the database cannot store a value of this request", "data_error")
    return await request_validation_exception_handler(request, error)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "a concurrent write conflicted with this one: retry"}, status_code=status.HTTP_409_CONFLICT
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "the database is unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
    )


def install_error_handlers(app: FastAPI) -> None:
    for lookup in (UnknownSegmentError, UnknownContactError, UnknownKeyError):
        app.add_exception_handler(lookup, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(PatchError, _patch_error)
    app.add_exception_handler(RuleError, _rule_error)
    app.add_exception_handler(ContextError, _context_error)
    app.add_exception_handler(sa.exc.DataError, _data_error)
    # The bulk writes talk to the driver directly (COPY, executemany), whose own DB-API IntegrityError
    # SQLAlchemy never wraps: the same race, the same answer.
    for integrity in (sa.exc.IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError):
        app.add_exception_handler(integrity, _integrity_error)
    app.add_exception_handler(sa.exc.OperationalError, _unavailable)


def document_body_errors(router: APIRouter) -> APIRouter:
    """Declare the 400 and 413 of every endpoint of `router` that reads a body (a body that is not JSON
    gets a 400 from FastAPI, one over the limit a 413 from the guard, before any endpoint runs), and the
    guard's 429 on every endpoint needing a key, so no router can forget them. Call before including it."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        if route.body_field is not None:
            route.responses.setdefault(400, responses(400)[400])
            route.responses.setdefault(413, responses(413)[413])
        if 401 in route.responses:
            route.responses.setdefault(429, responses(429)[429])
    return router
