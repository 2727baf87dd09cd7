"""The writes of a checkpoint: its staged decisions, in one transaction, fenced.

Postgres is written once per checkpoint, not once per command, and the Kafka
transaction of the same checkpoint commits only after this write succeeds; if it then
fails, the redelivered commands find their stored outcome in the inbox and re-emit it.
Every write is fenced (``state.write_fences``): the transaction fails, and nothing of it
is applied, if another writer stored one of these commands or advanced one of these keys
since this worker read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from domain.model import Payment, PaymentMethod
from domain.streams import stream_user_id
from state.checkpoint_staging import CheckpointStaging
from state.tables import (
    gateway_customers,
    payment_methods,
    payments,
    processed_commands,
    stream_sequences,
)
from state.write_fences import ConcurrentWriteError, WriteConflicts, check_unchanged_keys


def write_checkpoint(
    connection: Connection,
    staging: CheckpointStaging,
    read_versions: Mapping[str, int],
    loaded_payments: Mapping[str, Payment],
    conflicts: WriteConflicts,
) -> None:
    """Write everything ``staging`` holds in ``connection``'s transaction.

    ``read_versions`` are the keys' sequences as this checkpoint first read them and
    ``loaded_payments`` the payments as it read them: the writes are conditional on them.
    Clashing command ids are remembered in ``conflicts``.
    """
    _write_inbox(connection, staging, conflicts)
    check_unchanged_keys(connection, staging.key_states, staging.changed_sequences, read_versions)
    _write_sequences(connection, staging, read_versions)
    _write_methods(connection, staging)
    _write_payments(connection, staging, loaded_payments)
    _write_customers(connection, staging)


def _as_row(value: PaymentMethod | Payment) -> dict[str, Any]:
    return {column: getattr(value, column) for column in type(value).__slots__}


def _write_inbox(
    connection: Connection, staging: CheckpointStaging, conflicts: WriteConflicts
) -> None:
    stored = connection.execute(
        insert(processed_commands)
        .on_conflict_do_nothing(index_elements=[processed_commands.c.command_id])
        .returning(processed_commands.c.command_id),
        [
            {
                "command_id": command.command_id,
                "payload_sha256": command.payload_sha256,
                "stream_key": command.stream_key,
                "source_topic": command.source_topic,
                "source_partition": command.source_partition,
                "source_offset": command.source_offset,
                "command_type": command.command_type,
                "status": command.status,
                "result_value": command.result_value,
                "event_values": list(command.event_values),
                "processed_at": command.processed_at,
            }
            for command in staging.commands.values()
        ],
    ).scalars()
    clashed = set(staging.commands) - set(stored)
    if clashed:
        conflicts.remember(clashed)
        raise ConcurrentWriteError(f"{len(clashed)} command(s) were stored by another writer")


def _write_sequences(
    connection: Connection, staging: CheckpointStaging, read_versions: Mapping[str, int]
) -> None:
    """Advance each key's sequence from the value this worker read, and only from it."""
    if not staging.changed_sequences:
        return
    new_keys: list[dict[str, Any]] = []
    advanced: list[tuple[str, int, int]] = []
    for key, sequence in staging.changed_sequences.items():
        read = read_versions[key]
        if read == 0:
            new_keys.append({"stream_key": key, "last_sequence": sequence})
        else:
            advanced.append((key, read, sequence))
    if new_keys:
        # A plain INSERT: a row that appeared meanwhile fails the transaction.
        connection.execute(insert(stream_sequences), new_keys)
    if advanced:
        keys, reads, sequences = (list(column) for column in zip(*advanced, strict=True))
        updated = connection.execute(
            text(
                "UPDATE stream_sequences AS e SET last_sequence = v.sequence"
                " FROM unnest(CAST(:keys AS text[]), CAST(:reads AS bigint[]),"
                " CAST(:sequences AS bigint[])) AS v(key, read, sequence)"
                " WHERE e.stream_key = v.key AND e.last_sequence = v.read"
            ),
            {"keys": keys, "reads": reads, "sequences": sequences},
        )
        if updated.rowcount != len(advanced):
            raise ConcurrentWriteError("another writer advanced a key of this batch")


def _write_methods(connection: Connection, staging: CheckpointStaging) -> None:
    if not staging.changed_methods:
        return
    # Unique indexes are checked row by row, so rows that give up a default or
    # become inactive are written before the rows that take their place.
    rows = sorted(
        staging.changed_methods.values(), key=lambda method: (method.is_default, method.active)
    )
    statement = insert(payment_methods)
    updatable = {
        column.name: statement.excluded[column.name]
        for column in payment_methods.columns
        if column.name not in ("payment_method_id", "user_id", "created_at")
    }
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=[payment_methods.c.payment_method_id], set_=updatable
        ),
        [_as_row(method) for method in rows],
    )


def _write_payments(
    connection: Connection, staging: CheckpointStaging, loaded_payments: Mapping[str, Payment]
) -> None:
    """Insert new payments and update loaded ones only if nobody changed them since.

    A payment id is checked and a guest payment linked by commands of different
    keys, so two workers may decide about one payment at once: the plain INSERT and
    the conditional UPDATE make the slower checkpoint fail and retry instead of
    silently overwriting.
    """
    new = [p for p in staging.changed_payments.values() if p.payment_id not in loaded_payments]
    if new:
        connection.execute(insert(payments), [_as_row(payment) for payment in new])
    for payment in staging.changed_payments.values():
        before = loaded_payments.get(payment.payment_id)
        if before is None:
            continue
        updated = connection.execute(
            update(payments)
            .where(
                payments.c.payment_id == payment.payment_id,
                payments.c.user_id.is_not_distinct_from(before.user_id),
                payments.c.status == before.status,
            )
            .values(user_id=payment.user_id, status=payment.status, updated_at=payment.updated_at)
        )
        if updated.rowcount != 1:
            raise ConcurrentWriteError(f"payment {payment.payment_id} changed meanwhile")


def _write_customers(connection: Connection, staging: CheckpointStaging) -> None:
    for key, customer_id in staging.changed_customers.items():
        user_id = stream_user_id(key)
        if user_id is None:
            raise ValueError("a guest payment's stream has no gateway customer")
        if customer_id is None:
            connection.execute(
                delete(gateway_customers).where(gateway_customers.c.user_id == user_id)
            )
            continue
        statement = insert(gateway_customers).values(
            user_id=user_id, customer_id=customer_id, created_at=func.now()
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[gateway_customers.c.user_id],
                set_={"customer_id": statement.excluded.customer_id},
            )
        )
