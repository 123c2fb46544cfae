"""Bulk inserts for the recompute's hot path, and `insert_on_conflict`: the one place that speaks each
database's own INSERT.

PostgreSQL gets COPY (psycopg adapts UUIDs and aware datetimes itself). SQLite gets one `executemany` on
the driver with values already in the form SQLAlchemy stores there (32-hex-digit UUIDs, naive UTC
timestamps as text), so rows read back through the ORM types exactly as if the ORM had written them.
Anything else goes through SQLAlchemy Core.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

__all__ = ["bulk_insert", "copy_escape", "copy_text", "insert_new", "insert_on_conflict", "sqlite_value"]


def insert_on_conflict(dialect: str | Session, table: sa.Table) -> Any:
    """`INSERT` into `table` with `.on_conflict_do_nothing()` / `.on_conflict_do_update()` and
    `.excluded`, which PostgreSQL and SQLite both speak (with RETURNING too); `dialect` is its name, or
    the session whose connection tells it."""
    name = dialect if isinstance(dialect, str) else dialect.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)


def sqlite_value(value: Any) -> Any:
    """`value` as SQLAlchemy stores it in SQLite (UUIDs as 32 hex digits, datetimes as naive UTC text)."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return value


def bulk_insert(
    session: Session,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    converted: bool = False,
) -> None:
    """Insert `rows` (tuples in `columns` order) into `table` within the session's transaction.
    `converted`: on SQLite the values are already in their stored form (`sqlite_value`)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        names = ", ".join(f'"{c}"' for c in columns)
        with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        cursor.close()
        return
    if dialect == "sqlite":
        # Rows share one instant (the recompute's `now`) and a few segment ids: convert each value once.
        cache: dict[Any, Any] = {}

        def convert(value: Any) -> Any:
            if isinstance(value, (uuid.UUID, datetime)):
                found = cache.get(value)
                if found is None:
                    found = cache[value] = sqlite_value(value)
                return found
            return value

        marks = ", ".join("?" for _ in columns)
        names = ", ".join(f'"{c}"' for c in columns)
        raw = connection.connection.driver_connection
        assert raw is not None
        raw.executemany(
            f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',
            rows if converted else [tuple(convert(v) for v in row) for row in rows],
        )
        return
    connection.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in rows])


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_escape(text: str) -> str:
    """`text` as one field of PostgreSQL's COPY text format."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_COPY_ESCAPES)
    return text


def copy_text(session: Session, table: sa.Table, columns: Sequence[str], data: str) -> None:
    """PostgreSQL: COPY `data`, lines already in COPY's text format (tab-separated fields escaped with
    `copy_escape`), into `table`, within the session's transaction."""
    if not data:
        return
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    names = ", ".join(f'"{c}"' for c in columns)
    with cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
        copy.write(data)
    cursor.close()


def insert_new(
    session: Session, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], *, key: str
) -> int:
    """Insert the `rows` whose `key` (a unique column) is not stored yet; returns how many were inserted.
    `rows` must not repeat a key. PostgreSQL: COPY into a temporary table, then one INSERT ... SELECT ...
    ON CONFLICT DO NOTHING. Elsewhere: batched INSERT ... ON CONFLICT DO NOTHING RETURNING."""
    if not rows:
        return 0
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        names = ", ".join(f'"{c}"' for c in columns)
        staging = f"_new_{table.name}"
        connection.exec_driver_sql(
            f'CREATE TEMPORARY TABLE IF NOT EXISTS "{staging}" (LIKE "{table.name}") ON COMMIT DELETE ROWS'
        )
        connection.exec_driver_sql(f'TRUNCATE "{staging}"')
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f'COPY "{staging}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{staging}" '
            f'ON CONFLICT ("{key}") DO NOTHING'
        )
        inserted = cursor.rowcount
        cursor.close()
        return int(inserted)
    statement = (
        insert_on_conflict(connection.dialect.name, table)
        .on_conflict_do_nothing(index_elements=[key])
        .returning(table.c[key])
    )
    inserted = 0
    batch = max(1, 30_000 // len(columns))  # SQLite allows 32,766 parameters per statement
    for start in range(0, len(rows), batch):
        params = [dict(zip(columns, row, strict=True)) for row in rows[start : start + batch]]
        inserted += len(session.execute(statement, params).fetchall())
    return inserted
