from __future__ import annotations

import hashlib

from pipelines.dead_letters import dead_letter
from pipelines.records import IncomingMessage
from schemas.errors import InvalidMessage, InvalidReason


def _message(value: bytes) -> IncomingMessage:
    return IncomingMessage(
        topic="payment.commands",
        partition=3,
        offset=42,
        key=b"user-1",
        value=value,
        headers=[("traceparent", b"00-abc"), ("dlq.reason", b"forged")],
    )


def test_dead_letter_keeps_the_original_and_says_where_and_why() -> None:
    record = dead_letter(
        _message(b"not json"),
        InvalidMessage(InvalidReason.NOT_JSON, "Expecting value\x1b[31m at line 1"),
        consumer_group="payment-worker",
        worker_version="1.2.3",
    )

    headers = dict(record.headers)
    assert (record.destination, record.key, record.value) == ("dlq", b"user-1", b"not json")
    assert headers["traceparent"] == b"00-abc"
    assert headers["dlq.source.topic"] == b"payment.commands"
    assert headers["dlq.source.partition"] == b"3"
    assert headers["dlq.source.offset"] == b"42"
    assert headers["dlq.consumer.group"] == b"payment-worker"
    assert headers["dlq.reason"] == b"not_json"
    assert headers["dlq.error"] == b"Expecting value?[31m at line 1"
    assert headers["dlq.payload.sha256"] == hashlib.sha256(b"not json").hexdigest().encode()
    assert headers["dlq.worker.version"] == b"1.2.3"
    # A header that claims to be ours is replaced, not repeated.
    assert [k for k, _ in record.headers].count("dlq.reason") == 1


def test_body_with_card_data_is_withheld() -> None:
    body = b'{"pan": "4111111111111111"}'
    record = dead_letter(
        _message(body),
        InvalidMessage(InvalidReason.SENSITIVE_DATA, "card number", withhold_body=True),
        consumer_group="g",
        worker_version="v",
    )
    assert record.value is None
    headers = dict(record.headers)
    assert headers["dlq.body.withheld"] == b"true"
    assert headers["dlq.payload.sha256"] == hashlib.sha256(body).hexdigest().encode()
