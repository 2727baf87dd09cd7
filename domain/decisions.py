"""``decide(command, state, now)``: the business rules of every command, without I/O; and
which decisions create the user's gateway customer when they are carried out."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from domain.model import Decision, KeyState
from domain.payment_method_rules import (
    decide_add_payment_method,
    decide_erase_user_data,
    decide_remove_payment_method,
    decide_set_default_payment_method,
    decide_update_payment_method,
)
from domain.payment_rules import decide_initiate_payment, decide_link_guest_payments
from schemas.commands import (
    AddPaymentMethod,
    Command,
    EraseUserData,
    InitiatePayment,
    LinkGuestPayments,
    RemovePaymentMethod,
    SetDefaultPaymentMethod,
    UpdatePaymentMethod,
)

_RULES: dict[type[Command], Callable[[Any, KeyState, datetime], Decision]] = {
    AddPaymentMethod: decide_add_payment_method,
    UpdatePaymentMethod: decide_update_payment_method,
    RemovePaymentMethod: decide_remove_payment_method,
    SetDefaultPaymentMethod: decide_set_default_payment_method,
    EraseUserData: decide_erase_user_data,
    InitiatePayment: decide_initiate_payment,
    LinkGuestPayments: decide_link_guest_payments,
}


def decide(command: Command, state: KeyState, now: datetime) -> Decision:
    """The one entry point: route a validated command to its rule (by its exact class: a
    class pattern would ask ``isinstance`` of pydantic's ABC metaclass, in Python)."""
    rule = _RULES.get(type(command))
    if rule is None:  # a subclass of a command
        rule = next((found for kind, found in _RULES.items() if isinstance(command, kind)), None)
        if rule is None:
            raise TypeError(f"not a command: {type(command).__name__}")
    return rule(command, state, now)


def creates_gateway_customer(command: Command, state: KeyState) -> bool:
    """Whether carrying out an accepted decision of ``command`` creates the user's gateway
    customer: when the user has none, the first saved card does, and so does a payment
    whose command carries no ``customer`` (the customer holds the email that the fraud
    checks use, so that no looked-up email goes in the authorization request)."""
    if command.user_id is None or state.gateway_customer_id is not None:
        return False
    if isinstance(command, AddPaymentMethod):
        return True
    return isinstance(command, InitiatePayment) and command.payload.customer is None
