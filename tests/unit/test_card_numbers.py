"""The card-number and CVV scanner: measured recall, measured false positives, field names.

Run with ``-s`` (or ``-rA``) to see the measured rates. ``python -m bench.scanner_rates``
measures the same with more values.
"""

from __future__ import annotations

import json
import re
import string
import types
import typing
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from schemas import card_numbers
from schemas.card_numbers import (
    BRANDS,
    bytes_may_hold_card_number,
    card_brand,
    contains_card_number,
    find_sensitive_data,
    passes_luhn,
    sensitive_field_name,
)
from schemas.commands import COMMAND_TYPES
from tests.factories import add_payment_method, command
from tests.support.card_number_disguises import (
    DIGIT_SCRIPTS,
    GLUE,
    INVISIBLE,
    SEPARATORS,
    TEST_CARD_NUMBERS,
    disguises,
    grouped,
    groupings,
    json_number_spellings,
    measure_recall,
    typical_add_payment_method,
    typical_initiate_payment,
    with_check_digit,
)
from tests.support.card_number_lookalikes import (
    NUMERIC_KINDS,
    RANDOM_KINDS,
    false_positives,
    numeric_false_positives,
)

# Per kind of random value; the CI budget allows a million of each token kind.
RANDOM_VALUES = 1_000_000
# Numeric ids are never card numbers by construction of the rule; fewer suffice.
NUMERIC_VALUES = 200_000
ALL_NUMBERS = [(brand, pan) for brand, pans in TEST_CARD_NUMBERS.items() for pan in pans]
DESCRIPTION = re.compile(
    r"a card number( \(a JSON number\))?|a card (number|security code) field \([a-z]+\)"
)


def _assert_fixed_description(description: str | None) -> None:
    assert description is not None
    assert DESCRIPTION.fullmatch(description), description


# --- recall ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("brand", "pan"), ALL_NUMBERS)
def test_the_test_numbers_are_valid_card_numbers_of_their_brand(brand: str, pan: str) -> None:
    assert passes_luhn(pan)
    assert card_brand(pan) == brand


def test_recall_is_total_on_every_disguise_in_every_field() -> None:
    total, missed = measure_recall()
    print(f"\nrecall, documents: {total - len(missed)}/{total} = {1 - len(missed) / total:.4%}")
    assert not missed, missed[:20]


def test_every_disguise_alone_is_a_card_number() -> None:
    texts = [text for _, pan in ALL_NUMBERS for text in disguises(pan).values()]
    found = sum(contains_card_number(text) for text in texts)
    print(f"\nrecall, strings: {found}/{len(texts)} = {found / len(texts):.4%}")
    assert found == len(texts)


def test_descriptions_are_fixed_texts_that_never_echo_the_value() -> None:
    descriptions = {
        find_sensitive_data({"note": text, text: 1})
        for _, pan in ALL_NUMBERS
        for text in disguises(pan).values()
    }
    for description in descriptions:
        _assert_fixed_description(description)


def _unparseable(document: object, *, ensure_ascii: bool) -> bytes:
    """``document`` as JSON with a trailing comma, as a producer with a bug would send it."""
    return json.dumps(document, ensure_ascii=ensure_ascii).encode()[:-1] + b",}"


def test_recall_is_total_in_bodies_that_do_not_parse() -> None:
    bodies = []
    for _, pan in ALL_NUMBERS:
        for text in disguises(pan).values():
            document = typical_add_payment_method()
            document["payload"]["billingName"] = text
            # ensure_ascii writes every non-ASCII character as a \\u escape.
            bodies += [_unparseable(document, ensure_ascii=flag) for flag in (True, False)]
        for number in json_number_spellings(pan).values():
            bodies.append(b'{"type": "InitiatePayment", "amount": ' + number.encode() + b",}")
    found = sum(bytes_may_hold_card_number(body) for body in bodies)
    print(f"\nrecall, unparseable bodies: {found}/{len(bodies)} = {found / len(bodies):.4%}")
    assert found == len(bodies)


