"""Shared fixtures: one engine fixture over SQLite and the real PostgreSQL, isolated per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from segmentflow.db.engine import make_engine, migrate

POSTGRES_ADMIN_URL = os.environ.get("SEGMENTFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_TABLES = (
    "segment_change_day",
    "segment_change_hour",
    "segment_change_rollup",
    "report_day_figures",
    "report_day",
    "conversation_event",
    "console_session",
    "send",
    "enrollment",
    "sequence",
    "api_key",
    "recompute_progress",
    "membership_change",
    "segment_membership",
    "contact",
    "segment",
)


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable: {str(exc).strip().splitlines()[0]}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test run, dropped at the end."""
    reason = _postgres_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests; .ci/run starts the server)")
        pytest.skip(reason)
    name = f"segmentflow_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'segmentflow.db'}"


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture(scope="session")
def _migrated_engines() -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture
def engine(database_url: str, _migrated_engines: dict[str, Engine]) -> Engine:
    """A migrated engine with every table emptied before the test."""
    if database_url not in _migrated_engines:
        eng = make_engine(database_url)
        migrate(eng)
        _migrated_engines[database_url] = eng
    eng = _migrated_engines[database_url]
    with eng.begin() as conn:
        for table in _TABLES:
            conn.execute(sa.text(f"DELETE FROM {table}"))
    return eng


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
