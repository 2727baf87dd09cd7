"""Hostile input through the real broker and database: the worker stays up, nothing leaks.

Every message of a test goes to partition 0 of the command topic, and a valid command
follows each hostile one, so each case also shows that the partition goes on: the
offset advances past the bad message and the next valid command is processed.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from sqlalchemy import Engine, text

from config.kafka import librdkafka_config
from config.settings import Settings
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from sandbox.gateway_server import SandboxGatewayServer
from schemas.card_numbers import passes_luhn
from tests.factories import add_payment_method, command, encode, with_field
from tests.support.harness import Record, WorkerProcess, free_port, read_topic

PAN = "4111111111111111"
KEY = b"user-hostile"


def _pan_of_length(prefix: str, length: int) -> str:
    """A card number of ``length`` digits starting with ``prefix``, with its Luhn digit."""
    body = prefix + "0" * (length - len(prefix) - 1)
    return next(body + digit for digit in "0123456789" if passes_luhn(body + digit))


def _full_width(digits: str) -> str:
    return "".join(chr(0xFF10 + int(d)) for d in digits)


def _arabic_indic(digits: str) -> str:
    return "".join(chr(0x0660 + int(d)) for d in digits)


@dataclass(frozen=True)
class Case:
    name: str
    key: bytes | None
    value: bytes | None
    reason: str
    withheld: bool = False
    # Text that must appear in no record the worker publishes.
    secret: str | None = None


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with a new command id and ``path`` set to ``value``."""
    changed = with_field(document, path, value)
    changed["commandId"] = str(uuid.uuid4())
    return changed


def _payment(**changes: Any) -> dict[str, Any]:
    payload = {
        "paymentId": "pay-hostile",
        "orderId": "order-hostile",
        "amount": 1000,
        "currency": "EUR",
        "gatewayToken": "tok_hostile_0001",
        **changes,
    }
    return command("InitiatePayment", "user-hostile", payload)


def _card_number_cases() -> list[Case]:
    add = add_payment_method("user-hostile", fingerprint="fp_hostile_0001")
    visa19 = _pan_of_length("4", 19)
    grouped19 = " ".join([visa19[0:4], visa19[4:8], visa19[8:12], visa19[12:16], visa19[16:]])
    disguises = {
        "glued to a letter": ("correlationId", "x4111-1111-1111-1111"),
        "dots": ("payload.billingName", "4111.1111.1111.1111"),
        "underscores": ("payload.gatewayToken", "tok_4111_1111_1111_1111"),
        "slashes": ("payload.billingName", "4111/1111/1111/1111"),
        "full-width digits": ("payload.billingName", _full_width(PAN)),
        "zero-width spaces": ("payload.billingName", "4111\u200b1111\u200b1111\u200b1111"),
        "no-break spaces": ("payload.billingName", "4111\u00a01111\u00a01111\u00a01111"),
        "arabic-indic digits": ("payload.billingName", _arabic_indic(PAN)),
        "19 digits 4-4-4-4-3": ("payload.billingName", grouped19),
        "mastercard 2-series": ("payload.card.fingerprint", "fp_2221-0000-0000-0009"),
        "nested unknown field": ("payload.extra", {"deep": [{"note": "5555555555554444"}]}),
    }
    cases = [
        Case(f"card number, {name}", KEY, encode(_set(add, path, value)), "sensitive_data", True)
        for name, (path, value) in disguises.items()
    ]
    as_key = _set(add, "payload.makeDefault", False)
    as_key["payload"][PAN] = "x"
    cases += [
        Case("card number as an object key", KEY, encode(as_key), "sensitive_data", True),
        Case(
            "card number as a JSON integer",
            KEY,
            encode(_payment(amount=int(PAN))),
            "sensitive_data",
            True,
        ),
        Case(
            "card number as a JSON float",
            KEY,
            encode(_payment()).replace(b'"amount": 1000', b'"amount": 4111111111111111.0'),
            "sensitive_data",
            True,
        ),
        Case(
            "card number as the Kafka key",
            PAN.encode(),
            encode(add_payment_method(PAN)),
            "sensitive_data",
            True,
            secret=PAN,
        ),
    ]
    return cases


