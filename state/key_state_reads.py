"""Reads what decisions need: key states, in one query for many keys, read through the
key-state cache; and for a batch, read ahead, the inbox rows of its command ids and the
payment methods and payments its commands name.

A key's state, and the ids of its newest commands, stay cached across checkpoints while
this worker keeps them: reading them once per key instead of once per command is what
lets the worker keep up. Reads go through one autocommit connection, given back once per
checkpoint (``end_checkpoint``). What this checkpoint read is noted for its writes,
which are conditional on it: each key's version as first read (``read_versions``) and
the payments as loaded (``loaded_payments``); see ``state.write_fences``.
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

from domain.model import KeyState, Payment, PaymentMethod
from domain.streams import stream_user_id
from state.checkpoint_staging import CheckpointStaging
from state.inbox import ProcessedCommand, processed_from_row
from state.key_state_cache import CachedKey, KeyStateCache, any_removed_with_data, cache_entry
from state.tables import payment_methods, payments, processed_commands
from state.write_fences import fenced_database_errors


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
_LOAD_KEY_STATES = text(
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


class KeyStateReads:
    """The reads of one store: what its decisions see beyond what they staged."""

    def __init__(self, engine: Engine, cache: KeyStateCache, recent_commands: int) -> None:
        self._engine = engine
        self._cache = cache
        self._recent_commands = recent_commands
        self._reader: Connection | None = None
        # Payments as read from Postgres in this checkpoint: their writes are conditional
        # on still being so, because payments are shared across keys and partitions.
        self.loaded_payments: dict[str, Payment] = {}
        # The sequence (version) of each key as this checkpoint first read it; the write
        # is fenced on it, for keys whose decisions changed nothing too (a rejection
        # decided on an outdated state must not be stored either).
        self.read_versions: dict[str, int] = {}
        # Inbox answers read ahead for a batch's command ids (``prefetch``), each used once.
        self.inbox_checked: dict[UUID, ProcessedCommand | None] = {}
        # Rows of the ids a batch's commands name, read ahead (``prefetch``); None: absent.
        self._prefetched_methods: dict[str, PaymentMethod | None] = {}
        self._prefetched_payments: dict[str, Payment | None] = {}

    def key_state(
        self,
        staging: CheckpointStaging,
        key: str,
        named_payment_method_ids: Iterable[str] = (),
        named_payment_ids: Iterable[str] = (),
    ) -> KeyState:
        """The state of one key as the next decision must see it: as ``staging`` has it.

        ``named_payment_method_ids`` are ids the command wants to use; any of them that
        belongs to another key is reported in ``taken_payment_method_ids``, and any that
        is a removed method of this key's is added to its methods (both from one query).
        ``named_payment_ids`` are payments the command names, loaded whoever owns them.
        A command that names neither may be an erasure: this key's removed methods that
        still hold a token or a billing name are added for it, if it has any.
        """
        state, removed_with_data = staging.current(key)
        named = list(named_payment_method_ids)
        payment_ids = list(named_payment_ids)
        own_ids = {method.payment_method_id for method in state.methods}
        foreign = [pid for pid in named if pid not in own_ids]
        with_removed = removed_with_data and not named and not payment_ids
        if not foreign and not payment_ids and not with_removed:
            return state
        with fenced_database_errors():
            taken, removed = (
                self._named_methods(staging, key, foreign, with_removed, own_ids)
                if foreign or with_removed
                else (frozenset(), ())
            )
            named_payments = self._payments(staging, payment_ids) if payment_ids else ()
        if with_removed and not removed and not any_removed_with_data(state.methods):
            self._no_removed_data(staging, key)
        methods = state.methods
        if removed:
            # In the order of a full read (creation), so that decisions see what they did
            # when every method was read.
            methods = tuple(heapq.merge(methods, removed, key=_method_order))
        return replace(
            state, methods=methods, taken_payment_method_ids=taken, payments=named_payments
        )

    def _no_removed_data(self, staging: CheckpointStaging, key: str) -> None:
        """No removed method of ``key`` holds personal data: stop looking for them."""
        staging.no_removed_data(key)
        self._cache.no_removed_data(key)

    def connection(self) -> Connection:
        """One autocommit connection for reads: no pool checkout (and ping) per query."""
        if self._reader is None or self._reader.closed or self._reader.invalidated:
            self._reader = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self._reader

    def committed(self, key: str) -> CachedKey:
        """``key`` as committed: from the cache, else read (and cached); its version is
        noted the first time this checkpoint reads it."""
        known = self._cache.use(key)
        if known is None:
            with fenced_database_errors():
                known = self._load_key_state(key)
            self._cache.remember(key, known)
        self.read_versions.setdefault(key, known.state.last_sequence)
        return known

    def _payments(self, staging: CheckpointStaging, ids: list[str]) -> tuple[Payment, ...]:
        found = {
            pid: staging.changed_payments[pid] for pid in ids if pid in staging.changed_payments
        }
        for pid in ids:
            if pid not in found and pid in self._prefetched_payments:
                payment = self._prefetched_payments[pid]
                if payment is not None:
                    self.loaded_payments[pid] = payment
                    found[pid] = payment
        missing = [pid for pid in ids if pid not in found and pid not in self._prefetched_payments]
        if missing:
            rows = (
                self.connection()
                .execute(select(payments).where(payments.c.payment_id.in_(missing)))
                .mappings()
            )
            loaded = {row["payment_id"]: _payment_from_row(row) for row in rows}
            self.loaded_payments.update(loaded)
            found.update(loaded)
        return tuple(found[pid] for pid in ids if pid in found)

    def _load_key_state(self, key: str) -> CachedKey:
        return self._load_key_states([key])[key]

    def _load_key_states(self, keys: list[str]) -> dict[str, CachedKey]:
        """Keys' active methods, sequences, gateway customers and newest command ids, and
        whether a removed method still holds personal data, in one query for all keys:
        one round trip per batch is most of what reading costs."""
        rows = (
            self.connection()
            .execute(
                _LOAD_KEY_STATES,
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

        Afterwards ``inbox_checked`` answers for these ids without a query (also for
        an id used long ago or under another key; ``CommandStore.processed_command``
        takes its answers from there), and ``key_state`` looks the named ids up here.
        What the batch itself changes is staged and wins over these rows; what another
        worker changes meanwhile fails the fenced write (``state.write_fences``).
        """
        ids = [cid for cid in command_ids if cid not in self.inbox_checked]
        missing = list(dict.fromkeys(key for key in keys if key not in self._cache))
        # Rows read since the last write are still what Postgres holds for this worker
        # (``end_checkpoint`` drops them after each write): only new ids cost a query.
        # Commands held by an outage are not read again batch after batch.
        method_ids = [
            pid for pid in dict.fromkeys(payment_method_ids) if pid not in self._prefetched_methods
        ]
        named_payments = [
            pid for pid in dict.fromkeys(payment_ids) if pid not in self._prefetched_payments
        ]
        with fenced_database_errors():
            if ids:
                rows = (
                    self.connection()
                    .execute(
                        select(processed_commands).where(
                            processed_commands.c.command_id == any_(_array(ids, PG_UUID()))
                        )
                    )
                    .mappings()
                )
                found = {row["command_id"]: processed_from_row(row) for row in rows}
                for command_id in ids:
                    self.inbox_checked[command_id] = found.get(command_id)
            if missing:
                for key, known in self._load_key_states(missing).items():
                    self._cache.remember(key, known)
            if method_ids:
                statement = select(payment_methods).where(
                    payment_methods.c.payment_method_id == any_(_array(method_ids, Text()))
                )
                self._prefetched_methods.update(dict.fromkeys(method_ids))
                for row in self.connection().execute(statement).mappings():
                    self._prefetched_methods[row["payment_method_id"]] = _method_from_row(row)
            if named_payments:
                statement = select(payments).where(
                    payments.c.payment_id == any_(_array(named_payments, Text()))
                )
                self._prefetched_payments.update(dict.fromkeys(named_payments))
                for row in self.connection().execute(statement).mappings():
                    self._prefetched_payments[row["payment_id"]] = _payment_from_row(row)

    def _named_methods(
        self,
        staging: CheckpointStaging,
        key: str,
        ids: list[str],
        with_removed: bool,
        own_ids: set[str],
    ) -> tuple[frozenset[str], tuple[PaymentMethod, ...]]:
        """Which of ``ids`` are another key's, and this key's removed methods among them
        (with, for a possible erasure, those that still hold personal data), in one query.

        A method staged in this checkpoint for another key is taken too; one staged for
        this key is already in its state (``own_ids``), which wins over Postgres. An
        active method of this key that its state lacks means the state is outdated: it is
        ignored, so that the decision is the one the outdated state gives (the write is
        fenced and fails anyway, see ``state.write_fences``).
        """
        user_id = stream_user_id(key)
        taken = {pid for pid in ids if pid in staging.changed_methods}
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
            rows = self.connection().execute(select(payment_methods).where(or_(*conditions)))
            found = [_method_from_row(row) for row in rows.mappings()]
        removed: list[PaymentMethod] = []
        for method in found:
            if method.user_id != user_id:
                taken.add(method.payment_method_id)
            elif not method.active and method.payment_method_id not in own_ids:
                removed.append(method)
        removed.sort(key=_method_order)
        return frozenset(taken), tuple(removed)

    def end_checkpoint(self) -> None:
        """Give the read connection back, and forget what this checkpoint read."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self.loaded_payments.clear()
        self.read_versions.clear()
        # Read before what was just written: a command decided later must read again.
        self._prefetched_methods.clear()
        self._prefetched_payments.clear()

    def forget_read_ahead(self) -> None:
        """Forget every row read ahead (the cache was dropped; others may write them)."""
        self.inbox_checked.clear()
        self._prefetched_methods.clear()
        self._prefetched_payments.clear()
