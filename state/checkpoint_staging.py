"""A checkpoint's staged decisions: an overlay on the committed key states until written.

Decisions of one checkpoint are kept in memory until the checkpoint commits: a command
must see the effects of the commands before it in the same batch, and Postgres is
written once per checkpoint (one transaction), not once per command. What is staged here
wins over what is cached or read; ``state.checkpoint_writes`` writes it, and once that
transaction has committed, the written states become the cache's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from uuid import UUID

from domain.model import Decision, KeyState, Payment, PaymentMethod, apply_decision
from state.inbox import ProcessedCommand
from state.key_state_cache import CachedKey, KeyStateCache, any_removed_with_data, cache_entry


@dataclass(slots=True)
class StagedKey:
    """A key's state with this checkpoint's decisions applied (changed methods kept)."""

    state: KeyState
    removed_with_data: bool


class CheckpointStaging:
    """This checkpoint's decisions, not yet in Postgres, over the keys as committed
    (``committed``: a key's cache entry, read from Postgres if it is not cached)."""

    def __init__(self, committed: Callable[[str], CachedKey]) -> None:
        self._committed = committed
        self.key_states: dict[str, StagedKey] = {}
        self.commands: dict[UUID, ProcessedCommand] = {}
        self.changed_methods: dict[str, PaymentMethod] = {}
        self.changed_payments: dict[str, Payment] = {}
        self.changed_customers: dict[str, str | None] = {}
        self.changed_sequences: dict[str, int] = {}

    def current(self, key: str) -> tuple[KeyState, bool]:
        """The state of ``key`` with what this checkpoint decided, and whether a removed
        method of it may still hold personal data."""
        staged = self.key_states.get(key)
        if staged is not None:
            return staged.state, staged.removed_with_data
        known = self._committed(key)
        return known.state, known.removed_with_data

    def stage(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        self.commands[processed.command_id] = processed
        state, removed_with_data = self.current(key)
        after = apply_decision(state, decision)
        for method in decision.changed_methods:
            self.changed_methods[method.payment_method_id] = method
        for payment in decision.changed_payments:
            self.changed_payments[payment.payment_id] = payment
        if after.last_sequence != state.last_sequence:
            self.changed_sequences[key] = after.last_sequence
        if decision.customer_reference is not None:
            self.changed_customers[key] = after.gateway_customer_id
        self.key_states[key] = StagedKey(
            after, removed_with_data or any_removed_with_data(decision.changed_methods)
        )

    def no_removed_data(self, key: str) -> None:
        """No removed method of ``key`` holds personal data: stop looking for them."""
        staged = self.key_states.get(key)
        if staged is not None:
            staged.removed_with_data = False

    def commit_to_cache(self, cache: KeyStateCache, recent_commands: int) -> None:
        """Keep the written states, without their removed methods, and the newest ids."""
        new_ids: dict[str, list[int]] = {}
        for command in self.commands.values():
            new_ids.setdefault(command.stream_key, []).append(command.command_id.int)
        for key, staged in self.key_states.items():
            before = cache.peek(key)
            ids = (before.recent_ids if before is not None else ()) + tuple(new_ids.get(key, ()))
            state = staged.state
            if not all(method.active for method in state.methods):
                state = replace(state, methods=tuple(m for m in state.methods if m.active))
            cache.remember(
                key,
                cache_entry(key, state, ids[-recent_commands:], staged.removed_with_data),
            )

    def clear(self) -> None:
        self.key_states.clear()
        self.commands.clear()
        self.changed_methods.clear()
        self.changed_payments.clear()
        self.changed_customers.clear()
        self.changed_sequences.clear()