def _unparseable_cases() -> list[Case]:
    return [
        Case(
            "trailing comma with a card number",
            KEY,
            b'{"type": "AddPaymentMethod", "billingName": "4111 1111 1111 1111",}',
            "not_json",
            True,
        ),
        Case(
            "duplicate keys with a card number",
            KEY,
            b'{"type": "x", "note": "4111-1111-1111-1111", "type": "y"}',
            "duplicate_key",
            True,
        ),
        Case("top-level array of a card number", KEY, b"[4111111111111111]", "not_an_object", True),
        Case(
            "too deep with a card number",
            KEY,
            b'{"a": ' * 20 + b'"4111111111111111"' + b"}" * 20,
            "too_deep",
            True,
        ),
        Case(
            "invalid UTF-8 around a card number",
            KEY,
            b'{"note": "\xff4111111111111111\xfe"}',
            "invalid_utf8",
            True,
        ),
        Case("trailing comma without card data", KEY, b'{"type": "x",}', "not_json"),
    ]


def _lax_and_key_cases() -> list[Case]:
    add = add_payment_method("user-hostile", fingerprint="fp_hostile_0002")
    snake = _set(add, "payload.makeDefault", False)
    snake["command_id"] = snake.pop("commandId")
    future = datetime.now(UTC) + timedelta(days=1)
    guest_remove = command("RemovePaymentMethod", None, {"paymentMethodId": "pm-x"})
    return [
        Case("issuedAt as a number", KEY, encode(_set(add, "issuedAt", 0)), "schema_violation"),
        Case(
            "issuedAt as digits",
            KEY,
            encode(_set(add, "issuedAt", "1764496800")),
            "schema_violation",
        ),
        Case(
            "issuedAt without an offset",
            KEY,
            encode(_set(add, "issuedAt", "2026-11-30T10:00:00")),
            "schema_violation",
        ),
        Case(
            "schemaVersion true", KEY, encode(_set(add, "schemaVersion", True)), "schema_violation"
        ),
        Case("snake_case field name", KEY, encode(snake), "schema_violation"),
        Case(
            "an email as the type",
            KEY,
            encode(_set(add, "type", "jane.doe@example.com")),
            "unknown_command_type",
            secret="jane.doe@example.com",
        ),
        Case(
            "issued a day in the future",
            KEY,
            encode(_set(add, "issuedAt", future.isoformat())),
            "issued_in_future",
        ),
        Case(
            "a lone surrogate",
            KEY,
            encode(add).replace(b'"makeDefault"', b'"billingName": "Ada\\ud800", "makeDefault"'),
            "invalid_utf8",
        ),
        Case("a NUL key on a guest command", b"\x00", encode(guest_remove), "invalid_key"),
        Case("a key that is not UTF-8", b"\xff\xfe", encode(add), "invalid_key"),
        Case("a key of 200 bytes", b"u" * 200, encode(add), "invalid_key"),
        Case("a key with a space", b"user hostile", encode(add), "invalid_key"),
        Case("no key", None, encode(add), "invalid_key"),
    ]


def _produce_to_partition_0(
    settings: Settings, records: Sequence[tuple[bytes | None, bytes | None]]
) -> None:
    producer = Producer(
        {**librdkafka_config(settings), **PRODUCER_DEFAULTS, "enable.idempotence": "true"}
    )
    for key, value in records:
        producer.produce(settings.topic_commands, key=key, value=value, partition=0)
    if producer.flush(30) != 0:
        raise RuntimeError("commands were not delivered to Kafka")


def _canary(n: int) -> dict[str, Any]:
    return add_payment_method("user-canary", fingerprint=f"fp_canary_{n:04d}")


def _committed_offset(settings: Settings) -> int:
    consumer = Consumer({**librdkafka_config(settings), "group.id": settings.consumer_group})
    try:
        (partition,) = consumer.committed([TopicPartition(settings.topic_commands, 0)], timeout=10)
        return int(partition.offset)
    finally:
        consumer.close()


def _drive(settings: Settings, worker: WorkerProcess, cases: list[Case]) -> None:
    """Each case followed by a valid command on partition 0; then check both."""
    records: list[tuple[bytes | None, bytes | None]] = []
    canaries = [_canary(n) for n in range(len(cases))]
    for case, canary in zip(cases, canaries, strict=True):
        records += [(case.key, case.value), (b"user-canary", encode(canary))]
    _produce_to_partition_0(settings, records)

    dead = read_topic(settings, settings.topic_dlq, expected=len(cases))
    results = read_topic(settings, settings.topic_results, expected=len(records))
    events = read_topic(settings, settings.topic_events, expected=len(canaries))

    assert worker.is_running(), worker.log()
    by_offset = {int(r.headers["dlq.source.offset"]): r for r in dead}
    assert sorted(by_offset) == list(range(0, len(records), 2)), worker.log()
    for index, case in enumerate(cases):
        record = by_offset[2 * index]
        assert record.headers["dlq.reason"].decode() == case.reason, case.name
        if case.withheld:
            assert record.headers.get("dlq.body.withheld") == b"true", case.name
            assert not record.value, case.name
        else:
            assert record.value == (case.value or b""), case.name
    canary_results = [r.json() for r in results if r.key == b"user-canary"]
    assert [r["commandId"] for r in canary_results] == [c["commandId"] for c in canaries]
    assert {r["status"] for r in canary_results} == {"accepted"}, worker.log()
    assert [e.json()["sequence"] for e in events if e.key == b"user-canary"] == list(
        range(1, len(events) + 1)
    )
    _assert_nothing_leaked(cases, dead, results, events)
    _wait_for_committed_offset(settings, len(records))