_BRAND_RANGES = [
    (first, last, length)
    for ranges, lengths in BRANDS.values()
    for first, last in ranges
    for length in sorted(lengths)
]
_SCRIPT_ZEROS: list[int | None] = [None, None, *DIGIT_SCRIPTS.values()]
_AROUND = string.ascii_letters + " !?;:" + "éßΩж"
_BOUNDARIES = ["", " ", "(", ":", "#", "\n", '"', "tok_", "pm-"]


@st.composite
def disguised_card_numbers(draw: st.DrawFn) -> str:
    """A valid card number (a brand's prefix and length, a Luhn digit) in a random disguise.

    Grouping, each separator, each digit's script, invisible characters anywhere, letters
    glued on either side (never all hex digits) and text around it.
    """
    first, last, length = draw(st.sampled_from(_BRAND_RANGES))
    prefix = str(draw(st.integers(int(first), int(last))))
    size = length - len(prefix) - 1
    pan = with_check_digit(prefix + draw(st.text("0123456789", min_size=size, max_size=size)))
    shape = draw(st.sampled_from([(length,), *groupings(length), (1,) * length]))
    gaps = draw(st.lists(st.sampled_from(list(SEPARATORS.values())), min_size=len(shape) - 1))
    written = []
    for character in grouped(pan, shape, gaps[: len(shape) - 1]):
        zero = draw(st.sampled_from(_SCRIPT_ZEROS)) if character.isdigit() else None
        written.append(character if zero is None else chr(zero + int(character)))
        if draw(st.integers(0, 4)) == 0:
            written.append(draw(st.sampled_from(INVISIBLE)))
    left = draw(st.sampled_from(GLUE + _BOUNDARIES))
    right = draw(st.sampled_from(GLUE + _BOUNDARIES))
    before = draw(st.text(_AROUND, max_size=20))
    after = draw(st.text(_AROUND, max_size=20))
    return f"{before} {left}{''.join(written)}{right} {after}"


@settings(max_examples=400, deadline=None)
@given(text=disguised_card_numbers(), ensure_ascii=st.booleans())
def test_any_disguise_of_any_valid_card_number_is_found(text: str, ensure_ascii: bool) -> None:
    assert contains_card_number(text)
    document = typical_initiate_payment()
    document["payload"]["customer"]["name"] = text
    _assert_fixed_description(find_sensitive_data(document))
    assert bytes_may_hold_card_number(_unparseable(document, ensure_ascii=ensure_ascii))


# --- precision -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(RANDOM_KINDS))
def test_random_tokens_are_almost_never_card_numbers(kind: str) -> None:
    found = false_positives(RANDOM_KINDS[kind], RANDOM_VALUES, seed=20261130)
    print(
        f"\nfalse positives, {kind}: {len(found)} of {RANDOM_VALUES:,}"
        f" = {len(found) / RANDOM_VALUES * 1e6:.2f} per million"
    )
    assert len(found) <= RANDOM_VALUES // 1_000_000, found


@pytest.mark.parametrize("kind", list(NUMERIC_KINDS))
def test_numeric_ids_outside_issuer_prefixes_are_never_card_numbers(kind: str) -> None:
    found = numeric_false_positives(NUMERIC_KINDS[kind], NUMERIC_VALUES, seed=20261130)
    print(f"\nfalse positives, {kind}: {len(found)} of {NUMERIC_VALUES:,}")
    assert not found


def _models(annotation: object) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation names, through Optional, Annotated, list..."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models(argument)
    if isinstance(annotation, types.UnionType):
        for argument in annotation.__args__:
            yield from _models(argument)


def _field_names() -> set[str]:
    """Every field name of every command model, on the wire (alias) and in code."""
    names: set[str] = set()
    pending: list[type[BaseModel]] = list(COMMAND_TYPES.values())
    seen: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            names |= {name, field.alias or name}
            pending.extend(_models(field.annotation))
    return names


