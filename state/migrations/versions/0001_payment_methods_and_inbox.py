"""Payment methods, event streams and the inbox of processed commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_methods",
        sa.Column("payment_method_id", sa.Text(), primary_key=True),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("gateway_token", sa.Text(), nullable=True),
        sa.Column("brand", sa.Text(), nullable=False),
        sa.Column("last4", sa.Text(), nullable=False),
        sa.Column("exp_month", sa.SmallInteger(), nullable=False),
        sa.Column("exp_year", sa.SmallInteger(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("billing_name", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("active OR NOT is_default", name="ck_payment_methods_default_is_active"),
    )
    op.create_index("ix_payment_methods_user_id", "payment_methods", ["user_id"])
    op.create_index(
        "ux_payment_methods_one_default_per_user",
        "payment_methods",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("is_default AND active"),
    )
    op.create_index(
        "ux_payment_methods_active_fingerprint",
        "payment_methods",
        ["user_id", "fingerprint"],
        unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "event_streams",
        sa.Column("stream_key", sa.Text(), primary_key=True),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "processed_commands",
        sa.Column("command_id", sa.Uuid(), primary_key=True),
        sa.Column("payload_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("stream_key", sa.Text(), nullable=False),
        sa.Column("source_topic", sa.Text(), nullable=False),
        sa.Column("source_partition", sa.Integer(), nullable=False),
        sa.Column("source_offset", sa.BigInteger(), nullable=False),
        sa.Column("command_type", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("result_value", postgresql.BYTEA(), nullable=False),
        sa.Column("event_values", postgresql.ARRAY(postgresql.BYTEA()), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("processed_commands")
    op.drop_table("event_streams")
    op.drop_table("payment_methods")
