"""Decision tables of Update, Remove, SetDefault and EraseUserData."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from domain.decisions import decide
from domain.model import Decision, KeyState, PaymentMethod
from schemas.commands import Command
from schemas.results import Reason
from tests.factories import ISSUED_AT, command

NOW = datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)
USER = "user-123"
COMMANDS: TypeAdapter[Command] = TypeAdapter(Command)


def _command(command_type: str, payload: dict[str, Any] | None = None, **kw: Any) -> Command:
    return COMMANDS.validate_python(command(command_type, payload=payload, **kw))


def _method(number: int, *, is_default: bool = False, active: bool = True) -> PaymentMethod:
    return PaymentMethod(
        payment_method_id=f"pm-{number}",
        user_id=USER,
        gateway_token=None if not active else f"tok_{number:08d}",
        brand="visa",
        last4="1111",
        exp_month=1,
        exp_year=2031,
        fingerprint=f"fp_existing_{number}",
        billing_name="Ada Lovelace",
        is_default=is_default,
        active=active,
        created_at=ISSUED_AT + timedelta(minutes=number),
        updated_at=ISSUED_AT,
    )


# pm-1 (default), pm-2, pm-3 active; pm-4 removed earlier.
STATE = KeyState(
    USER,
    last_sequence=10,
    methods=(_method(1, is_default=True), _method(2), _method(3), _method(4, active=False)),
)


def _types(decision: Decision) -> list[str]:
    return [event.type for event in decision.events]


def _changed(decision: Decision) -> dict[str, PaymentMethod]:
    return {m.payment_method_id: m for m in decision.changed_methods}


@pytest.mark.parametrize(
    ("command_type", "payload"),
    [
        ("UpdatePaymentMethod", {"paymentMethodId": "pm-unknown", "expYear": 2033}),
        ("UpdatePaymentMethod", {"paymentMethodId": "pm-4", "expYear": 2033}),
        ("RemovePaymentMethod", {"paymentMethodId": "pm-unknown"}),
        ("SetDefaultPaymentMethod", {"paymentMethodId": "pm-unknown"}),
        ("SetDefaultPaymentMethod", {"paymentMethodId": "pm-4"}),
    ],
)
def test_unknown_removed_or_foreign_method_is_not_found(
    command_type: str, payload: dict[str, Any]
) -> None:
    decision = decide(_command(command_type, payload), STATE, NOW)
    assert (decision.result.status, decision.result.reason) == (
        "rejected",
        Reason.PAYMENT_METHOD_NOT_FOUND,
    )
    assert decision.events == ()
    assert decision.changed_methods == ()
    # Nothing reveals whether the id exists for someone else.
    assert decision.result.payment_method_id is None


def test_update_emits_changed_fields_with_previous_values_and_source() -> None:
    decision = decide(
        _command(
            "UpdatePaymentMethod",
            {
                "paymentMethodId": "pm-2",
                "expMonth": 3,
                "expYear": 2034,
                "source": "account_updater",
            },
        ),
        STATE,
        NOW,
    )
    (event,) = decision.events
    assert event.sequence == 11
    assert event.payload.model_dump() == {
        "payment_method_id": "pm-2",
        "source": "account_updater",
        "exp_month": 3,
        "exp_year": 2034,
        "previous_exp_month": 1,
        "previous_exp_year": 2031,
        "billing_name_changed": False,
    }
    assert (_changed(decision)["pm-2"].exp_month, _changed(decision)["pm-2"].exp_year) == (3, 2034)


def test_update_of_billing_name_only_says_that_it_changed() -> None:
    decision = decide(
        _command("UpdatePaymentMethod", {"paymentMethodId": "pm-2", "billingName": "Ada King"}),
        STATE,
        NOW,
    )
    (event,) = decision.events
    assert event.payload.model_dump()["billing_name_changed"] is True
    assert b"Ada King" not in event.to_wire()
    assert _changed(decision)["pm-2"].billing_name == "Ada King"


def test_update_that_changes_nothing_is_accepted_without_event() -> None:
    decision = decide(
        _command("UpdatePaymentMethod", {"paymentMethodId": "pm-2", "expMonth": 1}), STATE, NOW
    )
    assert (decision.result.status, decision.result.reason) == ("accepted", Reason.NO_CHANGE)
    assert decision.events == ()
    assert decision.last_sequence == 10


def test_update_to_an_expired_date_is_rejected() -> None:
    decision = decide(
        _command("UpdatePaymentMethod", {"paymentMethodId": "pm-2", "expYear": 2025}), STATE, NOW
    )
    assert decision.result.reason == Reason.CARD_EXPIRED


def test_removing_a_non_default_method_purges_its_token() -> None:
    decision = decide(_command("RemovePaymentMethod", {"paymentMethodId": "pm-2"}), STATE, NOW)
    assert _types(decision) == ["PaymentMethodRemoved"]
    assert decision.events[0].payload.model_dump() == {
        "payment_method_id": "pm-2",
        "reason": "user_request",
    }
    removed = _changed(decision)["pm-2"]
    assert (removed.active, removed.gateway_token) == (False, None)


def test_removing_the_default_moves_it_to_the_most_recently_added() -> None:
    decision = decide(_command("RemovePaymentMethod", {"paymentMethodId": "pm-1"}), STATE, NOW)
    assert _types(decision) == ["PaymentMethodRemoved", "DefaultPaymentMethodChanged"]
    assert decision.events[1].payload.model_dump() == {
        "previous_payment_method_id": "pm-1",
        "new_payment_method_id": "pm-3",
    }
    assert _changed(decision)["pm-3"].is_default
    assert [e.sequence for e in decision.events] == [11, 12]


def test_removing_the_last_method_sets_the_default_to_null() -> None:
    state = KeyState(USER, 2, (_method(1, is_default=True),))
    decision = decide(_command("RemovePaymentMethod", {"paymentMethodId": "pm-1"}), state, NOW)
    assert decision.events[1].payload.model_dump() == {
        "previous_payment_method_id": "pm-1",
        "new_payment_method_id": None,
    }


def test_removing_an_already_removed_method_is_accepted_without_event() -> None:
    decision = decide(_command("RemovePaymentMethod", {"paymentMethodId": "pm-4"}), STATE, NOW)
    assert (decision.result.status, decision.result.reason) == ("accepted", Reason.NO_CHANGE)
    assert decision.events == ()


def test_set_default_moves_the_single_default() -> None:
    decision = decide(_command("SetDefaultPaymentMethod", {"paymentMethodId": "pm-2"}), STATE, NOW)
    assert _types(decision) == ["DefaultPaymentMethodChanged"]
    changed = _changed(decision)
    assert (changed["pm-1"].is_default, changed["pm-2"].is_default) == (False, True)


def test_set_default_on_the_default_is_accepted_without_event() -> None:
    decision = decide(_command("SetDefaultPaymentMethod", {"paymentMethodId": "pm-1"}), STATE, NOW)
    assert (decision.result.reason, decision.events) == (Reason.NO_CHANGE, ())


def test_erasure_removes_everything_and_purges_personal_data() -> None:
    decision = decide(_command("EraseUserData"), STATE, NOW)
    assert _types(decision) == [
        "PaymentMethodRemoved",
        "PaymentMethodRemoved",
        "PaymentMethodRemoved",
        "DefaultPaymentMethodChanged",
        "UserPaymentDataErased",
    ]
    assert {e.payload.model_dump().get("reason") for e in decision.events[:3]} == {"erasure"}
    assert decision.events[3].payload.model_dump()["new_payment_method_id"] is None
    changed = _changed(decision)
    assert set(changed) == {"pm-1", "pm-2", "pm-3", "pm-4"}
    assert all(
        not m.active and m.gateway_token is None and m.billing_name is None
        for m in changed.values()
    )


def test_erasure_of_a_user_without_data_still_confirms() -> None:
    decision = decide(_command("EraseUserData"), KeyState(USER), NOW)
    assert _types(decision) == ["UserPaymentDataErased"]


def test_guest_erasure_is_refused() -> None:
    decision = decide(_command("EraseUserData", user_id=None), KeyState("x"), NOW)
    assert decision.result.reason == Reason.GUEST_NOT_ALLOWED


@pytest.mark.parametrize(
    "command_type", ["UpdatePaymentMethod", "RemovePaymentMethod", "SetDefaultPaymentMethod"]
)
def test_guest_commands_never_reach_a_users_methods(command_type: str) -> None:
    # The state is loaded by message key; a null userId with a user's key must not act.
    payload = {"paymentMethodId": "pm-1", "expYear": 2033}
    if command_type != "UpdatePaymentMethod":
        payload = {"paymentMethodId": "pm-1"}
    decision = decide(_command(command_type, payload, user_id=None), STATE, NOW)
    assert decision.result.reason == Reason.GUEST_NOT_ALLOWED
    assert decision.events == ()
    assert decision.changed_methods == ()
