"""Every kind of bad input gets a fixed reason; valid commands decode unchanged."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from schemas.card_numbers import contains_card_number
from schemas.commands import AddPaymentMethod
from schemas.decoding import (
    MAX_MESSAGE_BYTES,
    _plain_json_object,
    _strict_json_object,
    decode_command,
)
from schemas.errors import InvalidMessage, InvalidReason
from tests.factories import add_payment_method, encode
from tests.unit.wire_documents import JSON_OBJECT_TEXTS, command_documents

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


# --- the fast reading (orjson) and the strict one (the standard library) agree --------------


def _strict_or_none(raw: bytes) -> dict[str, Any] | None:
    try:
        return _strict_json_object(raw)
    except InvalidMessage:
        return None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_OBJECT_TEXTS)
def test_the_fast_reading_gives_the_strict_document_or_steps_aside(raw: bytes) -> None:
    fast = _plain_json_object(raw)
    if fast is not None:
        strict = _strict_or_none(raw)
        assert strict is not None, "the fast reading took what the strict one refuses"
        # repr tells 0 from 0.0 and -0.0, and keeps the key order.
        assert repr(fast) == repr(strict)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_documents())
def test_commands_read_the_same_either_way(document: dict[str, Any]) -> None:
    for raw in (
        json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(),
        json.dumps(document).encode(),
    ):
        fast = _plain_json_object(raw)
        assert fast is None or repr(fast) == repr(_strict_json_object(raw))


def test_a_producers_command_takes_the_fast_reading() -> None:
    document = add_payment_method(billing_name="Zoë O'Brien, née Ada: 😀")
    document["payload"]["customer"] = {"name": "Zoë", "email": "zoe@example.com"}
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    assert _plain_json_object(compact) == document


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # Repeated keys, with colons and commas in strings that could hide them.
        (b'{"a:":1,"a:":2}', InvalidReason.DUPLICATE_KEY),
        (b'{"x":{"k":"v:w","k":"v:w"}}', InvalidReason.DUPLICATE_KEY),
        (b'{"k":":","b":[{"c":1,"c":":"}]}', InvalidReason.DUPLICATE_KEY),
        (b'{"a":1,"a":1}', InvalidReason.DUPLICATE_KEY),
        # What orjson reads without a word: integers past 18 digits, past 64 bits.
        (b'{"a":1234567890123456789}', InvalidReason.NUMBER_OUT_OF_RANGE),
        (b'{"a":123456789012345678901234567890}', InvalidReason.NUMBER_OUT_OF_RANGE),
        (b'{"a":-18446744073709551617}', InvalidReason.NUMBER_OUT_OF_RANGE),
        (b'{"a":"\\ud800"}', InvalidReason.INVALID_UTF8),
        (b"\xef\xbb\xbf{}", InvalidReason.NOT_JSON),
        (b'{"a":' * 9 + b"1" + b"}" * 9, InvalidReason.TOO_DEEP),
    ],
)
def test_what_the_strict_reading_refuses_is_refused(raw: bytes, reason: InvalidReason) -> None:
    assert _plain_json_object(raw) is None
    assert _reason(raw).reason is reason


def test_a_bom_is_reported_as_json_loads_reports_it() -> None:
    assert _reason(b"\xef\xbb\xbf{}").detail.startswith("Unexpected UTF-8 BOM")


def test_colons_written_as_escapes_take_the_strict_reading() -> None:
    raw = b'{"a\\u003a":1,"a:":2}'  # the same key twice, once escaped
    assert _plain_json_object(raw) is None
    assert _reason(raw).reason is InvalidReason.DUPLICATE_KEY
