"""The sequence tests' engine also empties the sequence tables, and the Temporal fixtures are shared."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.temporal.conftest import dev_env, skipping_env, task_queue

__all__ = ["dev_env", "engine", "skipping_env", "task_queue"]


@pytest.fixture
def engine(engine: Engine) -> Engine:
    """The shared engine fixture (contacts deleted, which cascades to enrollments and sends), with every
    sequence deleted too."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM send"))
        conn.execute(sa.text("DELETE FROM enrollment"))
        conn.execute(sa.text("DELETE FROM sequence"))
    return engine
