"""The User Service's "My payment methods" view, folded from ``payment.events``.

Pure: no I/O. ``advance`` takes one user's view and the next event read for that user
and returns the new view and what happened to the event. The fold is order-aware
because events of a user carry a gap-free ``sequence`` (DESIGN.md §3): an event at or
below the last applied sequence was applied already (a redelivery or a duplicate, so
de-duplication by ``eventId`` follows), the next one is applied, and one further ahead
means an event is missing. A view is never built past a missing event: the user is
marked as having a gap and stays as it was until an operator rebuilds the view from the
topic (see docs/projection.md, "Rebuilding the view from the topic").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from schemas.events import (
    DefaultPaymentMethodChangedPayload,
    PaymentMethodAddedPayload,
    PaymentMethodRemovedPayload,
    PaymentMethodUpdatedPayload,
    UserPaymentDataErasedPayload,
)

ViewPayload = (
    PaymentMethodAddedPayload
    | PaymentMethodUpdatedPayload
    | PaymentMethodRemovedPayload
    | DefaultPaymentMethodChangedPayload
    | UserPaymentDataErasedPayload
)


@dataclass(frozen=True, slots=True)
class ViewEvent:
    """An event of one user as the view needs it.

    ``payload`` is ``None`` for an event type the view does not use (payment events, or
    a type added after this consumer was built): it still takes its place in the
    sequence.
    """

    event_id: UUID
    type: str
    user_id: str
    sequence: int
    occurred_at: datetime
    payload: ViewPayload | None


@dataclass(frozen=True, slots=True)
class MethodView:
    """One saved payment method as the user sees it: nothing sensitive."""

    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    is_default: bool
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Gap:
    """The first missing event of a user: expected this sequence, found a later one."""

    expected_sequence: int
    found_sequence: int
    event_id: UUID


@dataclass(frozen=True, slots=True)
class UserView:
    user_id: str
    last_sequence: int = 0
    methods: tuple[MethodView, ...] = ()
    gap: Gap | None = None


class Verdict(StrEnum):
    """What became of one event; a fixed set, used as a metric label."""

    APPLIED = "applied"
    # The next event, of a type the view does not use: only the sequence advances.
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    GAP = "gap"
    # The user has a gap: nothing is applied until the view is rebuilt.
    HELD = "held"


def advance(view: UserView, event: ViewEvent) -> tuple[UserView, Verdict]:
    """The view after ``event``, and what became of it."""
    if view.gap is not None:
        return view, Verdict.HELD
    if event.sequence <= view.last_sequence:
        return view, Verdict.DUPLICATE
    expected = view.last_sequence + 1
    if event.sequence > expected:
        gap = Gap(expected, event.sequence, event.event_id)
        return replace(view, gap=gap), Verdict.GAP
    if event.payload is None:
        return replace(view, last_sequence=event.sequence), Verdict.IGNORED
    methods = apply_payload(view.methods, event.payload, event.occurred_at)
    return replace(view, last_sequence=event.sequence, methods=methods), Verdict.APPLIED


def apply_payload(
    methods: tuple[MethodView, ...], payload: ViewPayload, at: datetime
) -> tuple[MethodView, ...]:
    """The user's methods after one event. ``at`` is the event's time, so that a
    rebuild from the topic produces the very same rows."""
    if isinstance(payload, PaymentMethodAddedPayload):
        added = MethodView(
            payment_method_id=payload.payment_method_id,
            brand=payload.brand,
            last4=payload.last4,
            exp_month=payload.exp_month,
            exp_year=payload.exp_year,
            is_default=False,
            updated_at=at,
        )
        kept = tuple(m for m in methods if m.payment_method_id != added.payment_method_id)
        return (*kept, added)
    if isinstance(payload, PaymentMethodUpdatedPayload):
        # Only the expiry is in the view; a billing-name change shows nowhere.
        if payload.exp_month is None and payload.exp_year is None:
            return methods
        return tuple(
            replace(
                m,
                exp_month=m.exp_month if payload.exp_month is None else payload.exp_month,
                exp_year=m.exp_year if payload.exp_year is None else payload.exp_year,
                updated_at=at,
            )
            if m.payment_method_id == payload.payment_method_id
            else m
            for m in methods
        )
    if isinstance(payload, PaymentMethodRemovedPayload):
        return tuple(m for m in methods if m.payment_method_id != payload.payment_method_id)
    if isinstance(payload, DefaultPaymentMethodChangedPayload):
        new = payload.new_payment_method_id
        return tuple(
            m
            if m.is_default == (m.payment_method_id == new)
            else replace(m, is_default=m.payment_method_id == new, updated_at=at)
            for m in methods
        )
    # UserPaymentDataErasedPayload: nothing of the user's methods remains.
    return ()
