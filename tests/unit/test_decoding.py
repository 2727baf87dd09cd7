"""Every kind of bad input gets a fixed reason; valid commands decode unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from domain.errors import InvalidMessage, InvalidReason
from schemas.card_numbers import contains_card_number
from schemas.commands import AddPaymentMethod
from schemas.decoding import MAX_MESSAGE_BYTES, decode_command
from tests.factories import add_payment_method, encode

KEY = b"user-123"


def _reason(raw: bytes | None, key: bytes | None = KEY) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        decode_command(raw, key)
    return caught.value


def _with(path: list[str], value: Any) -> bytes:
    document = add_payment_method()
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return encode(document)


def _decode_add(raw: bytes, key: bytes) -> AddPaymentMethod:
    command = decode_command(raw, key)
    assert isinstance(command, AddPaymentMethod)
    return command


def test_a_valid_command_decodes() -> None:
    document = add_payment_method(billing_name="Ada O'Brien; DROP TABLE users; --")
    command = _decode_add(encode(document), KEY)
    assert str(command.command_id) == document["commandId"]
    assert command.payload.card.last4 == "4242"
    # SQL-looking text is data like any other and is kept verbatim.
    assert command.payload.billing_name == "Ada O'Brien; DROP TABLE users; --"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, InvalidReason.EMPTY_VALUE),
        (b"", InvalidReason.EMPTY_VALUE),
        (b"\xff\xfe{}", InvalidReason.INVALID_UTF8),
        (b"not json", InvalidReason.NOT_JSON),
        (b'{"commandId": "abc", "type": "AddPay', InvalidReason.NOT_JSON),
        (b"[1, 2, 3]", InvalidReason.NOT_AN_OBJECT),
        (b"null", InvalidReason.NOT_AN_OBJECT),
        (b'"a string"', InvalidReason.NOT_AN_OBJECT),
        (b'{"a": NaN}', InvalidReason.NON_FINITE_NUMBER),
        (b'{"a": Infinity}', InvalidReason.NON_FINITE_NUMBER),
        (b'{"a": 1e999}', InvalidReason.NUMBER_OUT_OF_RANGE),
        (b'{"a": ' + b"9" * 5000 + b"}", InvalidReason.NUMBER_OUT_OF_RANGE),
        (b'{"type": "AddPaymentMethod", "type": "Other"}', InvalidReason.DUPLICATE_KEY),
        (b'{"a":' * 50 + b"1" + b"}" * 50, InvalidReason.TOO_DEEP),
        (b"[" * 100_000 + b"]" * 100_000, InvalidReason.OVERSIZE),
    ],
)
def test_malformed_bytes_are_invalid_with_a_reason(
    raw: bytes | None, reason: InvalidReason
) -> None:
    assert _reason(raw).reason is reason


def test_deep_nesting_under_the_size_limit_does_not_crash() -> None:
    raw = b"[" * 30_000 + b"]" * 30_000
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert _reason(raw).reason in (InvalidReason.TOO_DEEP, InvalidReason.NOT_AN_OBJECT)


def test_oversize_message_is_invalid() -> None:
    document = add_payment_method(billing_name="x" * 100)
    document["padding"] = "y" * MAX_MESSAGE_BYTES
    assert _reason(encode(document)).reason is InvalidReason.OVERSIZE


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["payload", "card", "expMonth"], "12"),
        (["payload", "card", "expMonth"], True),
        (["payload", "card", "expMonth"], 12.5),
        (["payload", "card", "expMonth"], 13),
        (["payload", "makeDefault"], "yes"),
        (["payload", "card", "last4"], 4242),
        (["payload", "card", "brand"], "VISA"),
        (["payload", "billingName"], "Ada\u202eLovelace"),
        (["payload", "billingName"], "Ada\x00Lovelace"),
        (["payload", "billingName"], "Ada\x1bLovelace"),
        (["issuedAt"], "2026-11-30T10:00:00"),
        (["commandId"], "not-a-uuid"),
        (["userId"], "user 123"),
        (["payload", "unexpected"], "field"),
    ],
)
def test_wrong_types_and_values_violate_the_schema(path: list[str], value: Any) -> None:
    error = _reason(_with(path, value))
    assert error.reason is InvalidReason.SCHEMA_VIOLATION
    assert error.command_type == "AddPaymentMethod"


def test_missing_required_field_is_named_without_its_value() -> None:
    document = add_payment_method()
    del document["payload"]["gatewayToken"]
    error = _reason(encode(document))
    assert error.reason is InvalidReason.SCHEMA_VIOLATION
    assert "payload.gatewayToken: missing" in error.detail


def test_schema_violation_detail_never_echoes_the_value() -> None:
    error = _reason(_with(["payload", "billingName"], "Secret Name\u202e"))
    assert "Secret Name" not in error.detail


def test_unknown_command_type() -> None:
    error = _reason(_with(["type"], "TransferMoney"))
    assert error.reason is InvalidReason.UNKNOWN_COMMAND_TYPE


def test_schema_version_from_the_future() -> None:
    error = _reason(_with(["schemaVersion"], 2))
    assert error.reason is InvalidReason.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["payload", "billingName"], "4111 1111 1111 1111"),
        (["payload", "gatewayToken"], "tok-4111111111111111"),
        (["correlationId"], "5500-0000-0000-0004"),
        (["payload", "card", "expYear"], 4111111111111111),
        (["payload", "cvv"], "123"),
        (["payload", "card", "cvc"], 123),
    ],
)
def test_card_data_anywhere_is_invalid_and_withheld(path: list[str], value: Any) -> None:
    error = _reason(_with(path, value))
    assert error.reason is InvalidReason.SENSITIVE_DATA
    assert error.withhold_body
    assert "4111" not in error.detail
    assert "5500" not in error.detail


def test_digits_that_fail_luhn_are_not_card_numbers() -> None:
    document = add_payment_method(billing_name="Order 4111111111111112")
    assert _decode_add(encode(document), KEY).payload.billing_name is not None


def test_key_must_match_the_user() -> None:
    error = _reason(encode(add_payment_method()), key=b"someone-else")
    assert error.reason is InvalidReason.KEY_MISMATCH


def test_guest_command_takes_its_key_as_given() -> None:
    document = add_payment_method(user_id=None)
    assert decode_command(json.dumps(document).encode(), b"anything").user_id is None


def test_uuids_are_never_mistaken_for_card_numbers() -> None:
    assert not any(contains_card_number(str(uuid.uuid4())) for _ in range(20_000))


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "3782 822463 10005",
        "x 5500000000000004",
    ],
)
def test_card_numbers_in_common_formats_are_found(text: str) -> None:
    assert contains_card_number(text)
