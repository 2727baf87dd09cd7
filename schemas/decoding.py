"""Raw Kafka bytes to a validated command, or an ``InvalidMessage`` with a fixed reason.

The checks run from cheapest to most expensive, and the sensitive-data scan runs before
schema validation so that a card number is withheld even when the message is also
malformed in other ways.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from typing import Any, Final

import orjson
from pydantic import ValidationError

from schemas.base import SCHEMA_VERSION
from schemas.card_numbers import (
    bytes_may_hold_card_number,
    contains_card_number,
    find_sensitive_data,
)
from schemas.commands import COMMAND_TYPES, Command, expected_key
from schemas.errors import InvalidMessage, InvalidReason

MAX_MESSAGE_BYTES = 64 * 1024
MAX_NESTING_DEPTH = 8
# How far ahead of the worker's clock issuedAt may be (clocks of producers drift).
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
# Amounts in minor units fit a signed 64-bit integer; anything longer is hostile.
MAX_INTEGER_DIGITS = 18


class _DuplicateKeyError(ValueError):
    pass


class _NumberError(ValueError):
    def __init__(self, reason: InvalidReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    # A repeated key collapses into one entry: fewer entries than pairs (one pass of C).
    if len(document) != len(pairs):
        raise _DuplicateKeyError("an object repeats a key")
    return document


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise _NumberError(InvalidReason.NUMBER_OUT_OF_RANGE, "integer has too many digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberError(InvalidReason.NUMBER_OUT_OF_RANGE, "number is out of range")
    return value


def _reject_constant(name: str) -> float:
    raise _NumberError(InvalidReason.NON_FINITE_NUMBER, f"{name} is not valid JSON")


# One decoder for every message (``json.loads`` with hooks would build one per call, which
# costs a third of the parse); it keeps no state between calls.
_STRICT_JSON = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_int=_bounded_int,
    parse_float=_finite_float,
    parse_constant=_reject_constant,
)


def _depth(document: object) -> int:
    deepest = 0
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in node)
    return deepest


def _holds_lone_surrogate(document: object) -> bool:
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def parse_json_object(raw: bytes | None) -> dict[str, Any]:
    """Strict JSON: UTF-8, one object, no duplicate keys, no NaN, bounded size and depth."""
    if not raw:
        raise InvalidMessage(InvalidReason.EMPTY_VALUE, "the message has no value")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidMessage(
            InvalidReason.OVERSIZE, f"{len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES} limit"
        )
    document = _plain_json_object(raw)
    return document if document is not None else _strict_json_object(raw)


# Marks ASCII digits, to find an integer too long for the strict reading (translate + find).
_DIGIT_MARKS: Final = bytes(
    ord("d") if ord("0") <= byte <= ord("9") else ord(".") for byte in range(256)
)
_TOO_MANY_DIGITS: Final = b"d" * (MAX_INTEGER_DIGITS + 1)


def _plain_json_object(raw: bytes) -> dict[str, Any] | None:
    """The document of a plain message, read by orjson (half the cost); else ``None``.

    Plain: no backslash (so no escape, no lone surrogate, no colon written as an escape),
    no run of digits longer than an integer may be, few enough brackets that it cannot nest
    too deep, and no repeated key. For such a message orjson and the strict reading below
    give the same document (``tests/unit/test_decoding.py`` compares them), and anything
    else -- every message the strict reading refuses included -- takes the strict reading,
    so the outcome and its reason are the same whichever reads it.
    """
    if (
        b"\\" in raw
        or raw.count(b"{") + raw.count(b"[") > MAX_NESTING_DEPTH
        or raw.translate(_DIGIT_MARKS).find(_TOO_MANY_DIGITS) >= 0
    ):
        return None
    try:
        document = orjson.loads(raw)
        if type(document) is not dict:
            return None
        # orjson keeps the last of repeated keys. Outside strings, every colon of the text
        # ends a key, and without escapes the colons inside strings are those of the parsed
        # strings; orjson writes one colon per key and the strings' colons as they are. So a
        # key was dropped exactly when the text has more colons than the document written
        # back.
        written = orjson.dumps(document)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return document if raw.count(b":") == written.count(b":") else None


def _strict_json_object(raw: bytes) -> dict[str, Any]:
    """The standard library's reading, with every check and its exact reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidMessage(
            InvalidReason.INVALID_UTF8, f"invalid UTF-8 at byte {error.start}"
        ) from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        document = _STRICT_JSON.decode(text)
    except _DuplicateKeyError:
        raise InvalidMessage(InvalidReason.DUPLICATE_KEY, "an object repeats a key") from None
    except _NumberError as error:
        raise InvalidMessage(error.reason, str(error)) from None
    except RecursionError:
        raise InvalidMessage(InvalidReason.TOO_DEEP, "nesting is too deep") from None
    except json.JSONDecodeError as error:
        raise InvalidMessage(
            InvalidReason.NOT_JSON, f"{error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(document, dict):
        raise InvalidMessage(
            InvalidReason.NOT_AN_OBJECT, f"the value is a JSON {type(document).__name__}"
        )
    # Only a backslash-u escape can name a lone surrogate: no text can hold it, PostgreSQL cannot
    # store it and no UTF-8 encoder writes it, so it must not get past decoding.
    if "\\u" in text and _holds_lone_surrogate(document):
        raise InvalidMessage(
            InvalidReason.INVALID_UTF8, "a \\u escape names a lone surrogate, not a character"
        )
    # Each level opens a bracket: text with few brackets cannot nest too deep, and the
    # walk (which costs as much as the parse) is left for the rare text that might.
    if (
        raw.count(b"{") + raw.count(b"[") > MAX_NESTING_DEPTH
        and _depth(document) > MAX_NESTING_DEPTH
    ):
        raise InvalidMessage(
            InvalidReason.TOO_DEEP, f"nesting deeper than {MAX_NESTING_DEPTH} levels"
        )
    return document


def _safe_identifier(value: object) -> str | None:
    """An envelope field echoed back in results only when it is short and plain."""
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return None


def _known_type(value: object) -> str | None:
    """The command type, echoed in results and metrics only when it is one we know: an
    attacker's ``type`` must never reach a topic or become a metric label."""
    return value if isinstance(value, str) and value in COMMAND_TYPES else None


def _summarize(error: ValidationError) -> str:
    """Field paths and error kinds only: the offending values are never echoed."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['type']}"
        for item in error.errors(include_url=False, include_input=False)
    ]
    return "; ".join(problems[:5]) + (
        f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    )


_KEY_PATTERN = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
MAX_KEY_BYTES = 128


def _checked_key(key: bytes | None) -> str:
    """The Kafka key, validated like an id field: UTF-8, the id pattern, at most 128 bytes.

    The key reaches Postgres, logs and every topic the worker writes, so it gets the
    same checks as the envelope's ids (a NUL byte in it once stopped every worker).
    """
    if key is None or not 0 < len(key) <= MAX_KEY_BYTES:
        raise InvalidMessage(InvalidReason.INVALID_KEY, "the message key must be 1-128 bytes")
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage(InvalidReason.INVALID_KEY, "the message key is not UTF-8") from None
    if _KEY_PATTERN.fullmatch(text) is None:
        raise InvalidMessage(
            InvalidReason.INVALID_KEY, "the message key must be an id: letters, digits, ._:@-"
        )
    return text


def decode_command(
    raw: bytes | None,
    key: bytes | None,
    *,
    now: datetime | None = None,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
) -> Command:
    """Decode and validate one message of ``payment.commands``.

    ``now`` is the worker's clock: a command issued further than ``max_future_skew``
    ahead of it is invalid. Every failure's body is scanned for card data before it is
    kept anywhere, also when the bytes do not parse.
    """
    if key is not None and contains_card_number(key.decode("utf-8", "replace")):
        raise InvalidMessage(
            InvalidReason.SENSITIVE_DATA,
            "the message key looks like a card number",
            withhold_body=True,
            withhold_key=True,
        )
    try:
        return _decode(raw, key, now, max_future_skew)
    except InvalidMessage as error:
        if not error.withhold_body and raw and bytes_may_hold_card_number(raw):
            error.withhold_body = True
        raise


def _decode(
    raw: bytes | None, key: bytes | None, now: datetime | None, max_future_skew: timedelta
) -> Command:
    document = parse_json_object(raw)
    command_id = _safe_identifier(document.get("commandId"))
    command_type = _known_type(document.get("type"))

    sensitive = find_sensitive_data(document)
    if sensitive is not None:
        raise InvalidMessage(
            InvalidReason.SENSITIVE_DATA,
            f"the command carries {sensitive}; send a gateway token instead",
            command_id=command_id,
            command_type=command_type,
            withhold_body=True,
        )
    text_key = _checked_key(key)
    version = document.get("schemaVersion")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise InvalidMessage(
            InvalidReason.UNSUPPORTED_SCHEMA_VERSION,
            f"schemaVersion {version} is newer than this worker supports ({SCHEMA_VERSION})",
            command_id=command_id,
            command_type=command_type,
        )
    model = COMMAND_TYPES.get(command_type or "")
    if model is None:
        raise InvalidMessage(
            InvalidReason.UNKNOWN_COMMAND_TYPE,
            "type must be one of: " + ", ".join(sorted(COMMAND_TYPES)),
            command_id=command_id,
            command_type=None,
        )
    try:
        # Wire names only: the camelCase aliases, never the Python field names.
        command = model.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        raise InvalidMessage(
            InvalidReason.SCHEMA_VIOLATION,
            _summarize(error),
            command_id=command_id,
            command_type=command_type,
        ) from None

    required_key = expected_key(command)
    if required_key is not None and text_key != required_key:
        raise InvalidMessage(
            InvalidReason.KEY_MISMATCH,
            "the message key must equal the command's userId (a guest payment: its paymentId)",
            command_id=command_id,
            command_type=command_type,
        )
    if now is not None and command.issued_at > now + max_future_skew:
        raise InvalidMessage(
            InvalidReason.ISSUED_IN_FUTURE,
            f"issuedAt is more than {max_future_skew.total_seconds():g} s ahead of the worker",
            command_id=command_id,
            command_type=command_type,
        )
    return command
