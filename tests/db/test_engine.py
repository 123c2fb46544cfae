"""Engine and migrations on both databases: idempotent, safe when two workers start together."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from segmentflow.db.engine import make_engine, migrate, normalize_url, reset
from segmentflow.db.tables import contact_table


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_migrations_run_concurrently_in_one_process_leave_one_schema(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/fresh.db")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(engine)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    tables = set(sa.inspect(engine).get_table_names())
    assert {"contact", "segment", "segment_membership", "membership_change", "recompute_progress"} <= tables
    engine.dispose()


def test_reset_empties_every_table(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            contact_table.insert().values(
                key="u1", kinds="user", context={"key": "u1"}, updated_at=datetime.now().astimezone()
            )
        )
    reset(engine)
    with engine.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(contact_table)) == 0


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with pytest.raises(sa.exc.StatementError, match="timezone-aware"), engine.begin() as conn:
        conn.execute(
            contact_table.insert().values(key="u1", kinds="user", context={}, updated_at=datetime(2026, 1, 1))
        )


def test_migrations_build_the_schema_the_models_describe(engine: Engine) -> None:
    """Alembic finds nothing to add or drop between the migrated database and `db.tables` (indexes
    included), but for what a migration changed on purpose on one database: on PostgreSQL,
    `segment_membership` has delete triggers instead of its foreign keys (migration 0015)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    import segmentflow.db.tables  # noqa: F401  (every table on the metadata)

    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    described = []
    for difference in differences:  # (kind, object, ...), or a list of them for a column's changes
        kind, item = (difference[0] if isinstance(difference, list) else difference)[:2]
        described.append((kind, str(getattr(getattr(item, "table", None), "name", item))))
    expected = []
    if engine.dialect.name == "postgresql":
        expected = [("add_fk", "segment_membership"), ("add_fk", "segment_membership")]
    assert sorted(described) == expected, differences
