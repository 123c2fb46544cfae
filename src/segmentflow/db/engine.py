"""Engines for SQLite and PostgreSQL behind one URL, and the schema brought up to date on them."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Engine

__all__ = ["make_engine", "migrate", "normalize_url", "psycopg_connect_kwargs", "reset"]

#: What every PostgreSQL session of segmentflow runs with (see `make_engine`).
_PG_OPTIONS = "-c TimeZone=UTC"

_MIGRATIONS = Path(__file__).with_name("migrations")
# Alembic keeps its running context in module globals, so two migrations in one process (two workers
# starting together) must not overlap; across processes PostgreSQL serialises them on an advisory lock.
_MIGRATE_LOCK = threading.Lock()
_PG_MIGRATE_KEY = 0x5E6F11
log = logging.getLogger("segmentflow.db")


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` URLs use psycopg 3, so no system libpq is needed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _create_private(url: str) -> None:
    """Create a SQLite database file that does not exist yet as an empty file readable by its owner alone
    (0600), before SQLite would create it under the umask (usually 0644): it holds webhook header secrets.
    SQLite gives its WAL and shared-memory files the database file's mode. An existing file keeps its
    mode; a missing directory is left for SQLite to report."""
    parsed = sa.engine.make_url(url)
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:") or parsed.query.get("uri"):
        return
    try:
        descriptor = os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except (FileExistsError, FileNotFoundError):
        return
    os.close(descriptor)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout on every connection, and a new
    database file is created 0600. Other databases get `pool_pre_ping` unless `kwargs` say otherwise, and
    PostgreSQL sessions run in UTC, so SQL that buckets times by day (`date(at)`: the report and console
    rollups) reads UTC days whatever the server's or role's default time zone."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        _create_private(url)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql"):
        connect_args = dict(kwargs.pop("connect_args", {}))
        options = connect_args.get("options", "")
        if "TimeZone" not in options:
            connect_args["options"] = f"{options} {_PG_OPTIONS}".strip()
        kwargs["connect_args"] = connect_args
    return sa.create_engine(url, **kwargs)


def psycopg_connect_kwargs(engine: Engine) -> dict[str, Any]:
    """Keyword arguments for `psycopg.connect` / `psycopg.AsyncConnection.connect` reaching the database
    of a PostgreSQL `engine` as its own connections do (same server, credentials and session time zone),
    for a connection kept outside its pool."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's own adapters
    options = params.get("options", "")
    if "TimeZone" not in options:
        params["options"] = f"{options} {_PG_OPTIONS}".strip()
    return dict(params)


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _lock(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_KEY})


def migrate(engine: Engine) -> bool:
    """Apply every pending migration (creates the schema on an empty database); cheap when up to date.

    A schema newer than this code (a later release's worker migrated it during a rolling deploy) is left
    as it is: migrations are expand-only until every worker runs the release that needs the contraction
    (README, "Deploying changes"), so older code keeps working on it. Returns False in that case."""
    with _MIGRATE_LOCK, engine.begin() as connection:
        _lock(connection)
        cfg = _alembic_config(connection)
        script = ScriptDirectory.from_config(cfg)
        head = script.get_current_head()
        current = MigrationContext.configure(connection).get_current_revision()
        if current == head:
            return True
        if current is not None:
            try:
                script.get_revision(current)
            except CommandError:
                log.warning("database schema %s is newer than this code's %s: left as it is", current, head)
                return False
        command.upgrade(cfg, "head")
        return True


def reset(engine: Engine) -> None:
    """Drop every segmentflow table and rebuild the schema from the migrations."""
    with _MIGRATE_LOCK, engine.begin() as connection:
        _lock(connection)
        command.downgrade(_alembic_config(connection), "base")
    migrate(engine)