def test_no_field_name_of_any_command_is_taken_for_card_data() -> None:
    names = _field_names()
    # The walk reaches the nested models: card, customer and their fields are there.
    assert {"card", "customer", "last4", "expMonth", "fingerprint", "paymentIds"} <= names
    assert {name for name in names if sensitive_field_name(name) is not None} == set()
    assert find_sensitive_data({name: "123" for name in names}) is None


def test_valid_commands_are_clean() -> None:
    documents = [
        typical_add_payment_method(),
        typical_initiate_payment(),
        add_payment_method(billing_name="José Müller-Łukasiewicz"),
        command("LinkGuestPayments", payload={"paymentIds": ["pay-1", "pay-2"]}),
        command("UpdatePaymentMethod", payload={"paymentMethodId": "pm-1", "expYear": 2031}),
    ]
    assert [find_sensitive_data(document) for document in documents] == [None] * 5


@pytest.mark.parametrize(
    "text",
    [
        "Order 4111111111111112",  # fails Luhn
        "4111111111111111111111",  # 22 digits: no card is that long
        "cafe4111111111111111",  # glued to hex letters: part of a hex token
        "a4111-1111-1111-1111",
        "12345678-1234-4123-8123-123456789012",  # a UUID of digits
        "2026-11-30T10:00:00.123456+00:00",
        "+1 415 555 2671",
        "1234567890123456789",  # starts with 1: no issuer
        "order-2026-000042",
    ],
)
def test_lookalikes_are_not_card_numbers(text: str) -> None:
    assert not contains_card_number(text)


# --- field names -----------------------------------------------------------------------------

CARD_DATA_NAMES = [
    "cvv",
    "CVV",
    "cvv2",
    "CVV2",
    "cvc",
    "cvc2",
    "cid",
    "csc",
    "cvn",
    "securityCode",
    "security_code",
    "securitycode",
    "cardSecurityCode",
    "cardsecuritycode",
    "cardVerificationValue",
    "card_verification_code",
    "cardverificationvalue",
    "cardCvc",
    "card_cvv",
    "cvvCode",
    "cvv_number",
    "CVVCode",
    "securityCode2",
    "x-card-cvv",
    "Card CVV",
    "\uff43\uff56\uff56",  # full-width "cvv"
    "c\u200bvv",  # a zero-width space inside
    "pan",
    "PAN",
    "cardPan",
    "cardNumber",
    "card_number",
    "cardnumber",
    "CardNumber",
    "accountNumber",
    "primaryAccountNumber",
    "ccNumber",
    "cc_number",
    "ccnumber",
    "creditCardNumber",
    "cardNo",
    "card_num",
]
LEGITIMATE_NAMES = [
    "card",
    "brand",
    "last4",
    "expMonth",
    "expYear",
    "fingerprint",
    "paymentMethodId",
    "gatewayToken",
    "correlationId",
    "orderId",
    "paymentId",
    "userId",
    "commandId",
    "billingName",
    "customer",
    "email",
    "name",
    "source",
    "reason",
    "makeDefault",
    "paymentIds",
    "amount",
    "currency",
    "issuedAt",
    "schemaVersion",
    "type",
    "payload",
    # Words that hold a code without it being a word of their own.
    "company",
    "decide",
    "incident",
    "expand",
    "japan",
    "panel",
    "panorama",
    "cidr",
    "cardNonce",
    "cardholderName",
    "cardBrand",
    "accountId",
]


@pytest.mark.parametrize("name", CARD_DATA_NAMES)
def test_fields_named_like_card_data_are_found(name: str) -> None:
    assert sensitive_field_name(name) is not None
    description = find_sensitive_data({"payload": {"card": {name: "123"}}})
    _assert_fixed_description(description)
    assert find_sensitive_data({"payload": {name: 123}}) == description


@pytest.mark.parametrize("name", LEGITIMATE_NAMES)
def test_legitimate_field_names_are_not_card_data(name: str) -> None:
    assert sensitive_field_name(name) is None