def _wait_for_committed_offset(settings: Settings, offset: int) -> None:
    """The worker's group committed partition 0 past every message produced to it."""
    deadline = time.monotonic() + 30
    while _committed_offset(settings) < offset and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _committed_offset(settings) == offset, "the offset advanced past every message"


def _assert_nothing_leaked(
    cases: list[Case], dead: list[Record], results: list[Record], events: list[Record]
) -> None:
    """Withheld input appears in no record; other secrets in no result or event (the
    dead-letter topic keeps a body that is not withheld, for operators to replay)."""

    def blobs(records: list[Record]) -> list[bytes]:
        return [
            (r.key or b"") + b"\n" + (r.value or b"") + b"\n" + b"\n".join(r.headers.values())
            for r in records
        ]

    everything = blobs([*dead, *results, *events])
    outcomes = blobs([*results, *events])
    for case in cases:
        secrets = [s for s in (case.secret, case.value) if s]
        for secret in secrets:
            raw = secret.encode() if isinstance(secret, str) else secret
            if case.withheld:
                assert all(raw not in blob for blob in everything), case.name
            elif secret is case.secret:
                assert all(raw not in blob for blob in outcomes), case.name
    assert all(PAN.encode() not in blob for blob in everything)


def test_card_numbers_in_any_spelling_are_dead_lettered_and_withheld(
    settings: Settings, worker: WorkerProcess
) -> None:
    _drive(settings, worker, _card_number_cases())


def test_unparseable_bodies_are_scanned_before_anything_is_kept(
    settings: Settings, worker: WorkerProcess
) -> None:
    _drive(settings, worker, _unparseable_cases())


def test_lax_fields_and_bad_keys_are_invalid_and_the_partition_goes_on(
    settings: Settings, worker: WorkerProcess
) -> None:
    _drive(settings, worker, _lax_and_key_cases())
    results = read_topic(settings, settings.topic_results, expected=1, settle=0.5)
    assert all(
        r.json()["type"] in (None, "AddPaymentMethod", "RemovePaymentMethod") for r in results
    )


