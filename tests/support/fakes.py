"""In-memory stand-ins for unit tests of the processor: no Postgres, no HTTP.

``MemoryStore`` keeps the contract of ``state.command_store.CommandStore`` (held to it by
``tests/integration/test_store_contract.py``);
``MemoryGateway`` answers as the sandbox gateway does, a repeated idempotency key with
its first answer; ``FixedProfiles`` knows every user. The benchmark's models and its
memory run use them too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from uuid import UUID

from domain.model import AuthorizationAnswer, Decision, KeyState, Payment, Profile, apply_decision
from state.command_store import ProcessedCommand


class MemoryStore:
    def __init__(self) -> None:
        self.commands: dict[UUID, ProcessedCommand] = {}
        self.states: dict[str, KeyState] = {}
        self.payments: dict[str, Payment] = {}
        # Which key holds each payment method id (ids are unique across keys).
        self.method_keys: dict[str, str] = {}

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None:
        return self.commands.get(command_id)

    def stored_outcome(self, command_id: UUID) -> ProcessedCommand | None:
        return self.commands.get(command_id)

    def key_state(
        self, key: str, named_payment_method_ids: Iterable[str], named_payment_ids: Iterable[str]
    ) -> KeyState:
        state = self.states.get(key) or KeyState(key)
        taken = frozenset(
            pid for pid in named_payment_method_ids if self.method_keys.get(pid, key) != key
        )
        named = tuple(self.payments[pid] for pid in named_payment_ids if pid in self.payments)
        return replace(state, taken_payment_method_ids=taken, payments=named)

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        assert processed.command_id not in self.commands, "the inbox takes a command once"
        self.commands[processed.command_id] = processed
        self.apply(key, decision)

    def apply(self, key: str, decision: Decision) -> None:
        """The state part of ``record``, without an inbox row (the benchmark's model)."""
        self.states[key] = apply_decision(self.states.get(key) or KeyState(key), decision)
        self.method_keys.update({m.payment_method_id: key for m in decision.changed_methods})
        self.payments.update({p.payment_id: p for p in decision.changed_payments})

    def flush(self) -> int:
        """Decisions are applied as they are recorded: nothing is left to write."""
        return 0

    def snapshot(self) -> tuple[object, ...]:
        return (
            dict(self.states),
            dict(self.payments),
            dict(self.method_keys),
            {k: replace(v) for k, v in self.commands.items()},
        )


class MemoryGateway:
    """Answers as the sandbox gateway does (a token that says ``decline`` is declined
    ``insufficient_funds``, every other one approved), with ids derived from the
    idempotency key, so a repeated key gets its first answer whether or not it is kept.

    ``answers`` keeps every key seen (for tests to inspect); ``remember=False`` keeps
    nothing, for runs of millions of commands.
    """

    def __init__(self, *, remember: bool = True) -> None:
        self.answers: dict[str, object] = {}
        self.calls = 0
        self._remember = remember

    def _once(self, key: str, make: object) -> object:
        self.calls += 1
        if not self._remember:
            return make
        return self.answers.setdefault(key, make)

    def create_customer(self, *, reference: str, idempotency_key: str) -> str:
        return str(self._once(idempotency_key, _derived("cus", idempotency_key)))

    def set_customer_profile(self, *, idempotency_key: str, **_: object) -> None:
        self._once(idempotency_key, None)

    def attach_payment_method(self, *, idempotency_key: str, **_: object) -> None:
        self._once(idempotency_key, None)

    def detach_payment_method(self, *, idempotency_key: str, **_: object) -> None:
        self._once(idempotency_key, None)

    def delete_customer(self, *, customer_id: str, idempotency_key: str) -> None:
        self._once(idempotency_key, None)

    def authorize(
        self, *, idempotency_key: str, gateway_token: str = "", **_: object
    ) -> AuthorizationAnswer:
        if "decline" in gateway_token:
            answer = AuthorizationAnswer(approved=False, decline_code="insufficient_funds")
        else:
            answer = AuthorizationAnswer(
                approved=True, authorization_id=_derived("auth", idempotency_key)
            )
        result = self._once(idempotency_key, answer)
        assert isinstance(result, AuthorizationAnswer)
        return result

    def cancel_authorization(self, *, request_key: str, idempotency_key: str, **_: object) -> bool:
        self._once(idempotency_key, None)
        return request_key in self.answers


def _derived(prefix: str, idempotency_key: str) -> str:
    return f"{prefix}_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


class FixedProfiles:
    def profile(self, user_id: str) -> Profile | None:
        return Profile(name="Test Person", email="test.person@example.com")

    def forget(self, user_id: str) -> None:
        return None
