"""A new SQLite database, and the WAL and shared-memory files SQLite makes beside it, are readable by their
owner alone (0600) whatever the umask: the database holds webhook header secrets."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from segmentflow.db.engine import make_engine, migrate


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default, under which SQLite alone would create 0644
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("usual_umask")
def test_a_new_sqlite_database_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "segmentflow.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
        with engine.connect() as connection:  # the WAL and shared-memory files exist while it is open
            connection.execute(sa.text("SELECT count(*) FROM segment")).one()
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
    finally:
        engine.dispose()
    assert modes == {f.name: 0o600 for f in files}


@pytest.mark.usefixtures("usual_umask")
def test_an_existing_database_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
    finally:
        engine.dispose()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
