"""Values that look like card numbers and are not: tokens, uuids, hex and numeric ids.

The scanner (``schemas/card_numbers.py``) must almost never take these for card numbers.
They are here, under ``tests/support``, so that the unit tests
(``tests/unit/test_card_numbers.py``) and the soak tool (``python -m bench.scanner_rates``)
measure the false-positive rate on the same values, drawn from the same seeds.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterator

from schemas.card_numbers import card_brand, contains_card_number, find_sensitive_data

BASE62 = string.digits + string.ascii_letters
# The first digits no issuer prefix starts with: any id starting with them is safe.
NON_ISSUER_FIRST_DIGITS = "01789"
TWITTER_EPOCH_MS = 1_288_834_974_657
DISCORD_EPOCH_MS = 1_420_070_400_000
# 2024-01-01 to 2030-01-01: the timestamps of ids made now and for a while. (Ids of
# Discord's epoch made before 2022 have 18 digits and may start with 62, 65 or 67: a card
# prefix, like any number that starts with one.)
SNOWFLAKE_TIMES_MS = (1_704_067_200_000, 1_893_456_000_000)


# The version (4) and variant (10) bits of a uuid4, set as uuid.UUID(version=4) sets them.
_UUID4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)
_UUID4_SET = 0x4000 << 64 | 0x8000 << 48


def _uuid4_hex(rng: random.Random) -> str:
    return format(rng.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET, "032x")


def uuid4_strings(rng: random.Random) -> Iterator[str]:
    """``str(uuid.uuid4())`` from ``rng`` (built by hand: three times faster than UUID)."""
    while True:
        h = _uuid4_hex(rng)
        yield f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def tok_tokens(rng: random.Random) -> Iterator[str]:
    """``tok_`` and the hex of a uuid4, the gateway tokens of the sandbox and of many PSPs."""
    while True:
        yield "tok_" + _uuid4_hex(rng)


def hex_strings(rng: random.Random) -> Iterator[str]:
    """Lower-case hex of 16-64 characters (hashes, fingerprints, random ids)."""
    while True:
        length = rng.randint(16, 64)
        yield format(rng.getrandbits(4 * length), f"0{length}x")


def base62_tokens(rng: random.Random) -> Iterator[str]:
    while True:
        yield "".join(rng.choices(BASE62, k=rng.randint(16, 40)))


def non_issuer_ids(rng: random.Random) -> Iterator[str]:
    """Numeric ids of 13-19 digits starting with 0, 1, 7, 8 or 9 (no issuer prefix)."""
    while True:
        length = rng.randint(13, 19)
        yield rng.choice(NON_ISSUER_FIRST_DIGITS) + format(
            rng.randrange(10 ** (length - 1)), f"0{length - 1}d"
        )


def snowflake_ids(rng: random.Random) -> Iterator[str]:
    """Snowflake ids of 2024-2030: Discord's epoch (they start with 1) and Twitter's (1 or 2).

    19 digits: no brand whose prefix starts with 1 or 2 has 19-digit numbers.
    """
    while True:
        epoch = rng.choice((TWITTER_EPOCH_MS, DISCORD_EPOCH_MS))
        milliseconds = rng.randrange(*SNOWFLAKE_TIMES_MS) - epoch
        yield str(milliseconds << 22 | rng.getrandbits(22))


def ids_outside_brands(rng: random.Random) -> Iterator[str]:
    """Numeric ids of 13-19 digits starting with 2-6 whose prefix and length are no brand's."""
    while True:
        length = rng.randint(13, 19)
        digits = str(rng.randint(2, 6)) + format(
            rng.randrange(10 ** (length - 1)), f"0{length - 1}d"
        )
        if card_brand(digits) is None:
            yield digits


RANDOM_KINDS: dict[str, Callable[[random.Random], Iterator[str]]] = {
    "uuid4": uuid4_strings,
    "tok_<uuid4 hex>": tok_tokens,
    "hex 16-64": hex_strings,
    "base62 16-40": base62_tokens,
}
NUMERIC_KINDS: dict[str, Callable[[random.Random], Iterator[str]]] = {
    "ids 13-19 digits from 0/1/7/8/9": non_issuer_ids,
    "snowflake ids": snowflake_ids,
    "ids 13-19 digits outside brands": ids_outside_brands,
}


def false_positives(
    kind: Callable[[random.Random], Iterator[str]], count: int, seed: int = 1
) -> list[str]:
    """The values among ``count`` of ``kind`` that the scanner takes for card numbers."""
    values = kind(random.Random(seed))  # noqa: S311 - test data, not crypto
    return [value for value in (next(values) for _ in range(count)) if contains_card_number(value)]


def numeric_false_positives(
    kind: Callable[[random.Random], Iterator[str]], count: int, seed: int = 1
) -> list[str]:
    """Like ``false_positives``, each id also as a JSON integer and a float (no leading 0)."""
    values = kind(random.Random(seed))  # noqa: S311 - test data, not crypto
    found = []
    for value in (next(values) for _ in range(count)):
        document: dict[str, object] = {"orderId": value}
        if not value.startswith("0"):
            document |= {"paymentId": int(value), "amount": float(int(value))}
        if contains_card_number(value) or find_sensitive_data(document) is not None:
            found.append(value)
    return found
