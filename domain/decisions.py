"""``decide(command, state, now)``: the business rules of every command, without I/O."""

from __future__ import annotations

from datetime import datetime

from domain.model import Decision, StreamState
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


def decide(command: Command, state: StreamState, now: datetime) -> Decision:
    """The one entry point: route a validated command to its rule."""
    match command:
        case AddPaymentMethod():
            return decide_add_payment_method(command, state, now)
        case UpdatePaymentMethod():
            return decide_update_payment_method(command, state, now)
        case RemovePaymentMethod():
            return decide_remove_payment_method(command, state, now)
        case SetDefaultPaymentMethod():
            return decide_set_default_payment_method(command, state, now)
        case EraseUserData():
            return decide_erase_user_data(command, state, now)
        case InitiatePayment():
            return decide_initiate_payment(command, state, now)
        case LinkGuestPayments():
            return decide_link_guest_payments(command, state, now)
