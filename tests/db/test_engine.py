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
