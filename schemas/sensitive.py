"""Detection of card numbers and CVVs anywhere in a command.

The worker must never accept, store or log a primary account number (PAN) or a card
verification value. Producers are supposed to send tokens; this is the safety net.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# 13-19 digits in a row, or in the groups printed on cards (4-4-4-x, 4-6-5) separated by
# spaces or dashes. Grouped forms must stand alone so that UUIDs (8-4-4-4-12 hex) never
# look like card numbers.
_PAN_CANDIDATE = re.compile(
    r"(?<![0-9])[0-9]{13,19}(?![0-9])"
    r"|(?<![0-9A-Za-z])[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{1,7}(?![0-9A-Za-z])"
    r"|(?<![0-9A-Za-z])[0-9]{4}([ -])[0-9]{6}\2[0-9]{4,5}(?![0-9A-Za-z])"
)
_CVV_FIELD_NAMES = frozenset(
    {
        "cvv",
        "cvv2",
        "cvc",
        "cvc2",
        "cid",
        "csc",
        "securitycode",
        "cardsecuritycode",
        "cardverificationvalue",
        "cardverificationcode",
        "pan",
        "cardnumber",
        "accountnumber",
    }
)


def passes_luhn(digits: str) -> bool:
    """The Luhn checksum that every real card number satisfies."""
    total = 0
    for position, character in enumerate(reversed(digits)):
        digit = ord(character) - 48
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def contains_card_number(text: str) -> bool:
    for match in _PAN_CANDIDATE.finditer(text):
        digits = match.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and passes_luhn(digits):
            return True
    return False


def _walk(value: object, key: str | None = None) -> Iterator[tuple[str | None, object]]:
    stack: list[tuple[str | None, object]] = [(key, value)]
    while stack:
        current_key, current = stack.pop()
        yield current_key, current
        if isinstance(current, dict):
            stack.extend((str(k), v) for k, v in current.items())
            stack.extend((None, k) for k in current)
        elif isinstance(current, list):
            stack.extend((current_key, item) for item in current)


def find_sensitive_data(document: object) -> str | None:
    """Name the kind of sensitive data in a parsed JSON document, or ``None``.

    Never returns the value itself, so the answer is safe to log.
    """
    for key, value in _walk(document):
        normalized_key = re.sub(r"[^a-z0-9]", "", key.lower()) if key else ""
        if normalized_key in _CVV_FIELD_NAMES and value not in (None, ""):
            return f"a field named like a card number or security code ({normalized_key})"
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and contains_card_number(str(value)):
            return "a number that looks like a card number"
        if isinstance(value, str) and contains_card_number(value):
            return "a string that looks like a card number"
    return None
