"""Engines for SQLite and PostgreSQL behind one URL, and the schema brought up to date on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

__all__ = ["make_engine", "migrate", "normalize_url", "reset"]

_MIGRATIONS = Path(__file__).with_name("migrations")


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


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url`; SQLite gets foreign keys, WAL and a busy timeout on every connection."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _alembic_config(connection: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Apply every pending migration (creates the schema on an empty database)."""
    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


def reset(engine: Engine) -> None:
    """Drop every segmentflow table and rebuild the schema from the migrations."""
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "base")
    migrate(engine)
