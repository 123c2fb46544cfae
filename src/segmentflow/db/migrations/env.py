"""Alembic environment: runs on the connection segmentflow hands it (see `segmentflow.db.engine`)."""

from __future__ import annotations

from alembic import context

from segmentflow.db.tables import SQLModel

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=SQLModel.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
