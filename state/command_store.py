"""Reads what decisions need and writes a whole checkpoint's decisions in one transaction.

Decisions of one checkpoint are kept in memory until the checkpoint commits: a command
must see the effects of the commands before it in the same batch, and Postgres is
written once per checkpoint (one transaction), not once per command. The Kafka
transaction of the same checkpoint commits only after this write succeeds; if it then
fails, the redelivered commands find their stored outcome in the inbox and re-emit it.

A key's state, and the ids of its newest commands, stay cached across checkpoints while
this worker keeps them: reading them once per key instead of once per command is what
lets the worker keep up. The cache is safe without knowing about rebalances, because
every write is fenced. A key's event sequence is its version: a checkpoint advances it
only from the value it read (``UPDATE ... WHERE last_sequence = read``), and the inbox
takes a command id only once. If another worker wrote in between, for example while this
one was paused and lost its partitions, the checkpoint fails, and the pipeline restarts
from its last commit with an empty cache. Ids that clashed are remembered in
``WriteConflicts``, which outlives the restart, so the retry looks them up instead of
deciding them again.

Memory is bounded by what is cached, not by how many commands or users go by: the
key-state cache (``state.key_state_cache``) says what it holds per key and how its size
is estimated.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Engine,
    RowMapping,
    Text,
    and_,
    any_,
    bindparam,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.engine import Connection

from domain.errors import TransientError
from domain.model import Decision, KeyState, Payment, PaymentMethod
from domain.streams import stream_user_id
from schemas.errors import InvalidMessage
from state.checkpoint_staging import CheckpointStaging
from state.checkpoint_writes import write_checkpoint
from state.inbox import ProcessedCommand, processed_from_row, read_stored_outcome
from state.key_state_cache import (
    CachedKey,
    KeyStateCache,
    any_removed_with_data,
    cache_entry,
)
from state.tables import (
    payment_methods,
    payments,
    processed_commands,
)
from state.write_fences import (
    ConcurrentWriteError,
    UnstorableBatch,
    WriteConflicts,
    fenced_database_errors,
)

# What the processor, the wiring and the tests use: the store and the types of its methods.
__all__ = [
    "CommandStore",
    "ConcurrentWriteError",
    "ProcessedCommand",
    "UnstorableBatch",
    "WriteConflicts",
]


def _method_from_row(row: RowMapping) -> PaymentMethod:
    return PaymentMethod(**{column: row[column] for column in PaymentMethod.__slots__})


def _payment_from_row(row: RowMapping) -> Payment:
    return Payment(**{column: row[column] for column in Payment.__slots__})


def _array(values: list[Any], item_type: Any) -> BindParameter[Any]:
    """One array parameter (``= ANY(:values)``): a statement that compiles once, whatever
    the number of values, where ``IN`` expands to one parameter per value."""
    return bindparam(None, values, type_=ARRAY(item_type))


def _method_order(method: PaymentMethod) -> tuple[datetime, str]:
    return method.created_at, method.payment_method_id


# One row per active payment method of each key (or one row of NULL method columns for a
# key without any), each carrying the key's other values.
_LOAD_STREAMS = text(
    """
    SELECT k.key AS stream_key_, s.last_sequence, c.customer_id, recent.command_ids,
           removed.with_data, m.*
    FROM unnest(CAST(:keys AS text[]), CAST(:user_ids AS text[])) AS k(key, user_id)
    LEFT JOIN stream_sequences AS s ON s.stream_key = k.key
    LEFT JOIN gateway_customers AS c ON c.user_id = k.user_id
    LEFT JOIN LATERAL (
        SELECT array_agg(p.command_id ORDER BY p.processed_at) AS command_ids
        FROM (
            SELECT command_id, processed_at FROM processed_commands
            WHERE stream_key = k.key ORDER BY processed_at DESC LIMIT :recent
        ) AS p
    ) AS recent ON true
    CROSS JOIN LATERAL (
        SELECT EXISTS (
            SELECT FROM payment_methods AS r
            WHERE r.user_id = k.user_id AND NOT r.active
            AND (r.gateway_token IS NOT NULL OR r.billing_name IS NOT NULL)
        ) AS with_data
    ) AS removed
    LEFT JOIN payment_methods AS m ON m.user_id = k.user_id AND m.active
    ORDER BY k.key, m.created_at, m.payment_method_id
    """
)


class CommandStore:
    """The per-checkpoint unit of work over the inbox and the payment method tables."""

    def __init__(
        self,
        engine: Engine,
        *,
        cached_keys: int = 50_000,
        max_cached_bytes: int = 96 * 2**20,
        recent_commands: int = 16,
        conflicts: WriteConflicts | None = None,
    ) -> None:
        if min(cached_keys, max_cached_bytes, recent_commands) < 1:
            raise ValueError("the cache bounds must be positive")
        self._engine = engine
        self._recent_commands = recent_commands
        self._conflicts = conflicts if conflicts is not None else WriteConflicts()
        self._reader: Connection | None = None
        self._cache = KeyStateCache(cached_keys, max_cached_bytes)
        # This checkpoint's decisions, not yet in Postgres.
        self._staging = CheckpointStaging(self._known_stream)
        # Payments as read from Postgres in this checkpoint: their writes are conditional
        # on still being so, because payments are shared across keys and partitions.
        self._loaded_payments: dict[str, Payment] = {}
        # The sequence (version) of each key as this checkpoint first read it; the write
        # is fenced on it, for keys whose decisions changed nothing too (a rejection
        # decided on an outdated state must not be stored either).
        self._read_versions: dict[str, int] = {}
        # Inbox answers read ahead for a batch's command ids (``prefetch``), each used once.
        self._inbox_checked: dict[UUID, ProcessedCommand | None] = {}
        # Rows of the ids a batch's commands name, read ahead (``prefetch``); None: absent.
        self._prefetched_methods: dict[str, PaymentMethod | None] = {}
        self._prefetched_payments: dict[str, Payment | None] = {}

    @property
    def pending_commands(self) -> int:
        return len(self._staging.commands)

    @property
    def cached_keys(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """The cache's estimated size; at most ``max_cached_bytes`` between calls."""
        return self._cache.size_bytes

    # --- reads -------------------------------------------------------------------------

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None:
        """The stored outcome of ``command_id``, if it was processed before.

        Only a command id among the key's newest ones, or one that clashed before, costs
        a query; an id used earlier under another key, or long ago, is caught by the
        inbox's primary key when the checkpoint is written (see the module docstring).
        """
        pending = self._staging.commands.get(command_id)
        if pending is not None:
            return pending
        if command_id in self._inbox_checked:
            return self._inbox_checked.pop(command_id)
        known = self._known_stream(key)
        if command_id.int not in known.recent_ids and command_id not in self._conflicts.command_ids:
            return None
        return self.stored_outcome(command_id)

    def stored_outcome(self, command_id: UUID) -> ProcessedCommand | None:
        """The stored outcome of ``command_id``, read from PostgreSQL now, whatever is
        cached or was read ahead: what another worker committed since is seen."""
        pending = self._staging.commands.get(command_id)
        if pending is not None:
            return pending
        with fenced_database_errors():
            return read_stored_outcome(self._read(), command_id)

    def key_state(
        self,
        key: str,
        named_payment_method_ids: Iterable[str] = (),
        named_payment_ids: Iterable[str] = (),
    ) -> KeyState:
        """The state of one key as the next decision must see it.

        ``named_payment_method_ids`` are ids the command wants to use; any of them that
        belongs to another key is reported in ``taken_payment_method_ids``, and any that
        is a removed method of this key's is added to its methods (both from one query).
        ``named_payment_ids`` are payments the command names, loaded whoever owns them.
        A command that names neither may be an erasure: this key's removed methods that
        still hold a token or a billing name are added for it, if it has any.
        """
        state, removed_with_data = self._staging.current(key)
        named = list(named_payment_method_ids)
        payment_ids = list(named_payment_ids)
        own_ids = {method.payment_method_id for method in state.methods}
        foreign = [pid for pid in named if pid not in own_ids]
        with_removed = removed_with_data and not named and not payment_ids
        if not foreign and not payment_ids and not with_removed:
            return state
        with fenced_database_errors():
            taken, removed = (
                self._named_methods(key, foreign, with_removed, own_ids)
                if foreign or with_removed
                else (frozenset(), ())
            )
            named_payments = self._payments(payment_ids) if payment_ids else ()
        if with_removed and not removed and not any_removed_with_data(state.methods):
            self._no_removed_data(key)
        methods = state.methods
        if removed:
            # In the order of a full read (creation), so that decisions see what they did
            # when every method was read.
            methods = tuple(heapq.merge(methods, removed, key=_method_order))
        return replace(
            state, methods=methods, taken_payment_method_ids=taken, payments=named_payments
        )

    def _no_removed_data(self, key: str) -> None:
        """No removed method of ``key`` holds personal data: stop looking for them."""
        self._staging.no_removed_data(key)
        self._cache.no_removed_data(key)

    def _read(self) -> Connection:
        """One autocommit connection for reads: no pool checkout (and ping) per query."""
        if self._reader is None or self._reader.closed or self._reader.invalidated:
            self._reader = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._reader

    def _known_stream(self, key: str) -> CachedKey:
        known = self._cache.use(key)
        if known is None:
            with fenced_database_errors():
                known = self._load_stream(key)
            self._cache.remember(key, known)
        self._read_versions.setdefault(key, known.state.last_sequence)
        return known

    def forget_cached(self) -> None:
        """Drop every cached key (this worker gave up partitions; others may write them)."""
        self._cache.clear()
        self._inbox_checked.clear()
        self._prefetched_methods.clear()
        self._prefetched_payments.clear()

    def _payments(self, ids: list[str]) -> tuple[Payment, ...]:
        found = {
            pid: self._staging.changed_payments[pid]
            for pid in ids
            if pid in self._staging.changed_payments
        }
        for pid in ids:
            if pid not in found and pid in self._prefetched_payments:
                payment = self._prefetched_payments[pid]
                if payment is not None:
                    self._loaded_payments[pid] = payment
                    found[pid] = payment
        missing = [pid for pid in ids if pid not in found and pid not in self._prefetched_payments]
        if missing:
            rows = (
                self._read()
                .execute(select(payments).where(payments.c.payment_id.in_(missing)))
                .mappings()
            )
            loaded = {row["payment_id"]: _payment_from_row(row) for row in rows}
            self._loaded_payments.update(loaded)
            found.update(loaded)
        return tuple(found[pid] for pid in ids if pid in found)

    def _load_stream(self, key: str) -> CachedKey:
        return self._load_streams([key])[key]

    def _load_streams(self, keys: list[str]) -> dict[str, CachedKey]:
        """Keys' active methods, sequences, gateway customers and newest command ids, and
        whether a removed method still holds personal data, in one query for all keys:
        one round trip per batch is most of what reading costs."""
        rows = (
            self._read()
            .execute(
                _LOAD_STREAMS,
                {
                    "keys": keys,
                    # A guest payment's stream has no user: no methods, no gateway customer.
                    "user_ids": [stream_user_id(key) for key in keys],
                    "recent": self._recent_commands,
                },
            )
            .mappings()
            .all()
        )
        by_key: dict[str, list[Any]] = {}
        for row in rows:
            by_key.setdefault(row["stream_key_"], []).append(row)
        loaded = {}
        for key, key_rows in by_key.items():
            first = key_rows[0]
            state = KeyState(
                key=key,
                last_sequence=first["last_sequence"] or 0,
                methods=tuple(
                    PaymentMethod(**{column: row[column] for column in PaymentMethod.__slots__})
                    for row in key_rows
                    if row["payment_method_id"] is not None
                ),
                gateway_customer_id=first["customer_id"],
            )
            recent_ids = tuple(command_id.int for command_id in first["command_ids"] or ())
            loaded[key] = cache_entry(key, state, recent_ids, bool(first["with_data"]))
        return loaded

    def prefetch(
        self,
        keys: Iterable[str],
        command_ids: Iterable[UUID],
        payment_method_ids: Iterable[str] = (),
        payment_ids: Iterable[str] = (),
    ) -> None:
        """Read what a batch's decisions need, one query each: the inbox rows of its
        command ids, the state of its keys that are not cached, and the payment methods
        and payments its commands name (to tell whose they are).

        Afterwards ``processed_command`` answers for these ids without a query (also for
        an id used long ago or under another key), and ``key_state`` looks the named
        ids up here. What the batch itself changes is staged and wins over these rows;
        what another worker changes meanwhile fails the fenced write (module docstring).
        """
        ids = [cid for cid in command_ids if cid not in self._inbox_checked]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        # Rows read since the last write are still what Postgres holds for this worker
        # (``discard`` drops them after each write): only new ids cost a query. Commands
        # held by an outage are not read again batch after batch.
        method_ids = [
            pid for pid in dict.fromkeys(payment_method_ids) if pid not in self._prefetched_methods
        ]
        named_payments = [
            pid for pid in dict.fromkeys(payment_ids) if pid not in self._prefetched_payments
        ]
        with fenced_database_errors():
            if ids:
                rows = (
                    self._read()
                    .execute(
                        select(processed_commands).where(
                            processed_commands.c.command_id == any_(_array(ids, PG_UUID()))
                        )
                    )
                    .mappings()
                )
                found = {row["command_id"]: processed_from_row(row) for row in rows}
                for command_id in ids:
                    self._inbox_checked[command_id] = found.get(command_id)
            if missing:
                for key, known in self._load_streams(missing).items():
                    self._cache.remember(key, known)
            if method_ids:
                statement = select(payment_methods).where(
                    payment_methods.c.payment_method_id == any_(_array(method_ids, Text()))
                )
                self._prefetched_methods.update(dict.fromkeys(method_ids))
                for row in self._read().execute(statement).mappings():
                    self._prefetched_methods[row["payment_method_id"]] = _method_from_row(row)
            if named_payments:
                statement = select(payments).where(
                    payments.c.payment_id == any_(_array(named_payments, Text()))
                )
                self._prefetched_payments.update(dict.fromkeys(named_payments))
                for row in self._read().execute(statement).mappings():
                    self._prefetched_payments[row["payment_id"]] = _payment_from_row(row)

    def _named_methods(
        self, key: str, ids: list[str], with_removed: bool, own_ids: set[str]
    ) -> tuple[frozenset[str], tuple[PaymentMethod, ...]]:
        """Which of ``ids`` are another key's, and this key's removed methods among them
        (with, for a possible erasure, those that still hold personal data), in one query.

        A method staged in this checkpoint for another key is taken too; one staged for
        this key is already in its state (``own_ids``), which wins over Postgres. An
        active method of this key that its state lacks means the state is outdated: it is
        ignored, so that the decision is the one the outdated state gives (the write is
        fenced and fails anyway, see the module docstring).
        """
        user_id = stream_user_id(key)
        taken = {pid for pid in ids if pid in self._staging.changed_methods}
        conditions: list[ColumnElement[bool]] = (
            [payment_methods.c.payment_method_id.in_(ids)] if ids else []
        )
        if with_removed and user_id is not None:
            conditions.append(
                and_(
                    payment_methods.c.user_id == user_id,
                    payment_methods.c.active.is_(False),
                    or_(
                        payment_methods.c.gateway_token.is_not(None),
                        payment_methods.c.billing_name.is_not(None),
                    ),
                )
            )
        if not conditions:
            return frozenset(taken), ()
        found: list[PaymentMethod]
        if not with_removed and all(pid in self._prefetched_methods for pid in ids):
            found = [m for pid in ids if (m := self._prefetched_methods[pid]) is not None]
        else:
            rows = self._read().execute(select(payment_methods).where(or_(*conditions)))
            found = [_method_from_row(row) for row in rows.mappings()]
        removed: list[PaymentMethod] = []
        for method in found:
            if method.user_id != user_id:
                taken.add(method.payment_method_id)
            elif not method.active and method.payment_method_id not in own_ids:
                removed.append(method)
        removed.sort(key=_method_order)
        return frozenset(taken), tuple(removed)

    # --- writes ------------------------------------------------------------------------

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        """Stage one decision; nothing reaches Postgres before ``flush``.

        A command of a checkpoint that PostgreSQL refused is written at once, alone,
        after the decisions staged before it: if PostgreSQL refuses it again, this raises
        ``InvalidMessage(processing_failed)`` and nothing of it is kept. Writing before
        the Kafka transaction commits is safe: a redelivery finds the stored outcome.
        """
        if processed.command_id not in self._conflicts.suspects:
            self._staging.stage(processed, key, decision)
            return
        self.flush()
        self._staging.stage(processed, key, decision)
        try:
            self._write_staged()
        finally:
            self._conflicts.suspects.discard(processed.command_id)

    def flush(self) -> int:
        """Write every staged decision in one transaction; returns the command count.

        The transaction fails, and nothing of it is applied, if another writer stored
        one of these commands or advanced one of these keys since this worker read it.
        """
        staged = list(self._staging.commands)
        try:
            return self._write_staged()
        except TransientError:
            raise
        except Exception as refused:
            # PostgreSQL refused a value (InvalidMessage, see state.errors) or the write
            # failed in a way that repeats: find the command at fault by writing each alone.
            self._conflicts.suspect(staged)
            detail = (
                refused.detail if isinstance(refused, InvalidMessage) else type(refused).__name__
            )
            raise UnstorableBatch(detail) from None

    def _write_staged(self) -> int:
        if not self._staging.commands:
            self.discard()
            return 0
        count = len(self._staging.commands)
        try:
            with fenced_database_errors(), self._engine.begin() as connection:
                write_checkpoint(
                    connection,
                    self._staging,
                    self._read_versions,
                    self._loaded_payments,
                    self._conflicts,
                )
        except ConcurrentWriteError:
            self.forget_cached()
            raise
        else:
            self._staging.commit_to_cache(self._cache, self._recent_commands)
        finally:
            self.discard()
        return count

    def discard(self) -> None:
        """Forget staged decisions (after a flush, or when the checkpoint is abandoned).

        The read connection goes back to the pool once per checkpoint, so a store that
        is dropped with its pipeline leaves no connection checked out for long.
        """
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._staging.clear()
        self._loaded_payments.clear()
        self._read_versions.clear()
        # Read before what was just written: a command decided later must read again.
        self._prefetched_methods.clear()
        self._prefetched_payments.clear()
