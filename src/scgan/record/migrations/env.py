"""Alembic's environment for the results store: migrations run on the connection the store hands over."""
from __future__ import annotations

from alembic import context

from scgan.record.schema import metadata

connection = context.config.attributes["connection"]  # scgan.record.store.migrate sets it; no ini file
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
