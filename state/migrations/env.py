"""Alembic environment: runs on the connection that ``state.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from state.tables import metadata

connection = context.config.attributes["connection"]
schema = context.config.attributes["schema"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema=schema,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
