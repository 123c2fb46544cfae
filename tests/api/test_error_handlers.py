"""The API's answers to database errors raised below SQLAlchemy: the bulk writes talk to the drivers
directly (COPY, executemany), so a conflicting concurrent write can surface as the driver's own DB-API
IntegrityError, which must read as the same 409 as SQLAlchemy's."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from segmentflow.api.errors import install_error_handlers


@pytest.mark.parametrize(
    "error",
    [
        sa.exc.IntegrityError("INSERT", None, Exception("duplicate")),
        sqlite3.IntegrityError("FOREIGN KEY constraint failed"),
        psycopg.errors.ForeignKeyViolation("violates foreign key constraint"),
    ],
    ids=["sqlalchemy", "sqlite3", "psycopg"],
)
def test_an_integrity_error_from_any_layer_is_a_409_retry(error: Exception) -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/write")
    def write() -> None:
        raise error

    response = TestClient(app, raise_server_exceptions=False).get("/write")
    assert response.status_code == 409
    assert response.json() == {"detail": "a concurrent write conflicted with this one: retry"}
