"""Index the inbox by stream key, newest first.

When a worker first meets a key it reads that key's recent command ids along with its
state, so that a redelivered or re-sent command is recognised without a query per
command. Built CONCURRENTLY, so a live inbox keeps taking writes while it builds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_processed_commands_stream_recent",
            "processed_commands",
            ["stream_key", "processed_at"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_processed_commands_stream_recent",
            table_name="processed_commands",
            postgresql_concurrently=True,
            if_exists=True,
        )
