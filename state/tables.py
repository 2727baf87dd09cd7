"""SQLAlchemy table definitions, matching the Alembic migrations.

Tables are unqualified: the connection's ``search_path`` selects the schema, so each
deployment (and each integration test) can use its own.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA

metadata = MetaData()

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("payment_method_id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    # The gateway's opaque token; purged (NULL) when the method is removed.
    Column("gateway_token", Text, nullable=True),
    Column("brand", Text, nullable=False),
    Column("last4", Text, nullable=False),
    Column("exp_month", SmallInteger, nullable=False),
    Column("exp_year", SmallInteger, nullable=False),
    Column("fingerprint", Text, nullable=False),
    # For display only; the one piece of PII the worker keeps.
    Column("billing_name", Text, nullable=True),
    Column("is_default", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("active OR NOT is_default", name="ck_payment_methods_default_is_active"),
    Index("ix_payment_methods_user_id", "user_id"),
    # Exactly one default per user, enforced by the database as well as the domain.
    Index(
        "ux_payment_methods_one_default_per_user",
        "user_id",
        unique=True,
        postgresql_where=text("is_default AND active"),
    ),
    Index(
        "ux_payment_methods_active_fingerprint",
        "user_id",
        "fingerprint",
        unique=True,
        postgresql_where=text("active"),
    ),
)

# The last event sequence number per stream (`user:<id>`, `guest-payment:<id>`); events of
# a stream are gap-free. Named so since migration 0005 (it was event_streams).
stream_sequences = Table(
    "stream_sequences",
    metadata,
    Column("stream_key", Text, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)

# The inbox: one row per processed command, written in the same transaction as the
# state change, holding the exact bytes that were published, to re-emit on redelivery.
processed_commands = Table(
    "processed_commands",
    metadata,
    Column("command_id", Uuid, primary_key=True),
    Column("payload_sha256", LargeBinary, nullable=False),
    Column("stream_key", Text, nullable=False),
    # Where the deciding message was read: a redelivery of that very message means its
    # Kafka transaction never committed, so the stored events are published again.
    Column("source_topic", Text, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("command_type", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("result_value", BYTEA, nullable=False),
    Column("event_values", ARRAY(BYTEA), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    # A key's recent commands are read with its state (state.key_state_reads).
    Index("ix_processed_commands_stream_recent", "stream_key", "processed_at"),
)

# Payments keep no personal data; user_id is NULL for a guest until linked to an account.
payments = Table(
    "payments",
    metadata,
    Column("payment_id", Text, primary_key=True),
    Column("user_id", Text, nullable=True),
    Column("order_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("payment_method_id", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    Index("ix_payments_user_id", "user_id"),
)

# The gateway's customer id per user: created once, dropped on erasure. No PII.
gateway_customers = Table(
    "gateway_customers",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