@pytest.mark.parametrize("value", [None, ""])
def test_a_card_data_field_without_a_value_passes(value: object) -> None:
    assert find_sensitive_data({"payload": {"cvv": value, "cardNumber": value}}) is None


def test_the_field_name_cache_is_bounded_by_count_and_key_length() -> None:
    for index in range(10_000):
        sensitive_field_name(f"field{index}")
    assert card_numbers.remembered_clean_names() <= 4096
    sensitive_field_name("note")
    remembered = card_numbers.remembered_clean_names()
    long_name = "note" + "x" * 100_000
    assert sensitive_field_name(long_name) is None
    # A long name is answered but not remembered.
    assert card_numbers.remembered_clean_names() == remembered


# --- bodies that do not parse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "AddPaymentMethod", "billingName": "4111 1111 1111 1111",}',
        b'{"note": "hello", "note": "4111111111111111"}',  # duplicate keys
        b"[4111111111111111]",  # a top-level array
        b'{"amount": 4111111111111111, "currency": ',  # an integer, cut short
        b'{"amount": 4111111111111111.0 "currency": "EUR"}',  # a float, a comma missing
        b'{"amount": 4.111111111111111e15 "currency": "EUR"}',
        b'{"amount": 6799990100000000019}',  # 19 digits: more than the decoder takes
        b'{"a": "\xff\xfe4111111111111111\xc3("}',  # invalid UTF-8 around it
        b'{"a": "4111\xff1111\xff1111\xff1111"}',  # invalid UTF-8 between the groups
        b'{"a": "\\u0034\\u0031\\u0031\\u0031111111111111"',  # JSON escapes
        b'{"a": "4111\\u00a01111\\u00a01111\\u00a01111",}',
        b'{"cvv": "123",}',
        b"{'cardNumber': 'on file',}",
        b"cvc=123&amount=10",
        b'{"payload": {"card": {"\\u0063vv": 1}},}',
    ],
)
def test_unparseable_bodies_with_card_data_are_withheld(raw: bytes) -> None:
    assert bytes_may_hold_card_number(raw)


@pytest.mark.parametrize(
    "raw",
    [
        _unparseable(typical_add_payment_method(), ensure_ascii=True),
        _unparseable(add_payment_method(billing_name="Zoë Ωmega"), ensure_ascii=False),
        b"not json",
        b"\xff\xfe{}",
        b'{"cvv": null, "cvc": "",',
        json.dumps([typical_initiate_payment()] * 3).encode(),
        b'{"a":' * 50 + b"1" + b"}" * 50,
    ],
)
def test_clean_unparseable_bodies_are_kept(raw: bytes) -> None:
    assert not bytes_may_hold_card_number(raw)


def test_json_numbers_hold_card_numbers_in_every_spelling() -> None:
    checks: list[Callable[[str], bool]] = [
        lambda number: find_sensitive_data(json.loads('{"amount": ' + number + "}")) is not None,
        lambda number: bytes_may_hold_card_number(b'{"amount": ' + number.encode() + b",}"),
    ]
    spellings = [number for _, pan in ALL_NUMBERS for number in json_number_spellings(pan).values()]
    assert all(check(number) for check in checks for number in spellings)
    # Fractions and negative zero are not card numbers.
    assert find_sensitive_data({"amount": 4111111111111111.5}) is None
    assert find_sensitive_data({"amount": -0.0, "n": 411111111111}) is None


def test_long_inputs_are_scanned_to_the_end() -> None:
    """No budget to exhaust: a card number after 64 KiB of decoys is still found."""
    decoys = ["1 " * 30_000, "4 " * 30_000, "4111 " * 12_000, "ab12" * 15_000, "7" * 60_000]
    fours = any(passes_luhn("4" * length) for length in (13, 16, 19))
    assert [contains_card_number(decoy) for decoy in decoys] == [False, fours, False, False, False]
    assert all(contains_card_number(decoy + " 4111 1111 1111 1111") for decoy in decoys)
