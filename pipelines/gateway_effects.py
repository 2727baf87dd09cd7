"""The gateway side of each decision: customer profiles, saved cards, authorizations.

This is the one step that calls outside services for a command. Every call carries an
idempotency key derived from the command, so a replayed batch repeats its calls without
creating anything new. The User Service is asked for a profile only when the gateway
needs one and the command did not bring it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from clients.gateway import GatewayRefusedRequest, PaymentGateway, idempotency_key
from clients.user_service import Profile
from domain.model import CustomerReference, Decision, PaymentMethod, StreamState
from domain.outcome import reject
from domain.payment_rules import payment_instrument, settle_authorization
from schemas.commands import (
    AddPaymentMethod,
    Command,
    Customer,
    EraseUserData,
    InitiatePayment,
    RemovePaymentMethod,
)
from schemas.results import Reason

logger = logging.getLogger(__name__)


class ProfileNotFound(Exception):
    """The User Service does not know this user."""


class ProfileSource(Protocol):
    """Where profiles come from when a command lacks them (``ProfileLookup``)."""

    def profile(self, user_id: str) -> Profile | None: ...

    def forget(self, user_id: str) -> None: ...


class GatewayEffects:
    def __init__(self, gateway: PaymentGateway, profiles: ProfileSource) -> None:
        self._gateway = gateway
        self._profiles = profiles

    def needed(self, command: Command, decision: Decision) -> bool:
        """Whether ``apply`` may call out for this decision (else it returns it as is)."""
        return (
            decision.result.status == "accepted"
            and bool(decision.events)
            and isinstance(
                command, AddPaymentMethod | RemovePaymentMethod | EraseUserData | InitiatePayment
            )
        )

    def apply(
        self, command: Command, state: StreamState, decision: Decision, now: datetime
    ) -> Decision:
        """Carry out an accepted decision at the gateway; may add events or reject."""
        if not self.needed(command, decision):
            return decision
        try:
            match command:
                case AddPaymentMethod():
                    return self._save_card(command, state, decision)
                case RemovePaymentMethod():
                    return self._remove_card(command, state, decision)
                case EraseUserData():
                    return self._erase(command, state, decision)
                case InitiatePayment():
                    return self._authorize(command, state, decision, now)
        except ProfileNotFound:
            return reject(command, state, Reason.USER_NOT_FOUND)
        except GatewayRefusedRequest:
            # The gateway will not take this customer record or card; retrying cannot
            # change that, so the command is rejected rather than left waiting.
            return reject(command, state, Reason.GATEWAY_REFUSED)
        return decision

    def _profile(self, user_id: str, carried: Customer | None) -> Profile:
        if carried is not None:
            return Profile(name=carried.name, email=carried.email)
        profile = self._profiles.profile(user_id)
        if profile is None:
            raise ProfileNotFound
        return profile

    def _save_card(
        self, command: AddPaymentMethod, state: StreamState, decision: Decision
    ) -> Decision:
        if command.user_id is None:  # guests were rejected by the rule already
            return decision
        customer_id = state.gateway_customer_id
        if customer_id is None:
            # Once per user: the first saved card creates the gateway's customer record.
            profile = self._profile(command.user_id, command.payload.customer)
            customer_id = self._gateway.create_customer(
                name=profile.name,
                email=profile.email,
                idempotency_key=idempotency_key(command.command_id, "create-customer"),
            )
            decision = replace(decision, customer_reference=CustomerReference(customer_id))
        self._gateway.attach_payment_method(
            customer_id=customer_id,
            gateway_token=command.payload.gateway_token,
            idempotency_key=idempotency_key(command.command_id, "attach"),
        )
        return decision

    def _remove_card(
        self, command: RemovePaymentMethod, state: StreamState, decision: Decision
    ) -> Decision:
        removed = _method(state, command.payload.payment_method_id)
        if state.gateway_customer_id is not None and removed and removed.gateway_token:
            with _already_gone("detach a card"):
                self._gateway.detach_payment_method(
                    customer_id=state.gateway_customer_id,
                    gateway_token=removed.gateway_token,
                    idempotency_key=idempotency_key(command.command_id, "detach"),
                )
        return decision

    def _erase(self, command: EraseUserData, state: StreamState, decision: Decision) -> Decision:
        if command.user_id is None:  # guests were rejected by the rule already
            return decision
        self._profiles.forget(command.user_id)
        if state.gateway_customer_id is None:
            return decision
        with _already_gone("delete a customer"):
            self._gateway.delete_customer(
                customer_id=state.gateway_customer_id,
                idempotency_key=idempotency_key(command.command_id, "delete-customer"),
            )
        return replace(decision, customer_reference=CustomerReference(None))

    def _authorize(
        self, command: InitiatePayment, state: StreamState, decision: Decision, now: datetime
    ) -> Decision:
        # Fraud checks want the payer's email: from the command, else (for a user) the
        # User Service; a guest without one pays without it.
        carried = command.payload.customer
        email = carried.email if carried is not None else None
        if email is None and command.user_id is not None:
            email = self._profile(command.user_id, None).email
        answer = self._gateway.authorize(
            payment_id=command.payload.payment_id,
            amount=command.payload.amount,
            currency=command.payload.currency,
            gateway_token=payment_instrument(command, state),
            idempotency_key=idempotency_key(command.command_id, "authorize"),
            customer_id=state.gateway_customer_id,
            email=email,
        )
        return settle_authorization(command, decision, answer, now)


@contextmanager
def _already_gone(action: str) -> Iterator[None]:
    """A refused removal (e.g. 404: the gateway no longer has it) leaves nothing to undo."""
    try:
        yield
    except GatewayRefusedRequest as refusal:
        logger.warning(
            "the gateway refused to %s; nothing left to remove",
            action,
            extra={"error": str(refusal)},
        )


def _method(state: StreamState, payment_method_id: str) -> PaymentMethod | None:
    return next((m for m in state.methods if m.payment_method_id == payment_method_id), None)
