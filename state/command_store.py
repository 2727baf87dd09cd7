"""Reads what decisions need and writes a whole checkpoint's decisions in one transaction.

Decisions of one checkpoint are kept in memory until the checkpoint commits: a command
must see the effects of the commands before it in the same batch, and Postgres is
written once per checkpoint (one transaction), not once per command. The Kafka
transaction of the same checkpoint commits only after this write succeeds; if it then
fails, the redelivered commands find their stored outcome in the inbox and re-emit it.

A key's state, and the ids of its recent commands, stay cached across checkpoints while
this worker keeps them: reading them once per key instead of once per command is what
lets the worker keep up. The cache is safe without knowing about rebalances, because
every write is fenced. A key's event sequence is its version: a checkpoint advances it
only from the value it read (``UPDATE ... WHERE last_sequence = read``), and the inbox
takes a command id only once. If another worker wrote in between, for example while this
one was paused and lost its partitions, the checkpoint fails, and the pipeline restarts
from its last commit with an empty cache. Ids that clashed are remembered in
``WriteConflicts``, which outlives the restart, so the retry looks them up instead of
deciding them again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, Row, delete, func, select, text, update
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


def _processed_from_row(row: Row[Any]) -> ProcessedCommand:
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


def _as_row(value: PaymentMethod | Payment) -> dict[str, Any]:
    return {column: getattr(value, column) for column in type(value).__slots__}


class ConcurrentWriteError(TransientError):
    """Another worker wrote first; this checkpoint is retried from its first command."""


def _database_errors() -> AbstractContextManager[None]:
    return database_errors(ConcurrentWriteError)


@dataclass(slots=True)
class WriteConflicts:
    """Command ids another writer stored first; they outlive a pipeline restart, so the
    retried checkpoint reads their stored outcome instead of deciding them again."""

    command_ids: set[UUID] = field(default_factory=set)

    def remember(self, command_ids: Iterable[UUID]) -> None:
        if len(self.command_ids) > _MAX_REMEMBERED_CONFLICTS:
            # Bounded memory; forgetting only costs another failed checkpoint.
            self.command_ids.clear()
        self.command_ids.update(command_ids)


_MAX_REMEMBERED_CONFLICTS = 100_000


@dataclass(frozen=True, slots=True)
class _KnownStream:
    """A key as it is in Postgres: its state and the ids of its recent commands."""

    state: StreamState
    command_ids: frozenset[UUID]


_LOAD_STREAM = text(
    """
    SELECT s.last_sequence, c.customer_id, recent.command_ids, m.*
    FROM (SELECT CAST(:key AS text) AS key) AS k
    LEFT JOIN event_streams AS s ON s.stream_key = k.key
    LEFT JOIN gateway_customers AS c ON c.user_id = k.key
    LEFT JOIN LATERAL (
        SELECT array_agg(p.command_id) AS command_ids
        FROM (
            SELECT command_id FROM processed_commands
            WHERE stream_key = k.key ORDER BY processed_at DESC LIMIT :recent
        ) AS p
    ) AS recent ON true
    LEFT JOIN payment_methods AS m ON m.user_id = k.key
    ORDER BY m.created_at, m.payment_method_id
    """
)


class CommandStore:
    """The per-checkpoint unit of work over the inbox and the payment method tables."""

    def __init__(
        self,
        engine: Engine,
        *,
        cached_keys: int = 50_000,
        recent_commands: int = 1_000,
        conflicts: WriteConflicts | None = None,
    ) -> None:
        self._engine = engine
        self._cached_keys = cached_keys
        self._recent_commands = recent_commands
        self._conflicts = conflicts if conflicts is not None else WriteConflicts()
        self._reader: Connection | None = None
        # Committed state per key, least recently used first.
        self._known: OrderedDict[str, _KnownStream] = OrderedDict()
        # This checkpoint's decisions, not yet in Postgres.
        self._streams: dict[str, StreamState] = {}
        self._commands: dict[UUID, ProcessedCommand] = {}
        self._changed_methods: dict[str, PaymentMethod] = {}
        self._changed_payments: dict[str, Payment] = {}
        self._changed_customers: dict[str, str | None] = {}
        # Payments as read from Postgres in this checkpoint: their writes are conditional
        # on still being so, because payments are shared across keys and partitions.
        self._loaded_payments: dict[str, Payment] = {}
        self._changed_sequences: dict[str, int] = {}
        # The sequence (version) of each key as this checkpoint first read it; the write
        # is fenced on it, for keys whose decisions changed nothing too (a rejection
        # decided on an outdated state must not be stored either).
        self._read_versions: dict[str, int] = {}

    @property
    def pending_commands(self) -> int:
        return len(self._commands)

    @property
    def cached_keys(self) -> int:
        return len(self._known)

    # --- reads -------------------------------------------------------------------------

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None:
        """The stored outcome of ``command_id``, if it was processed before.

        Only a command id among the key's recent ones, or one that clashed before, costs
        a query; an id used earlier under another key, or long ago, is caught by the
        inbox's primary key when the checkpoint is written (see the module docstring).
        """
        pending = self._commands.get(command_id)
        if pending is not None:
            return pending
        known = self._known_stream(key)
        if command_id not in known.command_ids and command_id not in self._conflicts.command_ids:
            return None
        with _database_errors():
            row = (
                self._read()
                .execute(
                    select(processed_commands).where(processed_commands.c.command_id == command_id)
                )
                .one_or_none()
            )
        return None if row is None else _processed_from_row(row)

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
        state = self._streams.get(key) or self._known_stream(key).state
        own_ids = {method.payment_method_id for method in state.methods}
        foreign = [pid for pid in named_payment_method_ids if pid not in own_ids]
        payment_ids = list(named_payment_ids)
        if not foreign and not payment_ids:
            return state
        with _database_errors():
            taken = self._taken_ids(key, foreign) if foreign else frozenset()
            named_payments = self._payments(payment_ids) if payment_ids else ()
        return replace(state, taken_payment_method_ids=taken, payments=named_payments)

    def _read(self) -> Connection:
        """One autocommit connection for reads: no pool checkout (and ping) per query."""
        if self._reader is None or self._reader.closed or self._reader.invalidated:
            self._reader = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._reader

    def _known_stream(self, key: str) -> _KnownStream:
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
        else:
            with _database_errors():
                known = self._load_stream(key)
            self._remember(key, known)
        self._read_versions.setdefault(key, known.state.last_sequence)
        return known

    def forget_cached(self) -> None:
        """Drop every cached key (this worker gave up partitions; others may write them)."""
        self._known.clear()

    def _remember(self, key: str, known: _KnownStream) -> None:
        self._known[key] = known
        self._known.move_to_end(key)
        while len(self._known) > self._cached_keys:
            self._known.popitem(last=False)

    def _payments(self, ids: list[str]) -> tuple[Payment, ...]:
        found = {pid: self._changed_payments[pid] for pid in ids if pid in self._changed_payments}
        missing = [pid for pid in ids if pid not in found]
        if missing:
            rows = self._read().execute(select(payments).where(payments.c.payment_id.in_(missing)))
            loaded = {row.payment_id: _payment_from_row(row) for row in rows}
            self._loaded_payments.update(loaded)
            found.update(loaded)
        return tuple(found[pid] for pid in ids if pid in found)

    def _load_stream(self, key: str) -> _KnownStream:
        """A key's methods, sequence, gateway customer and recent command ids, in one query.

        One row per payment method (or one row of NULL method columns when it has none),
        each carrying the key's other values: one round trip for the first command of
        every key is most of what reading costs.
        """
        rows = (
            self._read()
            .execute(_LOAD_STREAM, {"key": key, "recent": self._recent_commands})
            .mappings()
            .all()
        )
        first = rows[0]
        return _KnownStream(
            state=StreamState(
                key=key,
                last_sequence=first["last_sequence"] or 0,
                methods=tuple(
                    PaymentMethod(**{column: row[column] for column in PaymentMethod.__slots__})
                    for row in rows
                    if row["payment_method_id"] is not None
                ),
                gateway_customer_id=first["customer_id"],
            ),
            command_ids=frozenset(first["command_ids"] or ()),
        )

    def _taken_ids(self, key: str, ids: list[str]) -> frozenset[str]:
        pending = {pid for pid in ids if pid in self._changed_methods}
        stored = (
            self._read()
            .execute(
                select(payment_methods.c.payment_method_id).where(
                    payment_methods.c.payment_method_id.in_(ids), payment_methods.c.user_id != key
                )
            )
            .scalars()
        )
        return frozenset(pending | set(stored))

    # --- writes ------------------------------------------------------------------------

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        """Stage one decision; nothing reaches Postgres before ``flush``."""
        self._commands[processed.command_id] = processed
        state = self._streams.get(key) or self._known_stream(key).state
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

        The transaction fails, and nothing of it is applied, if another writer stored
        one of these commands or advanced one of these keys since this worker read it.
        """
        if not self._commands:
            self.discard()
            return 0
        count = len(self._commands)
        try:
            with _database_errors(), self._engine.begin() as connection:
                self._write_inbox(connection)
                self._check_unchanged_keys(connection)
                self._write_sequences(connection)
                self._write_methods(connection)
                self._write_payments(connection)
                self._write_customers(connection)
        except ConcurrentWriteError:
            self._known.clear()
            raise
        else:
            self._commit_to_cache()
        finally:
            self.discard()
        return count

    def _commit_to_cache(self) -> None:
        new_ids: dict[str, set[UUID]] = {}
        for command in self._commands.values():
            new_ids.setdefault(command.stream_key, set()).add(command.command_id)
        for key, state in self._streams.items():
            before = self._known.get(key)
            ids = (before.command_ids if before is not None else frozenset()) | new_ids.get(
                key, set()
            )
            if len(ids) > self._recent_commands:
                # Read again (the newest ids only) when next needed, to bound memory.
                self._known.pop(key, None)
                continue
            self._remember(key, _KnownStream(state, ids))

    def _write_inbox(self, connection: Connection) -> None:
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
                for command in self._commands.values()
            ],
        ).scalars()
        clashed = set(self._commands) - set(stored)
        if clashed:
            self._conflicts.remember(clashed)
            raise ConcurrentWriteError(f"{len(clashed)} command(s) were stored by another writer")

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

    def _check_unchanged_keys(self, connection: Connection) -> None:
        """Keys decided on but not advanced must still be at the version this worker read."""
        unchanged = [key for key in self._streams if key not in self._changed_sequences]
        if not unchanged:
            return
        moved = connection.execute(
            text(
                "SELECT v.key FROM unnest(CAST(:keys AS text[]), CAST(:reads AS bigint[]))"
                " AS v(key, read) LEFT JOIN event_streams AS e ON e.stream_key = v.key"
                " WHERE coalesce(e.last_sequence, 0) <> v.read"
            ),
            {"keys": unchanged, "reads": [self._read_versions[key] for key in unchanged]},
        ).first()
        if moved is not None:
            raise ConcurrentWriteError("another writer advanced a key of this batch")

    def _write_sequences(self, connection: Connection) -> None:
        """Advance each key's sequence from the value this worker read, and only from it."""
        if not self._changed_sequences:
            return
        new_keys: list[dict[str, Any]] = []
        advanced: list[tuple[str, int, int]] = []
        for key, sequence in self._changed_sequences.items():
            read = self._read_versions[key]
            if read == 0:
                new_keys.append({"stream_key": key, "last_sequence": sequence})
            else:
                advanced.append((key, read, sequence))
        if new_keys:
            # A plain INSERT: a row that appeared meanwhile fails the transaction.
            connection.execute(insert(event_streams), new_keys)
        if advanced:
            keys, reads, sequences = (list(column) for column in zip(*advanced, strict=True))
            updated = connection.execute(
                text(
                    "UPDATE event_streams AS e SET last_sequence = v.sequence"
                    " FROM unnest(CAST(:keys AS text[]), CAST(:reads AS bigint[]),"
                    " CAST(:sequences AS bigint[])) AS v(key, read, sequence)"
                    " WHERE e.stream_key = v.key AND e.last_sequence = v.read"
                ),
                {"keys": keys, "reads": reads, "sequences": sequences},
            )
            if updated.rowcount != len(advanced):
                raise ConcurrentWriteError("another writer advanced a key of this batch")

    def discard(self) -> None:
        """Forget staged decisions (after a flush, or when the checkpoint is abandoned).

        The read connection goes back to the pool once per checkpoint, so a store that
        is dropped with its pipeline leaves no connection checked out for long.
        """
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._streams.clear()
        self._commands.clear()
        self._changed_methods.clear()
        self._changed_payments.clear()
        self._changed_customers.clear()
        self._loaded_payments.clear()
        self._changed_sequences.clear()
        self._read_versions.clear()
