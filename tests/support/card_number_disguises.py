"""Card numbers in every written form and in every place of a command: the recall corpus.

Every published test card number of each brand, disguised (separators, other scripts'
digits, invisible characters, glued to words, JSON numbers) and placed in real command
envelopes; the scanner (``schemas/card_numbers.py``) must find each one. They are here,
under ``tests/support``, so that the unit tests (``tests/unit/test_card_numbers.py``) and
the soak tool (``python -m bench.scanner_rates``) measure recall on the same documents.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from schemas.card_numbers import find_sensitive_data


def with_check_digit(partial: str) -> str:
    """``partial`` and the Luhn check digit that makes it a valid card number."""
    total = 0
    for position, character in enumerate(reversed(partial)):
        digit = int(character)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return partial + str(-total % 10)


# Published test numbers of each brand (and two made here: 19-digit Visa and UnionPay).
TEST_CARD_NUMBERS: dict[str, list[str]] = {
    "visa": [
        "4111111111111111",
        "4012888888881881",
        "4222222222222",
        with_check_digit("411111111111111111"),
    ],
    "mastercard": ["5555555555554444", "5105105105105100", "2221000000000009", "2223003122003222"],
    "amex": ["378282246310005", "371449635398431"],
    "discover": ["6011111111111117", "6011000990139424", "6445644564456445"],
    "jcb": ["3530111333300000", "3566002020360505"],
    "diners": ["30569309025904", "38520000023237", "36227206271667"],
    "unionpay": ["6200000000000005", "6250941006528599", with_check_digit("621234567890123456")],
    "maestro": ["6759649826438453", "6799990100000000019"],
}

SEPARATORS = {
    "space": " ",
    "hyphen-minus": "-",
    "dot": ".",
    "underscore": "_",
    "slash": "/",
    "backslash": "\\",
    "comma": ",",
    "tab": "\t",
    "line feed": "\n",
    "no-break space": "\u00a0",
    "narrow no-break space": "\u202f",
    "thin space": "\u2009",
    "figure space": "\u2007",
    "ideographic space": "\u3000",
    "hyphen": "\u2010",
    "non-breaking hyphen": "\u2011",
    "en dash": "\u2013",
    "em dash": "\u2014",
    "minus sign": "\u2212",
    "full-width hyphen-minus": "\uff0d",
    "full-width full stop": "\uff0e",
    "middle dot": "\u00b7",
    "bullet": "\u2022",
    "spaced hyphen": " - ",
    "comma and space": ", ",
    "line separator": "\u2028",
}
# Characters that are not seen: deleted, so they may sit between any two digits.
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # zero-width no-break space (BOM)
    "\u00ad",  # soft hyphen
    "\u180e",  # Mongolian vowel separator
    "\u200e",  # left-to-right mark
    "\u0301",  # combining acute accent
    "\ufe0f",  # variation selector 16
]
# Zero of each script (its digits follow in order); NFKC folds none of those but full-width.
DIGIT_SCRIPTS = {
    "full-width": 0xFF10,
    "arabic-indic": 0x0660,
    "extended arabic-indic": 0x06F0,
    "devanagari": 0x0966,
    "bengali": 0x09E6,
    "thai": 0x0E50,
    "mathematical bold": 0x1D7CE,
    "mongolian": 0x1810,
}
SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
CIRCLED = "⓪①②③④⑤⑥⑦⑧⑨"
# Letters that are not hex digits: what a card number glued to a word looks like.
GLUE = ["x", "PAN", "Card", "nr", "Ω", "карта"]


def groupings(length: int) -> list[tuple[int, ...]]:
    """How numbers of ``length`` digits are printed: fours and the rest, 4-6-5, 4-6-4."""
    fours = (4,) * (length // 4) + ((length % 4,) if length % 4 else ())
    shapes = [fours]
    if length == 15:
        shapes.append((4, 6, 5))
    if length == 14:
        shapes.append((4, 6, 4))
    if length == 13:
        shapes.append((4, 4, 5))
    return shapes


def grouped(digits: str, shape: tuple[int, ...], separator: str | list[str]) -> str:
    """``digits`` in groups of ``shape`` with one separator, or one per gap."""
    parts = []
    position = 0
    for size in shape:
        parts.append(digits[position : position + size])
        position += size
    gaps = separator if isinstance(separator, list) else [separator] * (len(parts) - 1)
    return parts[0] + "".join(gap + part for gap, part in zip(gaps, parts[1:], strict=True))


def in_script(digits: str, zero: int) -> str:
    return "".join(chr(zero + int(digit)) for digit in digits)


def disguises(pan: str) -> dict[str, str]:
    """``pan`` in every written form the scanner must see through, by name."""
    forms = {"plain": pan}
    for shape in groupings(len(pan)):
        name = "-".join(map(str, shape))
        for separator_name, separator in SEPARATORS.items():
            forms[f"{name} {separator_name}"] = grouped(pan, shape, separator)
        separators = list(SEPARATORS.values())
        forms[f"{name} mixed separators"] = grouped(pan, shape, separators[: len(shape) - 1])
    four = groupings(len(pan))[0]
    for script, zero in DIGIT_SCRIPTS.items():
        forms[script] = in_script(pan, zero)
        forms[f"{script} grouped"] = grouped(in_script(pan, zero), four, " ")
    forms["mixed scripts"] = "".join(
        chr(list(DIGIT_SCRIPTS.values())[index % len(DIGIT_SCRIPTS)] + int(digit))
        for index, digit in enumerate(pan)
    )
    forms["superscript"] = "".join(SUPERSCRIPTS[int(digit)] for digit in pan)
    forms["circled"] = "".join(CIRCLED[int(digit)] for digit in pan)
    forms["invisible between all digits"] = "".join(
        digit + INVISIBLE[index % len(INVISIBLE)] for index, digit in enumerate(pan)
    )
    forms["invisible in places"] = "".join(
        digit + (INVISIBLE[index % len(INVISIBLE)] if index % 3 == 1 else "")
        for index, digit in enumerate(pan)
    )
    forms["invisible and grouped"] = grouped(pan, four, "\u200b \u200d")
    dashed = grouped(pan, four, "-")
    for glue in GLUE:
        forms[f"glued after {glue}"] = glue + pan
        forms[f"glued before {glue}"] = pan + glue
        forms[f"grouped, glued after {glue}"] = glue + dashed
        forms[f"grouped, glued before {glue}"] = dashed + glue
        forms[f"grouped, glued on both sides {glue}"] = glue + dashed + glue
    spaced = grouped(pan, four, " ")
    forms["in text"] = f"Please charge my card {pan} for the order, thanks!"
    forms["in text, grouped, with expiry"] = f"card: {spaced} 12/27 cvc 123"
    forms["after a quantity"] = f"Qty 2 {spaced}"
    forms["with expiry glued by a slash"] = f"{pan}/12/27"
    forms["in brackets"] = f"({spaced})"
    forms["after a colon"] = f"pan:{pan}"
    forms["as a decimal"] = f"{pan}.00"
    return forms


def _envelope(command_type: str) -> dict[str, Any]:
    payload: dict[str, Any]
    if command_type == "AddPaymentMethod":
        payload = {
            "paymentMethodId": "pm_2f9c1d7e5a",
            "gatewayToken": "tok_" + "5f1b0c2e9d7a4b3c8e6f0a1d2c3b4a59",
            "card": {
                "brand": "visa",
                "last4": "4242",
                "expMonth": 12,
                "expYear": 2030,
                "fingerprint": "fp_9d8c7b6a5f4e3d2c1b0a",
            },
            "billingName": "Ada Lovelace",
            "makeDefault": True,
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        }
    else:
        payload = {
            "paymentId": "pay_7c2e9a4f1b",
            "orderId": "order-2026-000042",
            "amount": 12_999,
            "currency": "EUR",
            "gatewayToken": "tok_" + "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
        }
    return {
        "commandId": "3f2b8c1e-7d4a-4e9b-a1c3-5d6e7f8091a2",
        "type": command_type,
        "schemaVersion": 1,
        "issuedAt": "2026-11-30T10:00:00+00:00",
        "userId": "user-8c1f2a",
        "correlationId": "checkout-7f3e9b21",
        "payload": payload,
    }


def typical_add_payment_method() -> dict[str, Any]:
    """A valid AddPaymentMethod document: 13 string values, 4 numbers and booleans."""
    return _envelope("AddPaymentMethod")


def typical_initiate_payment() -> dict[str, Any]:
    return _envelope("InitiatePayment")


# (command type, path, how the value is written there)
STRING_PLACES: list[tuple[str, str, str]] = [
    ("AddPaymentMethod", "commandId", "{}"),
    ("AddPaymentMethod", "type", "{}"),
    ("AddPaymentMethod", "issuedAt", "{}"),
    ("AddPaymentMethod", "userId", "{}"),
    ("AddPaymentMethod", "correlationId", "{}"),
    ("AddPaymentMethod", "payload.paymentMethodId", "pm_{}"),
    ("AddPaymentMethod", "payload.gatewayToken", "tok_{}"),
    ("AddPaymentMethod", "payload.card.brand", "{}"),
    ("AddPaymentMethod", "payload.card.last4", "{}"),
    ("AddPaymentMethod", "payload.card.fingerprint", "fp_{}"),
    ("AddPaymentMethod", "payload.billingName", "{}"),
    ("AddPaymentMethod", "payload.customer.name", "{}"),
    ("AddPaymentMethod", "payload.customer.email", "{}@example.com"),
    ("AddPaymentMethod", "note", "{}"),
    ("AddPaymentMethod", "payload.card.extra", "{}"),
    ("InitiatePayment", "payload.orderId", "{}"),
    ("InitiatePayment", "payload.paymentId", "{}"),
    ("InitiatePayment", "payload.currency", "{}"),
    ("InitiatePayment", "payload.gatewayToken", "{}"),
    ("InitiatePayment", "payload.customer.email", "{}"),
]
NUMBER_PLACES: list[tuple[str, str]] = [
    ("AddPaymentMethod", "payload.card.expMonth"),
    ("AddPaymentMethod", "payload.card.expYear"),
    ("AddPaymentMethod", "schemaVersion"),
    ("InitiatePayment", "payload.amount"),
    ("InitiatePayment", "metadata.total"),
]


def placed(command_type: str, path: str, value: object) -> dict[str, Any]:
    """A real envelope with ``value`` at ``path`` (parents made as needed)."""
    document = _envelope(command_type)
    target = document
    *parents, leaf = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value
    return document


def json_number_spellings(pan: str) -> dict[str, str]:
    """``pan`` as JSON numbers: integer, with a fraction, in exponent notation."""
    return {
        "JSON integer": pan,
        "JSON float with a fraction": pan + ".0",
        "JSON float in exponent notation": f"{pan[0]}.{pan[1:]}e{len(pan) - 1}",
        "JSON float in exponent notation, upper case": f"{pan[:2]}.{pan[2:]}E+{len(pan) - 2}",
    }


def recall_corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    """(description, parsed document) pairs, each of which holds a card number."""
    for brand, numbers in TEST_CARD_NUMBERS.items():
        for pan in numbers:
            forms = disguises(pan)
            for form, text in forms.items():
                for command_type, path, written in STRING_PLACES:
                    yield (
                        f"{brand} {pan} {form} in {command_type}.{path}",
                        placed(command_type, path, written.format(text)),
                    )
                as_key = placed("AddPaymentMethod", "payload.card.brand", "visa")
                as_key["payload"]["card"][text] = "x"
                yield f"{brand} {pan} {form} as a key", as_key
                yield (
                    f"{brand} {pan} {form} nested in lists",
                    placed(
                        "InitiatePayment", "payload.extra", {"items": [1, {"notes": ["ok", text]}]}
                    ),
                )
            for spelling, number in json_number_spellings(pan).items():
                for command_type, path in NUMBER_PLACES:
                    document = placed(command_type, path, 0)
                    raw = json.dumps(document).replace('": 0', '": ' + number)
                    yield f"{brand} {pan} {spelling} in {command_type}.{path}", json.loads(raw)
                nested = json.loads(
                    json.dumps(placed("AddPaymentMethod", "extra", {"list": [[0]]})).replace(
                        "[[0]]", f"[[{number}]]"
                    )
                )
                yield f"{brand} {pan} {spelling} nested in lists", nested


def measure_recall() -> tuple[int, list[str]]:
    """How many documents of the corpus there are, and the descriptions of those missed."""
    total = 0
    missed = []
    for description, document in recall_corpus():
        total += 1
        if find_sensitive_data(document) is None:
            missed.append(description)
    return total, missed
