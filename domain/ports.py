"""What carrying out a decision needs from outside: a payment gateway and a source of
profiles. The clients implement these (``clients.gateway``, ``clients.user_service``);
so do the in-memory stand-ins of the tests and the models of the benchmark and chaos run.

Every gateway call carries an idempotency key derived from the command, because a
replayed batch repeats its calls: the gateway answers a repeated key with its first
answer and creates nothing new (DESIGN.md §5.6). The keys are part of the rule, so they
are made here, once.
"""

from __future__ import annotations

import hashlib
from typing import Protocol
from uuid import UUID, uuid5

from domain.model import AuthorizationAnswer, Profile


def idempotency_key(command_id: UUID, operation: str) -> str:
    """The same command and operation always give the same key, on any worker."""
    return str(uuid5(command_id, f"gateway:{operation}"))


def profile_key(command_id: UUID, name: str, email: str) -> str:
    """The key of a ``set_customer_profile`` call: the same profile, the same key; a
    profile that changed between two tries gets its own key (setting it is harmless)."""
    digest = hashlib.sha256(f"{name}\0{email}".encode()).hexdigest()[:32]
    return idempotency_key(command_id, f"set-customer-profile:{digest}")


class PaymentGateway(Protocol):
    """What the worker needs from a payment gateway.

    A call raises a ``domain.errors.FinalAnswer`` for an answer that retrying cannot
    change, and ``TransientError`` for one that may pass.
    """

    def create_customer(self, *, reference: str, idempotency_key: str) -> str: ...

    def set_customer_profile(
        self, *, customer_id: str, name: str, email: str, idempotency_key: str
    ) -> None: ...

    def attach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None: ...

    def detach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None: ...

    def delete_customer(self, *, customer_id: str, idempotency_key: str) -> None: ...

    def authorize(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        gateway_token: str,
        idempotency_key: str,
        customer_id: str | None = None,
        email: str | None = None,
    ) -> AuthorizationAnswer: ...

    def cancel_authorization(
        self, *, request_key: str, payment_id: str, idempotency_key: str, reason: str
    ) -> bool:
        """Void what the request under ``request_key`` made; True when it had made an
        authorization. ``reason`` says why (for the client's counters and logs)."""
        ...


class ProfileSource(Protocol):
    """Where profiles come from when a command lacks them (``ProfileLookup``)."""

    def profile(self, user_id: str) -> Profile | None:
        """``None``: the user does not exist; raises ``ProfileUnusable`` for an answer
        that can never be a profile."""
        ...

    def forget(self, user_id: str) -> None: ...