def test_guest_commands_without_a_guest_meaning_are_refused_before_the_store(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    refused = [
        command("RemovePaymentMethod", None, {"paymentMethodId": "pm-x"}),
        command("EraseUserData", None),
        command("SetDefaultPaymentMethod", None, {"paymentMethodId": "pm-x"}),
        command("LinkGuestPayments", None, {"paymentIds": ["pay-1"]}),
        add_payment_method(None),
    ]
    canary = _canary(0)
    _produce_to_partition_0(
        settings,
        [
            *((b"guest-" + str(n).encode(), encode(c)) for n, c in enumerate(refused)),
            (b"user-canary", encode(canary)),
        ],
    )

    results = read_topic(settings, settings.topic_results, expected=len(refused) + 1)

    by_command = {r.json()["commandId"]: r.json() for r in results}
    assert [by_command[c["commandId"]]["status"] for c in refused] == ["rejected"] * len(refused)
    assert by_command[canary["commandId"]]["status"] == "accepted", worker.log()
    _wait_for_committed_offset(settings, len(refused) + 1)
    with engine.connect() as connection:
        keys = connection.execute(text("SELECT stream_key FROM processed_commands")).scalars()
        assert list(keys) == ["user:user-canary"], "refused guest commands never reach the store"


def test_a_guest_payment_never_shares_a_users_stream_or_customer(
    settings: Settings,
    engine: Engine,
    worker: WorkerProcess,
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    victim = "victim-1"
    first = add_payment_method(victim, fingerprint="fp_victim_0001")
    guest = command(
        "InitiatePayment",
        None,
        {
            "paymentId": victim,  # the guest's payment id equals the user's id
            "orderId": "order-guest",
            "amount": 500,
            "currency": "EUR",
            "gatewayToken": "tok_guest_00000001",
        },
    )
    second = add_payment_method(victim, fingerprint="fp_victim_0002")
    own_payment = command(
        "InitiatePayment",
        victim,
        {
            "paymentId": "pay-victim",
            "orderId": "order-victim",
            "amount": 700,
            "currency": "EUR",
            "gatewayToken": "tok_victim_00000001",
        },
    )
    steps = [first, guest, second, own_payment]
    _produce_to_partition_0(settings, [(victim.encode(), encode(step)) for step in steps])

    results = read_topic(settings, settings.topic_results, expected=len(steps))
    events = read_topic(settings, settings.topic_events, expected=2 + 2 + 1 + 2)

    assert [r.json()["status"] for r in results] == ["accepted"] * 4, worker.log()
    users = [e.json() for e in events if e.json()["userId"] == victim]
    guests = [e.json() for e in events if e.json()["userId"] is None]
    assert [e["sequence"] for e in users] == list(range(1, len(users) + 1))
    assert [e["sequence"] for e in guests] == [1, 2]
    with engine.connect() as connection:
        streams: dict[str, int] = {
            row.stream_key: row.last_sequence
            for row in connection.execute(
                text("SELECT stream_key, last_sequence FROM stream_sequences")
            )
        }
        (customer,) = connection.execute(
            text("SELECT customer_id FROM gateway_customers")
        ).scalars()
    assert streams == {f"user:{victim}": len(users), f"guest-payment:{victim}": 2}
    by_reference = {
        a["reference"]: a["customer"] for a in sandbox_gateway.gateway.authorizations.values()
    }
    assert by_reference == {victim: None, "pay-victim": customer}


def test_a_value_postgres_refuses_is_dead_lettered_alone_and_the_rest_goes_on(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    # A real refusal by PostgreSQL (SQLSTATE 23514) of a value that passes decoding.
    with engine.begin() as connection:
        connection.execute(
            text(
                "ALTER TABLE payment_methods ADD CONSTRAINT hostile_trap"
                " CHECK (billing_name IS DISTINCT FROM 'Trap Name')"
            )
        )
    before = [_canary(n) for n in range(3)]
    trapped = add_payment_method("user-trap", billing_name="Trap Name")
    after = [_canary(n) for n in range(3, 6)]
    records = [(b"user-canary", encode(c)) for c in before]
    records += [(b"user-trap", encode(trapped))]
    records += [(b"user-canary", encode(c)) for c in after]
    _produce_to_partition_0(settings, records)

    (dead,) = read_topic(settings, settings.topic_dlq, expected=1)
    results = read_topic(settings, settings.topic_results, expected=len(records))

    assert dead.headers["dlq.reason"] == b"processing_failed", worker.log()
    assert int(dead.headers["dlq.source.offset"]) == len(before)
    # It carries a billing name (personal data): the body is withheld.
    assert dead.headers["dlq.body.withheld"] == b"true"
    assert b"Trap Name" not in (dead.value or b"")
    by_command = {r.json()["commandId"]: r.json() for r in results}
    assert by_command[trapped["commandId"]]["status"] == "invalid"
    assert by_command[trapped["commandId"]]["reason"] == "processing_failed"
    assert [by_command[c["commandId"]]["status"] for c in before + after] == ["accepted"] * 6
    assert worker.is_running()
    _wait_for_committed_offset(settings, len(records))
    assert "Trap Name" not in worker.log()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT fingerprint FROM payment_methods")).scalars()
        assert sorted(stored) == sorted(c["payload"]["card"]["fingerprint"] for c in before + after)
        assert not connection.execute(
            text("SELECT 1 FROM processed_commands WHERE command_id = :id"),
            {"id": uuid.UUID(trapped["commandId"])},
        ).first()


def test_producers_cannot_create_metric_series(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    worker = WorkerProcess(settings.model_copy(update={"metrics_port": port}), tmp_path / "w.log")
    worker.start()
    try:
        documents = []
        for n in range(50):
            document = add_payment_method("user-labels", fingerprint=f"fp_labels_{n:04d}")
            document["type"] = f"Random{uuid.uuid4().hex[:8]}"
            documents.append(document)
        _produce_to_partition_0(settings, [(b"user-labels", encode(d)) for d in documents])
        read_topic(settings, settings.topic_results, expected=len(documents))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            exposition = answer.read().decode()
    finally:
        worker.stop()
    types = set(re.findall(r'payment_worker_commands_total\{[^}]*type="([^"]*)"', exposition))
    assert types == {"unknown"}, types
    reasons = set(
        re.findall(r'payment_worker_dead_letters_total\{[^}]*reason="([^"]*)"', exposition)
    )
    assert reasons == {"unknown_command_type"}
