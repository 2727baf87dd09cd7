"""Migration 0005 on the real PostgreSQL: existing stream keys get their kind, once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from config.settings import Settings
from state.database import create_database_engine, upgrade_schema

NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture
def old_schema(stack_settings: Settings) -> Iterator[tuple[Engine, str]]:
    """A schema at revision 0004, before stream keys had a kind."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    settings = stack_settings.model_copy(update={"database_schema": schema})
    engine = create_database_engine(settings)
    upgrade_schema(engine, schema, "0004")
    yield engine, schema
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def _inbox_row(key: str, command_type: str) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "key": key,
        "type": command_type,
        "at": NOW,
    }


def test_existing_keys_are_classified_as_users_or_guest_payments(
    old_schema: tuple[Engine, str],
) -> None:
    engine, schema = old_schema
    with engine.begin() as connection:
        # A user with a saved card, a guest payment, a guest payment linked to a user, a
        # user known only by a rejected command, and a key where a guest payment and a
        # user already met (it stays the user's).
        for key, sequence in [("u-card", 2), ("pay-g", 2), ("pay-linked", 2), ("both", 5)]:
            connection.execute(
                text("INSERT INTO event_streams VALUES (:k, :s)"), {"k": key, "s": sequence}
            )
        connection.execute(
            text(
                "INSERT INTO payment_methods VALUES ('pm-1', 'u-card', NULL, 'visa', '4242', 12,"
                " 2030, 'fp_1', NULL, true, true, :at, :at),"
                " ('pm-2', 'both', NULL, 'visa', '4242', 12, 2030, 'fp_2', NULL, true, true,"
                " :at, :at)"
            ),
            {"at": NOW},
        )
        connection.execute(
            text(
                "INSERT INTO payments VALUES"
                " ('pay-g', NULL, 'o1', 100, 'EUR', NULL, 'authorized', :at, :at),"
                " ('pay-linked', 'u-card', 'o2', 100, 'EUR', NULL, 'authorized', :at, :at),"
                " ('both', NULL, 'o3', 100, 'EUR', NULL, 'authorized', :at, :at)"
            ),
            {"at": NOW},
        )
        rows = [
            _inbox_row("u-card", "AddPaymentMethod"),
            _inbox_row("pay-g", "InitiatePayment"),
            _inbox_row("pay-linked", "InitiatePayment"),
            _inbox_row("u-rejected", "UpdatePaymentMethod"),
            _inbox_row("both", "InitiatePayment"),
        ]
        for row in rows:
            connection.execute(
                text(
                    "INSERT INTO processed_commands VALUES (:id, '\\x00', :key, 't', 0, 0,"
                    " :type, 'accepted', '\\x00', ARRAY[]::bytea[], :at)"
                ),
                row,
            )

    upgrade_schema(engine, schema)

    with engine.connect() as connection:
        streams = {
            row.stream_key: row.last_sequence
            for row in connection.execute(
                text("SELECT stream_key, last_sequence FROM stream_sequences")
            )
        }
        inbox = {
            row.command_id: row.stream_key
            for row in connection.execute(
                text("SELECT command_id, stream_key FROM processed_commands")
            )
        }
    assert streams == {
        "user:u-card": 2,
        "guest-payment:pay-g": 2,
        "guest-payment:pay-linked": 2,
        "user:both": 5,
    }
    assert [inbox[row["id"]] for row in rows] == [
        "user:u-card",
        "guest-payment:pay-g",
        "guest-payment:pay-linked",
        "user:u-rejected",
        "user:both",
    ]


def test_a_worker_of_an_earlier_release_cannot_write_bare_keys_after_the_migration(
    old_schema: tuple[Engine, str],
) -> None:
    engine, schema = old_schema
    upgrade_schema(engine, schema)
    # The table an earlier release reads and writes each key's sequence in is gone.
    with pytest.raises(ProgrammingError), engine.connect() as connection:
        connection.execute(text("SELECT last_sequence FROM event_streams"))
