"""The Temporal fixtures, shared with tests/temporal (the `engine` fixture empties the sequence tables)."""

from __future__ import annotations

from tests.temporal.conftest import dev_env, skipping_env, task_queue

__all__ = ["dev_env", "skipping_env", "task_queue"]
