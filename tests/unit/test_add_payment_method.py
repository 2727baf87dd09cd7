"""Decision table of AddPaymentMethod against the states that matter."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from domain.decisions import decide
from domain.model import MAX_ACTIVE_PAYMENT_METHODS, Decision, KeyState, PaymentMethod
from schemas.commands import AddPaymentMethod
from schemas.results import Reason
from tests.factories import ISSUED_AT, add_payment_method

NOW = datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)
USER = "user-123"


def _command(**changes: Any) -> AddPaymentMethod:
    return AddPaymentMethod.model_validate(add_payment_method(**changes))


def _method(number: int, *, is_default: bool = False, active: bool = True) -> PaymentMethod:
    return PaymentMethod(
        payment_method_id=f"pm-{number}",
        user_id=USER,
        gateway_token=f"tok_{number:08d}",
        brand="visa",
        last4="1111",
        exp_month=1,
        exp_year=2031,
        fingerprint=f"fp_existing_{number}",
        billing_name=None,
        is_default=is_default,
        active=active,
        created_at=ISSUED_AT,
        updated_at=ISSUED_AT,
    )


def _apply(decision: Decision, state: KeyState) -> KeyState:
    methods = {m.payment_method_id: m for m in state.methods}
    methods.update({m.payment_method_id: m for m in decision.changed_methods})
    return KeyState(state.key, decision.last_sequence, tuple(methods.values()))


def test_first_method_becomes_the_default() -> None:
    decision = decide(_command(), KeyState(USER), NOW)

    assert decision.result.status == "accepted"
    assert [e.type for e in decision.events] == [
        "PaymentMethodAdded",
        "DefaultPaymentMethodChanged",
    ]
    assert [e.sequence for e in decision.events] == [1, 2]
    (added,) = decision.changed_methods
    assert added.is_default
    assert added.active
    assert decision.result.payment_method_id == added.payment_method_id
    assert decision.result.event_ids == [e.event_id for e in decision.events]


def test_second_method_is_not_default_unless_asked() -> None:
    state = KeyState(USER, last_sequence=5, methods=(_method(1, is_default=True),))

    decision = decide(_command(), state, NOW)

    assert [e.type for e in decision.events] == ["PaymentMethodAdded"]
    assert decision.events[0].sequence == 6
    assert not decision.changed_methods[0].is_default


def test_make_default_moves_the_default() -> None:
    state = KeyState(USER, last_sequence=2, methods=(_method(1, is_default=True),))

    decision = decide(_command(make_default=True), state, NOW)
    after = _apply(decision, state)

    changed = decision.events[1].payload
    assert changed.model_dump() == {
        "previous_payment_method_id": "pm-1",
        "new_payment_method_id": decision.result.payment_method_id,
    }
    assert [m.payment_method_id for m in after.methods if m.is_default] == [
        decision.result.payment_method_id
    ]


def test_guest_cannot_save_a_method() -> None:
    decision = decide(_command(user_id=None), KeyState("guest"), NOW)
    assert (decision.result.status, decision.result.reason) == (
        "rejected",
        Reason.GUEST_CANNOT_SAVE_PAYMENT_METHOD,
    )
    assert not decision.events
    assert not decision.changed_methods


def test_card_expired_at_issue_time_is_rejected() -> None:
    decision = decide(_command(exp_month=10, exp_year=2026), KeyState(USER), NOW)
    assert decision.result.reason == Reason.CARD_EXPIRED


def test_a_backdated_issued_at_does_not_revive_an_expired_card() -> None:
    # Issued (it says) in 2025, while the card was valid; decided in November 2026.
    backdated = _command(exp_month=10, exp_year=2026, issued_at=datetime(2025, 1, 1, tzinfo=UTC))
    assert decide(backdated, KeyState(USER), NOW).result.reason == Reason.CARD_EXPIRED


def test_a_card_that_expired_while_the_command_waited_is_rejected() -> None:
    late = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)
    decision = decide(_command(exp_month=11, exp_year=2026), KeyState(USER), late)
    assert decision.result.reason == Reason.CARD_EXPIRED


def test_card_expiring_this_month_is_still_valid() -> None:
    decision = decide(_command(exp_month=11, exp_year=2026), KeyState(USER), NOW)
    assert decision.result.status == "accepted"


def test_identical_card_is_a_duplicate_naming_the_existing_method() -> None:
    existing = _method(1, is_default=True)
    state = KeyState(USER, 2, (existing,))

    decision = decide(
        _command(fingerprint=existing.fingerprint, exp_month=1, exp_year=2031), state, NOW
    )

    assert decision.result.reason == Reason.DUPLICATE_PAYMENT_METHOD
    assert decision.result.payment_method_id == "pm-1"
    assert not decision.events


def test_same_card_with_new_expiry_updates_the_saved_method() -> None:
    existing = _method(1, is_default=True)
    state = KeyState(USER, 2, (existing,))

    decision = decide(
        _command(fingerprint=existing.fingerprint, exp_month=2, exp_year=2034), state, NOW
    )

    assert decision.result.status == "accepted"
    assert decision.result.payment_method_id == "pm-1"
    (event,) = decision.events
    assert event.type == "PaymentMethodUpdated"
    assert event.payload.model_dump() == {
        "payment_method_id": "pm-1",
        "source": "user",
        "exp_month": 2,
        "exp_year": 2034,
        "previous_exp_month": 1,
        "previous_exp_year": 2031,
        "billing_name_changed": False,
    }
    (updated,) = decision.changed_methods
    assert (updated.exp_month, updated.exp_year, updated.is_default) == (2, 2034, True)


def test_a_removed_card_can_be_added_again() -> None:
    removed = _method(1, active=False)
    decision = decide(_command(fingerprint=removed.fingerprint), KeyState(USER, 3, (removed,)), NOW)
    assert decision.result.status == "accepted"
    assert decision.changed_methods[0].payment_method_id != "pm-1"


def test_at_most_twenty_active_methods() -> None:
    methods = tuple(_method(n, is_default=n == 0) for n in range(MAX_ACTIVE_PAYMENT_METHODS))
    full = KeyState(USER, 40, methods)
    assert decide(_command(), full, NOW).result.reason == Reason.TOO_MANY_PAYMENT_METHODS

    one_removed = replace(full, methods=(*methods[:-1], _method(19, active=False)))
    assert decide(_command(), one_removed, NOW).result.status == "accepted"


def test_payment_method_id_of_another_user_is_refused() -> None:
    state = KeyState(USER, taken_payment_method_ids=frozenset({"pm-x"}))
    decision = decide(_command(payment_method_id="pm-x"), state, NOW)
    assert decision.result.reason == Reason.PAYMENT_METHOD_ID_TAKEN


def test_decisions_are_deterministic() -> None:
    command = _command()
    assert decide(command, KeyState(USER), NOW) == decide(command, KeyState(USER), NOW)


def test_events_carry_no_token_fingerprint_or_billing_name() -> None:
    decision = decide(
        _command(billing_name="Ada Lovelace", fingerprint="fp_secretprint"), KeyState(USER), NOW
    )
    wire = b"".join(event.to_wire() for event in decision.events) + decision.result.to_wire()
    for secret in (b"tok_fp_secretprint", b"fp_secretprint", b"Ada Lovelace"):
        assert secret not in wire
