"""``decide(command, state, now)``: the business rules of every command, without I/O."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid5

from domain.model import MAX_ACTIVE_PAYMENT_METHODS, Decision, PaymentMethod, StreamState
from schemas.commands import AddPaymentMethod, Command
from schemas.events import (
    DefaultPaymentMethodChangedPayload,
    EventEnvelope,
    EventPayload,
    EventType,
    PaymentMethodAddedPayload,
    PaymentMethodUpdatedPayload,
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

    def accept(self, *, payment_method_id: str | None = None) -> Decision:
        return Decision(
            result=_result(self._command, "accepted", Reason.OK, self.events, payment_method_id),
            events=tuple(self.events),
            changed_methods=tuple(self.changed.values()),
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
            same_card.with_changes(exp_month=card.exp_month, exp_year=card.exp_year, updated_at=now)
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


def decide(command: Command, state: StreamState, now: datetime) -> Decision:
    """The one entry point: route a validated command to its rule."""
    return decide_add_payment_method(command, state, now)
