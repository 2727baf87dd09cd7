"""``decide(command, state, now)``: the business rules of every command, without I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from uuid import uuid5

from domain.model import (
    MAX_ACTIVE_PAYMENT_METHODS,
    AuthorizationAnswer,
    Decision,
    Payment,
    PaymentMethod,
    StreamState,
)
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
from schemas.events import (
    DefaultPaymentMethodChangedPayload,
    EventEnvelope,
    EventPayload,
    EventType,
    GuestPaymentsLinkedPayload,
    PaymentAuthorizedPayload,
    PaymentDeclinedPayload,
    PaymentInitiatedPayload,
    PaymentMethodAddedPayload,
    PaymentMethodRemovedPayload,
    PaymentMethodUpdatedPayload,
    RemovalReason,
    UserPaymentDataErasedPayload,
    event_id,
)
from schemas.results import CommandResult, Reason, ResultStatus


class _Outcome:
    """Collects events with gap-free sequence numbers while a rule is applied."""

    def __init__(self, command: Command, state: StreamState, now: datetime) -> None:
        self._command = command
        self._now = now
        self._sequence = state.last_sequence
        self.events: list[EventEnvelope] = []
        self.changed: dict[str, PaymentMethod] = {}
        self.changed_payments: dict[str, Payment] = {}

    def emit(self, event_type: EventType, payload: EventPayload) -> None:
        self._sequence += 1
        self.events.append(
            EventEnvelope(
                event_id=event_id(self._command.command_id, len(self.events)),
                type=event_type,
                occurred_at=self._now,
                user_id=self._command.user_id,
                sequence=self._sequence,
                command_id=self._command.command_id,
                correlation_id=self._command.correlation_id,
                payload=payload,
            )
        )

    def change(self, method: PaymentMethod) -> None:
        self.changed[method.payment_method_id] = method

    def change_payment(self, payment: Payment) -> None:
        self.changed_payments[payment.payment_id] = payment

    def accept(
        self,
        *,
        payment_method_id: str | None = None,
        payment_id: str | None = None,
        reason: Reason = Reason.OK,
    ) -> Decision:
        result = _result(self._command, "accepted", reason, self.events, payment_method_id)
        return Decision(
            result=result.model_copy(update={"payment_id": payment_id}),
            events=tuple(self.events),
            changed_methods=tuple(self.changed.values()),
            changed_payments=tuple(self.changed_payments.values()),
            last_sequence=self._sequence,
        )


def _result(
    command: Command,
    status: ResultStatus,
    reason: Reason,
    events: list[EventEnvelope] | tuple[EventEnvelope, ...] = (),
    payment_method_id: str | None = None,
) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        correlation_id=command.correlation_id,
        type=command.type,
        status=status,
        reason=reason,
        event_ids=[event.event_id for event in events],
        payment_method_id=payment_method_id,
    )


def reject(
    command: Command, state: StreamState, reason: Reason, payment_method_id: str | None = None
) -> Decision:
    """A business rule said no: a result, no events, no change."""
    return Decision(
        result=_result(command, "rejected", reason, payment_method_id=payment_method_id),
        last_sequence=state.last_sequence,
    )


def _card_expired(exp_year: int, exp_month: int, at: datetime) -> bool:
    # A card is valid through the last day of its expiry month.
    return (exp_year, exp_month) < (at.year, at.month)


def decide_add_payment_method(
    command: AddPaymentMethod, state: StreamState, now: datetime
) -> Decision:
    payload = command.payload
    card = payload.card
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_CANNOT_SAVE_PAYMENT_METHOD)
    if _card_expired(card.exp_year, card.exp_month, command.issued_at):
        return reject(command, state, Reason.CARD_EXPIRED)

    outcome = _Outcome(command, state, now)
    same_card = next((m for m in state.active_methods if m.fingerprint == card.fingerprint), None)
    if same_card is not None:
        if (same_card.exp_month, same_card.exp_year) == (card.exp_month, card.exp_year):
            return reject(
                command, state, Reason.DUPLICATE_PAYMENT_METHOD, same_card.payment_method_id
            )
        # The same card re-added with a new expiry date: an update of the saved method.
        outcome.change(
            # The newest token from tokenization replaces the old one.
            same_card.with_changes(
                exp_month=card.exp_month,
                exp_year=card.exp_year,
                gateway_token=payload.gateway_token,
                billing_name=payload.billing_name or same_card.billing_name,
                updated_at=now,
            )
        )
        outcome.emit(
            "PaymentMethodUpdated",
            PaymentMethodUpdatedPayload(
                payment_method_id=same_card.payment_method_id,
                source="user",
                exp_month=card.exp_month,
                exp_year=card.exp_year,
                previous_exp_month=same_card.exp_month,
                previous_exp_year=same_card.exp_year,
                billing_name_changed=(
                    payload.billing_name is not None
                    and payload.billing_name != same_card.billing_name
                ),
            ),
        )
        return outcome.accept(payment_method_id=same_card.payment_method_id)

    if len(state.active_methods) >= MAX_ACTIVE_PAYMENT_METHODS:
        return reject(command, state, Reason.TOO_MANY_PAYMENT_METHODS)

    method_id = payload.payment_method_id or str(uuid5(command.command_id, "payment-method"))
    if method_id in state.taken_payment_method_ids or any(
        m.payment_method_id == method_id for m in state.methods
    ):
        return reject(command, state, Reason.PAYMENT_METHOD_ID_TAKEN)

    previous_default = state.default_method
    becomes_default = previous_default is None or payload.make_default
    added = PaymentMethod(
        payment_method_id=method_id,
        user_id=command.user_id,
        gateway_token=payload.gateway_token,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        fingerprint=card.fingerprint,
        billing_name=payload.billing_name,
        is_default=becomes_default,
        active=True,
        created_at=now,
        updated_at=now,
    )
    outcome.change(added)
    outcome.emit(
        "PaymentMethodAdded",
        PaymentMethodAddedPayload(
            payment_method_id=method_id,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        ),
    )
    if becomes_default:
        if previous_default is not None:
            outcome.change(previous_default.with_changes(is_default=False, updated_at=now))
        outcome.emit(
            "DefaultPaymentMethodChanged",
            DefaultPaymentMethodChangedPayload(
                previous_payment_method_id=(
                    previous_default.payment_method_id if previous_default else None
                ),
                new_payment_method_id=method_id,
            ),
        )
    return outcome.accept(payment_method_id=method_id)


def _own_method(state: StreamState, payment_method_id: str) -> PaymentMethod | None:
    """The user's own method with this id; another user's is as good as unknown."""
    return next((m for m in state.methods if m.payment_method_id == payment_method_id), None)


def _most_recent_active(state: StreamState, excluding: str) -> PaymentMethod | None:
    candidates = [m for m in state.active_methods if m.payment_method_id != excluding]
    return max(candidates, key=lambda m: m.created_at, default=None)


def decide_update_payment_method(
    command: UpdatePaymentMethod, state: StreamState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    payload = command.payload
    method = _own_method(state, payload.payment_method_id)
    if method is None or not method.active:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    exp_month = payload.exp_month if payload.exp_month is not None else method.exp_month
    exp_year = payload.exp_year if payload.exp_year is not None else method.exp_year
    billing_name = payload.billing_name if payload.billing_name is not None else method.billing_name
    expiry_changed = (exp_month, exp_year) != (method.exp_month, method.exp_year)
    billing_name_changed = billing_name != method.billing_name
    outcome = _Outcome(command, state, now)
    if not expiry_changed and not billing_name_changed:
        return outcome.accept(payment_method_id=method.payment_method_id, reason=Reason.NO_CHANGE)
    if expiry_changed and _card_expired(exp_year, exp_month, command.issued_at):
        return reject(command, state, Reason.CARD_EXPIRED)
    outcome.change(
        method.with_changes(
            exp_month=exp_month, exp_year=exp_year, billing_name=billing_name, updated_at=now
        )
    )
    outcome.emit(
        "PaymentMethodUpdated",
        PaymentMethodUpdatedPayload(
            payment_method_id=method.payment_method_id,
            source=payload.source,
            exp_month=exp_month if expiry_changed else None,
            exp_year=exp_year if expiry_changed else None,
            previous_exp_month=method.exp_month if expiry_changed else None,
            previous_exp_year=method.exp_year if expiry_changed else None,
            billing_name_changed=billing_name_changed,
        ),
    )
    return outcome.accept(payment_method_id=method.payment_method_id)


def _remove(outcome: _Outcome, method: PaymentMethod, reason: RemovalReason, now: datetime) -> None:
    """Deactivate a method, purge its token (and on erasure its billing name), emit it."""
    outcome.change(
        method.with_changes(
            active=False,
            is_default=False,
            gateway_token=None,
            billing_name=None if reason == "erasure" else method.billing_name,
            updated_at=now,
        )
    )
    outcome.emit(
        "PaymentMethodRemoved",
        PaymentMethodRemovedPayload(payment_method_id=method.payment_method_id, reason=reason),
    )


def decide_remove_payment_method(
    command: RemovePaymentMethod, state: StreamState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    method = _own_method(state, command.payload.payment_method_id)
    if method is None:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = _Outcome(command, state, now)
    if not method.active:
        return outcome.accept(payment_method_id=method.payment_method_id, reason=Reason.NO_CHANGE)
    _remove(outcome, method, command.payload.reason, now)
    if method.is_default:
        successor = _most_recent_active(state, excluding=method.payment_method_id)
        if successor is not None:
            outcome.change(successor.with_changes(is_default=True, updated_at=now))
        outcome.emit(
            "DefaultPaymentMethodChanged",
            DefaultPaymentMethodChangedPayload(
                previous_payment_method_id=method.payment_method_id,
                new_payment_method_id=successor.payment_method_id if successor else None,
            ),
        )
    return outcome.accept(payment_method_id=method.payment_method_id)


def decide_set_default_payment_method(
    command: SetDefaultPaymentMethod, state: StreamState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    method = _own_method(state, command.payload.payment_method_id)
    if method is None or not method.active:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = _Outcome(command, state, now)
    if method.is_default:
        return outcome.accept(payment_method_id=method.payment_method_id, reason=Reason.NO_CHANGE)
    previous = state.default_method
    if previous is not None:
        outcome.change(previous.with_changes(is_default=False, updated_at=now))
    outcome.change(method.with_changes(is_default=True, updated_at=now))
    outcome.emit(
        "DefaultPaymentMethodChanged",
        DefaultPaymentMethodChangedPayload(
            previous_payment_method_id=previous.payment_method_id if previous else None,
            new_payment_method_id=method.payment_method_id,
        ),
    )
    return outcome.accept(payment_method_id=method.payment_method_id)


def decide_erase_user_data(command: EraseUserData, state: StreamState, now: datetime) -> Decision:
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    outcome = _Outcome(command, state, now)
    previous_default = state.default_method
    removed = [m.payment_method_id for m in state.active_methods]
    for method in state.methods:
        if method.active:
            _remove(outcome, method, "erasure", now)
        elif method.gateway_token is not None or method.billing_name is not None:
            # Removed earlier: no event again, but no token or billing name may remain.
            outcome.change(
                method.with_changes(gateway_token=None, billing_name=None, updated_at=now)
            )
    if previous_default is not None:
        outcome.emit(
            "DefaultPaymentMethodChanged",
            DefaultPaymentMethodChangedPayload(
                previous_payment_method_id=previous_default.payment_method_id,
                new_payment_method_id=None,
            ),
        )
    outcome.emit(
        "UserPaymentDataErased", UserPaymentDataErasedPayload(removed_payment_method_ids=removed)
    )
    return outcome.accept()


def decide_initiate_payment(
    command: InitiatePayment, state: StreamState, now: datetime
) -> Decision:
    payload = command.payload
    if state.payment(payload.payment_id) is not None:
        return reject(command, state, Reason.PAYMENT_ID_TAKEN)
    if payload.payment_method_id is not None:
        if command.user_id is None:
            return reject(command, state, Reason.GUEST_CANNOT_USE_SAVED_METHOD)
        method = _own_method(state, payload.payment_method_id)
        if method is None or not method.active:
            return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = _Outcome(command, state, now)
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


def payment_instrument(command: InitiatePayment, state: StreamState) -> str:
    """The gateway token to charge: the one-time token, or the saved method's token."""
    if command.payload.gateway_token is not None:
        return command.payload.gateway_token
    method = _own_method(state, command.payload.payment_method_id or "")
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
    command: LinkGuestPayments, state: StreamState, now: datetime
) -> Decision:
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    payments = [state.payment(payment_id) for payment_id in command.payload.payment_ids]
    # All or nothing: one unknown or already linked payment rejects the whole command.
    if any(payment is None for payment in payments):
        return reject(command, state, Reason.PAYMENT_NOT_FOUND)
    if any(payment is not None and payment.user_id is not None for payment in payments):
        return reject(command, state, Reason.PAYMENT_NOT_A_GUEST_PAYMENT)
    outcome = _Outcome(command, state, now)
    for payment in payments:
        if payment is not None:
            outcome.change_payment(payment.with_changes(user_id=command.user_id, updated_at=now))
    outcome.emit(
        "GuestPaymentsLinked",
        GuestPaymentsLinkedPayload(payment_ids=list(command.payload.payment_ids)),
    )
    return outcome.accept()


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
