"""An in-memory ``DecisionStore`` for unit tests of the processor (no Postgres).

It keeps the contract of ``state.command_store.CommandStore``: staged decisions are
visible to later commands at once and become durable at ``flush``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from uuid import UUID

from domain.model import Payment, PaymentMethod, StreamState
from state.command_store import ProcessedCommand


class MemoryStore:
    def __init__(self) -> None:
        self.commands: dict[UUID, ProcessedCommand] = {}
        self.methods: dict[str, PaymentMethod] = {}
        self.payments: dict[str, Payment] = {}
        self.sequences: dict[str, int] = {}

    def processed_command(self, command_id: UUID) -> ProcessedCommand | None:
        return self.commands.get(command_id)

    def stream_state(
        self, key: str, named_payment_method_ids: Iterable[str], named_payment_ids: Iterable[str]
    ) -> StreamState:
        own = tuple(m for m in self.methods.values() if m.user_id == key)
        own_ids = {m.payment_method_id for m in own}
        taken = frozenset(
            pid for pid in named_payment_method_ids if pid in self.methods and pid not in own_ids
        )
        named = tuple(self.payments[pid] for pid in named_payment_ids if pid in self.payments)
        return StreamState(key, self.sequences.get(key, 0), own, taken, named)

    def record(
        self,
        processed: ProcessedCommand,
        key: str,
        last_sequence: int,
        changed_methods: Iterable[PaymentMethod],
        changed_payments: Iterable[Payment],
    ) -> None:
        assert processed.command_id not in self.commands, "the inbox takes a command once"
        self.commands[processed.command_id] = processed
        self.sequences[key] = last_sequence
        self.methods.update({m.payment_method_id: m for m in changed_methods})
        self.payments.update({p.payment_id: p for p in changed_payments})

    def snapshot(self) -> tuple[object, ...]:
        return (
            dict(self.methods),
            dict(self.payments),
            dict(self.sequences),
            {k: replace(v) for k, v in self.commands.items()},
        )
