"""Building a decision: events with gap-free sequences, the result, rejections."""

from __future__ import annotations

from datetime import datetime

from domain.model import (
    Decision,
    KeyState,
    Payment,
    PaymentMethod,
)
from schemas.commands import (
    Command,
)
from schemas.events import (
    EventEnvelope,
    EventPayload,
    EventType,
    event_id,
)
from schemas.results import CommandResult, Reason, ResultStatus


class Outcome:
    """Collects events with gap-free sequence numbers while a rule is applied."""

    def __init__(self, command: Command, state: KeyState, now: datetime) -> None:
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
        return Decision(
            result=result_for(
                self._command,
                "accepted",
                reason,
                self.events,
                payment_method_id,
                payment_id=payment_id,
            ),
            events=tuple(self.events),
            changed_methods=tuple(self.changed.values()),
            changed_payments=tuple(self.changed_payments.values()),
            last_sequence=self._sequence,
        )


def result_for(
    command: Command,
    status: ResultStatus,
    reason: Reason,
    events: list[EventEnvelope] | tuple[EventEnvelope, ...] = (),
    payment_method_id: str | None = None,
    *,
    payment_id: str | None = None,
) -> CommandResult:
    return CommandResult(
        command_id=command.command_id,
        correlation_id=command.correlation_id,
        type=command.type,
        status=status,
        reason=reason,
        event_ids=[event.event_id for event in events],
        payment_method_id=payment_method_id,
        payment_id=payment_id,
    )


def reject(
    command: Command, state: KeyState, reason: Reason, payment_method_id: str | None = None
) -> Decision:
    """A business rule said no: a result, no events, no change."""
    return Decision(
        result=result_for(command, "rejected", reason, payment_method_id=payment_method_id),
        last_sequence=state.last_sequence,
    )


def expiry_checked_at(command: Command, now: datetime) -> datetime:
    """When a card must still be valid: the later of ``issuedAt`` and the worker's clock.

    The producer's ``issuedAt`` alone could be backdated to revive an expired card, and a
    command that waited in a lagging partition past the end of the card's month must not
    save it either. (``issuedAt`` can be at most the configured skew ahead of ``now``.)
    """
    return max(command.issued_at, now)


def card_expired(exp_year: int, exp_month: int, at: datetime) -> bool:
    # A card is valid through the last day of its expiry month.
    return (exp_year, exp_month) < (at.year, at.month)


def own_method(state: KeyState, payment_method_id: str) -> PaymentMethod | None:
    """The user's own method with this id; another user's is as good as unknown."""
    return next((m for m in state.methods if m.payment_method_id == payment_method_id), None)
