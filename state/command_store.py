"""Reads what decisions need and writes a whole checkpoint's decisions in one transaction.

Decisions of one checkpoint are kept in memory until the checkpoint commits: a command
must see the effects of the commands before it in the same batch, and Postgres is
written once per checkpoint (one transaction), not once per command. The Kafka
transaction of the same checkpoint commits only after this write succeeds; if it then
fails, the redelivered commands find their stored outcome in the inbox and re-emit it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, Row, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from domain.errors import TransientError
from domain.model import Decision, Payment, PaymentMethod, StreamState
from state.errors import database_errors
from state.tables import (
    event_streams,
    gateway_customers,
    payment_methods,
    payments,
    processed_commands,
)


@dataclass(frozen=True, slots=True)
class ProcessedCommand:
    """An inbox row: the outcome of a command exactly as it was published."""

    command_id: UUID
    payload_sha256: bytes
    stream_key: str
    source_topic: str
    source_partition: int
    source_offset: int
    command_type: str
    status: str
    result_value: bytes
    event_values: tuple[bytes, ...]
    processed_at: datetime


def _method_from_row(row: Row[Any]) -> PaymentMethod:
    return PaymentMethod(**{column: row._mapping[column] for column in PaymentMethod.__slots__})


def _payment_from_row(row: Row[Any]) -> Payment:
    return Payment(**{column: row._mapping[column] for column in Payment.__slots__})


def _as_row(value: PaymentMethod | Payment) -> dict[str, Any]:
    return {column: getattr(value, column) for column in type(value).__slots__}


class ConcurrentWriteError(TransientError):
    """Another worker wrote first; this checkpoint is retried from its first command."""


def _database_errors() -> AbstractContextManager[None]:
    return database_errors(ConcurrentWriteError)


class CommandStore:
    """The per-checkpoint unit of work over the inbox and the payment method tables."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._streams: dict[str, StreamState] = {}
        self._commands: dict[UUID, ProcessedCommand] = {}
        self._changed_methods: dict[str, PaymentMethod] = {}
        self._changed_payments: dict[str, Payment] = {}
        self._changed_customers: dict[str, str | None] = {}
        # Payments as read from Postgres in this checkpoint: their writes are conditional
        # on still being so, because payments are shared across keys and partitions.
        self._loaded_payments: dict[str, Payment] = {}
        self._changed_sequences: dict[str, int] = {}

    @property
    def pending_commands(self) -> int:
        return len(self._commands)

    # --- reads -------------------------------------------------------------------------

    def processed_command(self, command_id: UUID) -> ProcessedCommand | None:
        pending = self._commands.get(command_id)
        if pending is not None:
            return pending
        with _database_errors(), self._engine.connect() as connection:
            row = connection.execute(
                select(processed_commands).where(processed_commands.c.command_id == command_id)
            ).one_or_none()
        if row is None:
            return None
        values = row._mapping
        return ProcessedCommand(
            command_id=values["command_id"],
            payload_sha256=bytes(values["payload_sha256"]),
            stream_key=values["stream_key"],
            source_topic=values["source_topic"],
            source_partition=values["source_partition"],
            source_offset=values["source_offset"],
            command_type=values["command_type"],
            status=values["status"],
            result_value=bytes(values["result_value"]),
            event_values=tuple(bytes(value) for value in values["event_values"]),
            processed_at=values["processed_at"],
        )

    def stream_state(
        self,
        key: str,
        named_payment_method_ids: Iterable[str] = (),
        named_payment_ids: Iterable[str] = (),
    ) -> StreamState:
        """The state of one key as the next decision must see it.

        ``named_payment_method_ids`` are ids the command wants to use; any of them that
        belongs to another key is reported in ``taken_payment_method_ids``.
        ``named_payment_ids`` are payments the command names, loaded whoever owns them.
        """
        state = self._streams.get(key)
        with _database_errors(), self._engine.connect() as connection:
            if state is None:
                state = self._load_stream(connection, key)
                self._streams[key] = state
            own_ids = {method.payment_method_id for method in state.methods}
            foreign = [pid for pid in named_payment_method_ids if pid not in own_ids]
            taken = self._taken_ids(connection, key, foreign) if foreign else frozenset()
            payment_ids = list(named_payment_ids)
            named_payments = self._payments(connection, payment_ids) if payment_ids else ()
        return replace(state, taken_payment_method_ids=taken, payments=named_payments)

    def _payments(self, connection: Connection, ids: list[str]) -> tuple[Payment, ...]:
        found = {pid: self._changed_payments[pid] for pid in ids if pid in self._changed_payments}
        missing = [pid for pid in ids if pid not in found]
        if missing:
            rows = connection.execute(select(payments).where(payments.c.payment_id.in_(missing)))
            loaded = {row.payment_id: _payment_from_row(row) for row in rows}
            self._loaded_payments.update(loaded)
            found.update(loaded)
        return tuple(found[pid] for pid in ids if pid in found)

    def _load_stream(self, connection: Connection, key: str) -> StreamState:
        rows = connection.execute(
            select(payment_methods)
            .where(payment_methods.c.user_id == key)
            .order_by(payment_methods.c.created_at, payment_methods.c.payment_method_id)
        ).all()
        last_sequence = connection.execute(
            select(event_streams.c.last_sequence).where(event_streams.c.stream_key == key)
        ).scalar_one_or_none()
        customer_id = connection.execute(
            select(gateway_customers.c.customer_id).where(gateway_customers.c.user_id == key)
        ).scalar_one_or_none()
        return StreamState(
            key=key,
            last_sequence=last_sequence or 0,
            methods=tuple(_method_from_row(row) for row in rows),
            gateway_customer_id=customer_id,
        )

    def _taken_ids(self, connection: Connection, key: str, ids: list[str]) -> frozenset[str]:
        pending = {pid for pid in ids if pid in self._changed_methods}
        stored = connection.execute(
            select(payment_methods.c.payment_method_id).where(
                payment_methods.c.payment_method_id.in_(ids), payment_methods.c.user_id != key
            )
        ).scalars()
        return frozenset(pending | set(stored))

    # --- writes ------------------------------------------------------------------------

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        """Stage one decision; nothing reaches Postgres before ``flush``."""
        self._commands[processed.command_id] = processed
        state = self._streams.get(key) or StreamState(key=key)
        methods = {method.payment_method_id: method for method in state.methods}
        for method in decision.changed_methods:
            methods[method.payment_method_id] = method
            self._changed_methods[method.payment_method_id] = method
        for payment in decision.changed_payments:
            self._changed_payments[payment.payment_id] = payment
        last_sequence = decision.last_sequence
        if last_sequence != state.last_sequence:
            self._changed_sequences[key] = last_sequence
        customer_id = state.gateway_customer_id
        if decision.customer_reference is not None:
            customer_id = decision.customer_reference.customer_id
            self._changed_customers[key] = customer_id
        self._streams[key] = StreamState(
            key=key,
            last_sequence=last_sequence,
            methods=tuple(methods.values()),
            gateway_customer_id=customer_id,
        )

    def flush(self) -> int:
        """Write every staged decision in one transaction; returns the command count.

        The inbox insert has no ON CONFLICT clause on purpose: if another worker already
        stored one of these commands (this one lost its partitions while paused), the
        whole transaction fails instead of applying a command twice.
        """
        if not self._commands:
            self.discard()
            return 0
        count = len(self._commands)
        try:
            with _database_errors(), self._engine.begin() as connection:
                connection.execute(
                    insert(processed_commands),
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
                        for command in self._commands.values()
                    ],
                )
                self._write_methods(connection)
                self._write_payments(connection)
                self._write_customers(connection)
                self._write_sequences(connection)
        finally:
            self.discard()
        return count

    def _write_methods(self, connection: Connection) -> None:
        if not self._changed_methods:
            return
        # Unique indexes are checked row by row, so rows that give up a default or
        # become inactive are written before the rows that take their place.
        rows = sorted(
            self._changed_methods.values(), key=lambda method: (method.is_default, method.active)
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

    def _write_payments(self, connection: Connection) -> None:
        """Insert new payments and update loaded ones only if nobody changed them since.

        A payment id is checked and a guest payment linked by commands of different
        keys, so two workers may decide about one payment at once: the plain INSERT and
        the conditional UPDATE make the slower checkpoint fail and retry instead of
        silently overwriting.
        """
        new = [
            p for p in self._changed_payments.values() if p.payment_id not in self._loaded_payments
        ]
        if new:
            connection.execute(insert(payments), [_as_row(payment) for payment in new])
        for payment in self._changed_payments.values():
            before = self._loaded_payments.get(payment.payment_id)
            if before is None:
                continue
            updated = connection.execute(
                update(payments)
                .where(
                    payments.c.payment_id == payment.payment_id,
                    payments.c.user_id.is_not_distinct_from(before.user_id),
                    payments.c.status == before.status,
                )
                .values(
                    user_id=payment.user_id, status=payment.status, updated_at=payment.updated_at
                )
            )
            if updated.rowcount != 1:
                raise ConcurrentWriteError(f"payment {payment.payment_id} changed meanwhile")

    def _write_customers(self, connection: Connection) -> None:
        for user_id, customer_id in self._changed_customers.items():
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

    def _write_sequences(self, connection: Connection) -> None:
        if not self._changed_sequences:
            return
        statement = insert(event_streams)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=[event_streams.c.stream_key],
                set_={"last_sequence": statement.excluded.last_sequence},
            ),
            [
                {"stream_key": key, "last_sequence": sequence}
                for key, sequence in self._changed_sequences.items()
            ],
        )

    def discard(self) -> None:
        """Forget staged decisions (after a flush, or when the checkpoint is abandoned)."""
        self._streams.clear()
        self._commands.clear()
        self._changed_methods.clear()
        self._changed_payments.clear()
        self._changed_customers.clear()
        self._loaded_payments.clear()
        self._changed_sequences.clear()
