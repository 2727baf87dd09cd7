"""Detection of card numbers and CVVs anywhere in a command.

The worker must never accept, store or log a primary account number (PAN) or a card
verification value. Producers are supposed to send tokens; this is the safety net.
"""

from __future__ import annotations

import re
from functools import lru_cache

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


_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]")


@lru_cache(maxsize=4096)
def _normalized(key: str) -> str:
    """``Card-Number`` and ``card_number`` both become ``cardnumber`` (keys repeat a lot)."""
    return _NOT_ALPHANUMERIC.sub("", key.lower())


def find_sensitive_data(document: object) -> str | None:
    """Name the kind of sensitive data in a parsed JSON document, or ``None``.

    Never returns the value itself, so the answer is safe to log. Every key, string and
    integer is checked; the values are scanned together, one regular expression pass
    per kind, because this runs for every command.
    """
    strings: list[str] = []
    numbers: list[str] = []
    stack: list[object] = [document]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key, value in current.items():
                name = _normalized(str(key))
                if name in _CVV_FIELD_NAMES and value not in (None, ""):
                    return f"a field named like a card number or security code ({name})"
                strings.append(str(key))
                stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, str):
            strings.append(current)
        elif isinstance(current, int) and not isinstance(current, bool):
            numbers.append(str(current))
    # A line break between values: no match can span two of them.
    if numbers and contains_card_number("\n".join(numbers)):
        return "a number that looks like a card number"
    if contains_card_number("\n".join(strings)):
        return "a string that looks like a card number"
    return None
