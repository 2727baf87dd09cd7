"""The rules of payments: initiate (and settle with the gateway's answer), link guests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from domain.model import (
    AuthorizationAnswer,
    Decision,
    KeyState,
    Payment,
)
from domain.outcome import Outcome, own_method, reject
from schemas.commands import (
    InitiatePayment,
    LinkGuestPayments,
)
from schemas.events import (
    EventEnvelope,
    EventPayload,
    EventType,
    GuestPaymentsLinkedPayload,
    PaymentAuthorizedPayload,
    PaymentDeclinedPayload,
    PaymentInitiatedPayload,
    event_id,
)
from schemas.results import Reason


def decide_initiate_payment(command: InitiatePayment, state: KeyState, now: datetime) -> Decision:
    payload = command.payload
    if state.payment(payload.payment_id) is not None:
        return reject(command, state, Reason.PAYMENT_ID_TAKEN)
    if payload.payment_method_id is not None:
        if command.user_id is None:
            return reject(command, state, Reason.GUEST_CANNOT_USE_SAVED_METHOD)
        method = own_method(state, payload.payment_method_id)
        if method is None or not method.active:
            return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = Outcome(command, state, now)
    outcome.change_payment(
        Payment(
            payment_id=payload.payment_id,
            user_id=command.user_id,
            order_id=payload.order_id,
            amount=payload.amount,
            currency=payload.currency,
            payment_method_id=payload.payment_method_id,
            status="initiated",
            created_at=now,
            updated_at=now,
        )
    )
    outcome.emit(
        "PaymentInitiated",
        PaymentInitiatedPayload(
            payment_id=payload.payment_id,
            order_id=payload.order_id,
            amount=payload.amount,
            currency=payload.currency,
            payment_method_id=payload.payment_method_id,
            guest=command.user_id is None,
        ),
    )
    return outcome.accept(
        payment_id=payload.payment_id, payment_method_id=payload.payment_method_id
    )


def payment_instrument(command: InitiatePayment, state: KeyState) -> str:
    """The gateway token to charge: the one-time token, or the saved method's token."""
    if command.payload.gateway_token is not None:
        return command.payload.gateway_token
    method = own_method(state, command.payload.payment_method_id or "")
    if method is None or method.gateway_token is None:
        raise ValueError("an accepted payment always has an instrument")
    return method.gateway_token


def settle_authorization(
    command: InitiatePayment, decision: Decision, answer: AuthorizationAnswer, now: datetime
) -> Decision:
    """Add the gateway's answer to an accepted InitiatePayment decision."""
    (payment,) = decision.changed_payments
    sequence = decision.last_sequence + 1
    payload: EventPayload
    if answer.approved and answer.authorization_id:
        event_type: EventType = "PaymentAuthorized"
        payload = PaymentAuthorizedPayload(
            payment_id=payment.payment_id, authorization_id=answer.authorization_id
        )
    else:
        event_type = "PaymentDeclined"
        payload = PaymentDeclinedPayload(
            payment_id=payment.payment_id, decline_code=answer.decline_code or "declined"
        )
    event = EventEnvelope(
        event_id=event_id(command.command_id, len(decision.events)),
        type=event_type,
        occurred_at=now,
        user_id=command.user_id,
        sequence=sequence,
        command_id=command.command_id,
        correlation_id=command.correlation_id,
        payload=payload,
    )
    events = (*decision.events, event)
    status = "authorized" if event_type == "PaymentAuthorized" else "declined"
    return replace(
        decision,
        result=decision.result.model_copy(update={"event_ids": [e.event_id for e in events]}),
        events=events,
        changed_payments=(payment.with_changes(status=status, updated_at=now),),
        last_sequence=sequence,
    )


def decide_link_guest_payments(
    command: LinkGuestPayments, state: KeyState, now: datetime
) -> Decision:
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    payments = [state.payment(payment_id) for payment_id in command.payload.payment_ids]
    # All or nothing: one unknown or already linked payment rejects the whole command.
    if any(payment is None for payment in payments):
        return reject(command, state, Reason.PAYMENT_NOT_FOUND)
    if any(payment is not None and payment.user_id is not None for payment in payments):
        return reject(command, state, Reason.PAYMENT_NOT_A_GUEST_PAYMENT)
    outcome = Outcome(command, state, now)
    for payment in payments:
        if payment is not None:
            outcome.change_payment(payment.with_changes(user_id=command.user_id, updated_at=now))
    outcome.emit(
        "GuestPaymentsLinked",
        GuestPaymentsLinkedPayload(payment_ids=list(command.payload.payment_ids)),
    )
    return outcome.accept()
