"""The rules of the saved-card commands: add, update, remove, set default, erase."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid5

from domain.model import (
    MAX_ACTIVE_PAYMENT_METHODS,
    Decision,
    KeyState,
    PaymentMethod,
)
from domain.outcome import Outcome, card_expired, expiry_checked_at, own_method, reject
from schemas.commands import (
    AddPaymentMethod,
    EraseUserData,
    RemovePaymentMethod,
    SetDefaultPaymentMethod,
    UpdatePaymentMethod,
)
from schemas.events import (
    DefaultPaymentMethodChangedPayload,
    PaymentMethodAddedPayload,
    PaymentMethodRemovedPayload,
    PaymentMethodUpdatedPayload,
    RemovalReason,
    UserPaymentDataErasedPayload,
)
from schemas.results import Reason


def decide_add_payment_method(
    command: AddPaymentMethod, state: KeyState, now: datetime
) -> Decision:
    payload = command.payload
    card = payload.card
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_CANNOT_SAVE_PAYMENT_METHOD)
    if card_expired(card.exp_year, card.exp_month, expiry_checked_at(command, now)):
        return reject(command, state, Reason.CARD_EXPIRED)

    outcome = Outcome(command, state, now)
    active = state.active_methods
    same_card = next((m for m in active if m.fingerprint == card.fingerprint), None)
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

    if len(active) >= MAX_ACTIVE_PAYMENT_METHODS:
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


def _most_recent_active(state: KeyState, excluding: str) -> PaymentMethod | None:
    candidates = [m for m in state.active_methods if m.payment_method_id != excluding]
    return max(candidates, key=lambda m: m.created_at, default=None)


def decide_update_payment_method(
    command: UpdatePaymentMethod, state: KeyState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    payload = command.payload
    method = own_method(state, payload.payment_method_id)
    if method is None or not method.active:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    exp_month = payload.exp_month if payload.exp_month is not None else method.exp_month
    exp_year = payload.exp_year if payload.exp_year is not None else method.exp_year
    billing_name = payload.billing_name if payload.billing_name is not None else method.billing_name
    expiry_changed = (exp_month, exp_year) != (method.exp_month, method.exp_year)
    billing_name_changed = billing_name != method.billing_name
    outcome = Outcome(command, state, now)
    if not expiry_changed and not billing_name_changed:
        return outcome.accept(payment_method_id=method.payment_method_id, reason=Reason.NO_CHANGE)
    if expiry_changed and card_expired(exp_year, exp_month, expiry_checked_at(command, now)):
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


def _remove(outcome: Outcome, method: PaymentMethod, reason: RemovalReason, now: datetime) -> None:
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
    command: RemovePaymentMethod, state: KeyState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    method = own_method(state, command.payload.payment_method_id)
    if method is None:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = Outcome(command, state, now)
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
    command: SetDefaultPaymentMethod, state: KeyState, now: datetime
) -> Decision:
    if command.user_id is None:
        # Saved methods belong to users; a guest command must never reach one by its key.
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    method = own_method(state, command.payload.payment_method_id)
    if method is None or not method.active:
        return reject(command, state, Reason.PAYMENT_METHOD_NOT_FOUND)
    outcome = Outcome(command, state, now)
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


def decide_erase_user_data(command: EraseUserData, state: KeyState, now: datetime) -> Decision:
    if command.user_id is None:
        return reject(command, state, Reason.GUEST_NOT_ALLOWED)
    outcome = Outcome(command, state, now)
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
