"""Dead-letter records: the original message plus headers that say where and why."""

from __future__ import annotations

import hashlib

from pipelines.records import IncomingMessage, OutgoingRecord
from schemas.card_numbers import contains_card_number
from schemas.errors import InvalidMessage

# Header names, documented in docs/dead-letters.md; consumers of the DLQ rely on them.
HEADER_PREFIX = "dlq."
MAX_ERROR_LENGTH = 500


def _sanitize(text: str) -> str:
    """Printable ASCII only, bounded: the error text may quote parts of hostile input."""
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)
    return cleaned[:MAX_ERROR_LENGTH]


def dead_letter(
    message: IncomingMessage, error: InvalidMessage, *, consumer_group: str, worker_version: str
) -> OutgoingRecord:
    """The DLQ record for ``message``; its body is withheld when it may hold card data."""
    digest = hashlib.sha256(message.value or b"").hexdigest()
    added = [
        ("source.topic", message.topic),
        ("source.partition", str(message.partition)),
        ("source.offset", str(message.offset)),
        ("consumer.group", consumer_group),
        ("reason", str(error.reason)),
        ("error", _sanitize(error.detail)),
        ("payload.sha256", digest),
        ("worker.version", worker_version),
    ]
    if error.withhold_body:
        added.append(("body.withheld", "true"))
        added.append(("payload.length", str(len(message.value or b""))))
    if error.withhold_key:
        added.append(("key.withheld", "true"))
    # A header that may hold a card number is dropped like a withheld body.
    original_headers = [
        (k, v)
        for k, v in message.headers
        if not k.startswith(HEADER_PREFIX)
        and not contains_card_number(k)
        and not contains_card_number(v.decode("utf-8", "replace"))
    ]
    return OutgoingRecord(
        destination="dlq",
        key=None if error.withhold_key else message.key,
        value=None if error.withhold_body else message.value,
        headers=original_headers + [(HEADER_PREFIX + k, v.encode()) for k, v in added],
    )
