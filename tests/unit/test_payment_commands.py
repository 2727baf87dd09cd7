"""Decision tables of InitiatePayment and LinkGuestPayments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from domain.decisions import creates_gateway_customer, decide
from domain.model import KeyState, Payment, PaymentMethod
from schemas.commands import Command
from schemas.results import Reason
from tests.factories import ISSUED_AT, command

NOW = datetime(2026, 11, 30, 10, 0, 1, tzinfo=UTC)
USER = "user-123"
COMMANDS: TypeAdapter[Command] = TypeAdapter(Command)
SAVED = PaymentMethod(
    payment_method_id="pm-1",
    user_id=USER,
    gateway_token="tok_00000001",
    brand="visa",
    last4="1111",
    exp_month=1,
    exp_year=2031,
    fingerprint="fp_00000001",
    billing_name=None,
    is_default=True,
    active=True,
    created_at=ISSUED_AT,
    updated_at=ISSUED_AT,
)


def _payment(payment_id: str, user_id: str | None = None) -> Payment:
    return Payment(payment_id, user_id, "order-1", 1999, "EUR", None, "initiated", NOW, NOW)


def _initiate(user_id: str | None = USER, **payload: Any) -> Command:
    body = {"paymentId": "pay-1", "orderId": "order-1", "amount": 1999, "currency": "EUR"}
    return COMMANDS.validate_python(command("InitiatePayment", user_id, {**body, **payload}))


def test_user_pays_with_a_saved_method() -> None:
    state = KeyState(USER, 4, (SAVED,))
    decision = decide(_initiate(paymentMethodId="pm-1"), state, NOW)

    assert (decision.result.status, decision.result.payment_id) == ("accepted", "pay-1")
    (event,) = decision.events
    assert (event.type, event.sequence) == ("PaymentInitiated", 5)
    assert event.payload.model_dump() == {
        "payment_id": "pay-1",
        "order_id": "order-1",
        "amount": 1999,
        "currency": "EUR",
        "payment_method_id": "pm-1",
        "guest": False,
    }
    (payment,) = decision.changed_payments
    assert (payment.user_id, payment.status, payment.amount) == (USER, "initiated", 1999)


def test_guest_pays_with_a_one_time_token() -> None:
    decision = decide(_initiate(None, gatewayToken="tok_guest_0001"), KeyState("pay-1"), NOW)
    assert decision.result.status == "accepted"
    assert decision.events[0].payload.model_dump()["guest"] is True
    assert decision.changed_payments[0].user_id is None
    assert b"tok_guest_0001" not in decision.events[0].to_wire()


def test_guest_cannot_use_a_saved_method() -> None:
    decision = decide(_initiate(None, paymentMethodId="pm-1"), KeyState("pay-1"), NOW)
    assert decision.result.reason == Reason.GUEST_CANNOT_USE_SAVED_METHOD


def test_unknown_or_removed_saved_method_is_not_found() -> None:
    removed = SAVED.with_changes(active=False, is_default=False)
    for state in (KeyState(USER), KeyState(USER, 3, (removed,))):
        decision = decide(_initiate(paymentMethodId="pm-1"), state, NOW)
        assert decision.result.reason == Reason.PAYMENT_METHOD_NOT_FOUND


def test_payment_id_is_used_once() -> None:
    state = KeyState(USER, payments=(_payment("pay-1", "someone-else"),))
    decision = decide(_initiate(gatewayToken="tok_00000002"), state, NOW)
    assert decision.result.reason == Reason.PAYMENT_ID_TAKEN
    assert decision.changed_payments == ()


@pytest.mark.parametrize(
    "payload",
    [
        {"amount": 0},
        {"amount": -5},
        {"amount": 19.99},
        {"amount": "1999"},
        {"amount": True},
        {"currency": "eur"},
        {"currency": "XYZ"},
        {"paymentMethodId": "pm-1", "gatewayToken": "tok_00000002"},
        {},
    ],
)
def test_invalid_payment_payloads_are_schema_violations(payload: dict[str, Any]) -> None:
    instrument = (
        {} if payload == {} or "paymentMethodId" in payload else {"gatewayToken": "tok_1x2y3z4w"}
    )
    with pytest.raises(ValidationError):
        _initiate(**{**instrument, **payload})


def _link(*payment_ids: str, user_id: str | None = USER) -> Command:
    return COMMANDS.validate_python(
        command("LinkGuestPayments", user_id, {"paymentIds": list(payment_ids)})
    )


def test_guest_payments_are_linked_all_together() -> None:
    state = KeyState(USER, 2, payments=(_payment("pay-1"), _payment("pay-2")))
    decision = decide(_link("pay-1", "pay-2"), state, NOW)

    assert decision.result.status == "accepted"
    assert [e.type for e in decision.events] == ["GuestPaymentsLinked"]
    assert decision.events[0].payload.model_dump() == {"payment_ids": ["pay-1", "pay-2"]}
    assert {p.payment_id: p.user_id for p in decision.changed_payments} == {
        "pay-1": USER,
        "pay-2": USER,
    }


def test_one_unknown_payment_rejects_them_all() -> None:
    state = KeyState(USER, payments=(_payment("pay-1"),))
    decision = decide(_link("pay-1", "pay-unknown"), state, NOW)
    assert decision.result.reason == Reason.PAYMENT_NOT_FOUND
    assert decision.changed_payments == ()


def test_one_payment_of_a_user_rejects_them_all() -> None:
    state = KeyState(USER, payments=(_payment("pay-1"), _payment("pay-2", "user-9")))
    decision = decide(_link("pay-1", "pay-2"), state, NOW)
    assert decision.result.reason == Reason.PAYMENT_NOT_A_GUEST_PAYMENT
    assert decision.changed_payments == ()


def test_guest_cannot_link() -> None:
    decision = decide(_link("pay-1", user_id=None), KeyState("x"), NOW)
    assert decision.result.reason == Reason.GUEST_NOT_ALLOWED


@pytest.mark.parametrize("ids", [[], [f"pay-{n}" for n in range(101)], ["pay-1", "pay-1"]])
def test_link_payload_limits(ids: list[str]) -> None:
    with pytest.raises(ValidationError):
        _link(*ids)


@pytest.mark.parametrize(
    ("document", "has_customer", "creates"),
    [
        (command("AddPaymentMethod", USER, {}), False, True),
        (command("AddPaymentMethod", USER, {}), True, False),
        (command("InitiatePayment", USER, {}), False, True),
        (
            command("InitiatePayment", USER, {"customer": {"name": "A", "email": "a@x.y"}}),
            False,
            False,
        ),
        (command("InitiatePayment", None, {}), False, False),
        (command("RemovePaymentMethod", USER, {}), False, False),
    ],
)
def test_which_decisions_create_the_gateway_customer(
    document: dict[str, Any], has_customer: bool, creates: bool
) -> None:
    payloads: dict[str, dict[str, Any]] = {
        "AddPaymentMethod": {
            "gatewayToken": "tok_00000001",
            "card": {
                "brand": "visa",
                "last4": "4242",
                "expMonth": 12,
                "expYear": 2030,
                "fingerprint": "fp_00000001",
            },
        },
        "InitiatePayment": {
            "paymentId": "pay-1",
            "orderId": "order-1",
            "amount": 1999,
            "currency": "EUR",
            "gatewayToken": "tok_00000002",
        },
        "RemovePaymentMethod": {"paymentMethodId": "pm-1"},
    }
    document["payload"] = {**payloads[document["type"]], **document["payload"]}
    state = KeyState(USER, gateway_customer_id="cus-1" if has_customer else None)
    assert creates_gateway_customer(COMMANDS.validate_python(document), state) is creates
