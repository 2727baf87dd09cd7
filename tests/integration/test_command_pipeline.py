"""The command pipeline end to end on the real broker and database."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import Engine, text

from config.settings import Settings
from tests.factories import add_payment_method, command, encode, with_field
from tests.support.harness import WorkerProcess, produce, read_topic


def test_add_payment_method_becomes_a_row_and_events(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    command = add_payment_method("user-e2e", billing_name="Ada Lovelace")
    produce(settings, [(b"user-e2e", encode(command))])

    events = read_topic(settings, settings.topic_events, expected=2)
    results = read_topic(settings, settings.topic_results, expected=1)

    assert [e.json()["type"] for e in events] == [
        "PaymentMethodAdded",
        "DefaultPaymentMethodChanged",
    ], worker.log()
    added = events[0].json()
    method_id = added["payload"]["paymentMethodId"]
    assert added["userId"] == "user-e2e"
    assert added["commandId"] == command["commandId"]
    assert [e.json()["sequence"] for e in events] == [1, 2]
    assert all(e.key == b"user-e2e" for e in events)
    assert events[0].headers == {
        "eventId": added["eventId"].encode(),
        "type": b"PaymentMethodAdded",
        "schemaVersion": b"1",
    }
    assert b"Ada Lovelace" not in events[0].value + events[1].value  # type: ignore[operator]
    (result,) = results
    assert result.json()["status"] == "accepted"
    assert result.json()["eventIds"] == [e.json()["eventId"] for e in events]
    assert result.json()["paymentMethodId"] == method_id

    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT user_id, last4, is_default, active, billing_name FROM payment_methods")
        ).one()
        inbox = connection.execute(text("SELECT command_id, status FROM processed_commands")).one()
        last_sequence = connection.execute(
            text("SELECT last_sequence FROM stream_sequences WHERE stream_key = 'user:user-e2e'")
        ).scalar_one()
    assert tuple(row) == ("user-e2e", "4242", True, True, "Ada Lovelace")
    assert (str(inbox.command_id), inbox.status) == (command["commandId"], "accepted")
    assert last_sequence == 2


def test_commands_of_one_user_apply_in_order_within_and_across_batches(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    commands = [
        add_payment_method("user-order", fingerprint=f"fp_order_{n:04d}", make_default=n == 3)
        for n in range(5)
    ]
    produce(settings, [(b"user-order", encode(c)) for c in commands])

    events = read_topic(settings, settings.topic_events, expected=7)

    assert [e.json()["sequence"] for e in events] == list(range(1, 8))
    assert [e.json()["commandId"] for e in events if e.json()["type"] == "PaymentMethodAdded"] == [
        c["commandId"] for c in commands
    ]
    with engine.connect() as connection:
        defaults = connection.execute(
            text("SELECT fingerprint FROM payment_methods WHERE is_default")
        ).scalars()
        assert list(defaults) == ["fp_order_0003"]


def test_duplicate_command_republishes_its_result_without_new_effects(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    command = add_payment_method("user-dup")
    reordered = json.dumps(dict(reversed(list(command.items())))).encode()
    conflicting = add_payment_method("user-dup", fingerprint="fp_other_0001")
    conflicting["commandId"] = command["commandId"]
    produce(
        settings,
        [
            (b"user-dup", encode(command)),
            (b"user-dup", encode(command)),
            (b"user-dup", reordered),
            (b"user-dup", encode(conflicting)),
        ],
    )

    results = read_topic(settings, settings.topic_results, expected=4)
    events = read_topic(settings, settings.topic_events, expected=2)

    first, again, reordered_again, conflict = (r.json() for r in results)
    assert first["status"] == "accepted"
    assert again == first
    assert reordered_again == first
    assert (conflict["status"], conflict["reason"]) == ("rejected", "command_id_conflict")
    assert len(events) == 2
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payment_methods")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM processed_commands")).scalar() == 1


def _with(document: dict[str, Any], path: str, value: Any) -> bytes:
    """``document`` with the field at a dotted ``path`` set to ``value``, as bytes."""
    return encode(with_field(document, path, value))


def _payment(**changes: Any) -> dict[str, Any]:
    payload = {
        "paymentId": "pay-dlq",
        "orderId": "order-dlq",
        "amount": 1000,
        "currency": "EUR",
        "gatewayToken": "tok_dlq_000001",
    }
    return command("InitiatePayment", "user-dlq", {**payload, **changes})


def _poison() -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected reason, key, value) for every kind of bad input."""
    add = add_payment_method("user-dlq")
    raw = encode(add)
    key = b"user-dlq"
    return [
        ("not_json", key, b"not json at all"),
        ("not_json", key, raw[: len(raw) // 2]),
        ("invalid_utf8", key, b'{"type": "\xff\xfe"}'),
        ("not_an_object", key, b"[1, 2, 3]"),
        ("not_an_object", key, b"null"),
        ("empty_value", key, b""),
        ("empty_value", key, None),
        ("oversize", key, _with(add, "payload.billingName", "x" * (64 * 1024))),
        ("too_deep", key, b'{"a": ' * 40 + b"1" + b"}" * 40),
        ("number_out_of_range", key, raw.replace(b'"expYear": 2030', b'"expYear": ' + b"9" * 400)),
        ("non_finite_number", key, raw.replace(b'"expYear": 2030', b'"expYear": NaN')),
        ("non_finite_number", key, raw.replace(b'"expYear": 2030', b'"expYear": Infinity')),
        (
            "duplicate_key",
            key,
            raw.replace(b'"expYear": 2030', b'"expYear": 2030, "expYear": 2031'),
        ),
        ("schema_violation", key, _with(add, "payload.card.expMonth", "12")),
        ("schema_violation", key, _with(add, "payload.makeDefault", 1)),
        ("schema_violation", key, _with(add, "payload.card.expYear", True)),
        ("unknown_command_type", key, _with(add, "type", "TransferAllMoney")),
        ("unsupported_schema_version", key, _with(add, "schemaVersion", 2)),
        ("schema_violation", key, raw.replace(b'"gatewayToken"', b'"gatewayTokn"')),
        ("schema_violation", key, encode(_payment(amount=-100))),
        ("schema_violation", key, encode(_payment(amount=0))),
        ("schema_violation", key, encode(_payment(amount=10.5))),
        ("schema_violation", key, encode(_payment(currency="eur"))),
        ("schema_violation", key, encode(_payment(currency="ABC"))),
        ("schema_violation", key, _with(add, "payload.billingName", "Ada\u202eecalevoL")),
        ("schema_violation", key, _with(add, "payload.billingName", "Ada\u0007Lovelace")),
        ("schema_violation", key, _with(add, "payload.billingName", "Ada\u0000Lovelace")),
        ("sensitive_data", key, _with(add, "payload.billingName", "4111 1111 1111 1111")),
        ("sensitive_data", key, _with(add, "correlationId", "4111111111111111")),
        ("sensitive_data", key, _with(add, "payload.cvv", "123")),
        ("key_mismatch", b"someone-else", raw),
        ("invalid_key", None, raw),
        ("invalid_key", b"user\x00dlq", raw),
    ]


def test_bad_messages_go_to_the_dead_letter_topic_and_the_worker_keeps_going(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    poison = _poison()
    sql_looking = add_payment_method(
        "user-dlq", fingerprint="fp_valid_0001", billing_name="Robert'); DROP TABLE payments;--"
    )
    produce(settings, [*((k, v) for _, k, v in poison), (b"user-dlq", encode(sql_looking))])

    dead = read_topic(settings, settings.topic_dlq, expected=len(poison))
    events = read_topic(settings, settings.topic_events, expected=2)
    results = read_topic(settings, settings.topic_results, expected=len(poison) + 1)

    # Records of one key stay in order; other keys land on other partitions.
    assert len(dead) == len(poison)
    dead = sorted(dead, key=lambda r: (r.key != b"user-dlq", r.key or b"", r.offset))
    poison = sorted(poison, key=lambda p: (p[1] != b"user-dlq", p[1] or b""))
    assert [r.headers["dlq.reason"].decode() for r in dead] == [reason for reason, _, _ in poison]
    for record, (_, key, value) in zip(dead, poison, strict=True):
        assert record.key == key
        assert record.headers["dlq.source.topic"] == settings.topic_commands.encode()
        assert record.headers["dlq.consumer.group"] == settings.consumer_group.encode()
        assert (
            record.headers["dlq.payload.sha256"]
            == hashlib.sha256(value or b"").hexdigest().encode()
        )
        assert record.headers["dlq.worker.version"]
        assert record.headers["dlq.error"]
        assert int(record.headers["dlq.source.offset"]) >= 0
        if record.headers["dlq.reason"] == b"sensitive_data":
            assert record.headers["dlq.body.withheld"] == b"true"
            assert not record.value
        else:
            assert record.value == (value or b"")
    same_key = [int(r.headers["dlq.source.offset"]) for r in dead if r.key == b"user-dlq"]
    assert same_key == sorted(same_key), "dead letters keep the order of the commands"
    statuses = [r.json()["status"] for r in results if r.key == b"user-dlq"]
    assert statuses == ["invalid"] * (len(statuses) - 1) + ["accepted"]
    assert sorted(r.json()["status"] for r in results).count("invalid") == len(poison)
    assert [e.json()["commandId"] for e in events] == [sql_looking["commandId"]] * 2
    assert worker.is_running()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT billing_name FROM payment_methods")).scalars()
        assert list(stored) == ["Robert'); DROP TABLE payments;--"]
        assert connection.execute(text("SELECT count(*) FROM payments")).scalar() == 0


def test_rejected_command_has_a_result_and_no_events(
    settings: Settings, worker: WorkerProcess
) -> None:
    guest = add_payment_method(None)
    produce(settings, [(str(uuid.uuid4()).encode(), encode(guest))])

    (result,) = read_topic(settings, settings.topic_results, expected=1)
    events = read_topic(settings, settings.topic_events, expected=0, settle=2.0)

    assert (result.json()["status"], result.json()["reason"]) == (
        "rejected",
        "guest_cannot_save_payment_method",
    )
    assert events == []


def test_every_payment_method_command_through_kafka(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    user = "user-all"
    first = add_payment_method(user, payment_method_id="pm-first", billing_name="Ada Lovelace")
    second = add_payment_method(user, payment_method_id="pm-second", fingerprint="fp_second_01")
    steps = [
        first,
        second,
        command(
            user_id=user,
            command_type="UpdatePaymentMethod",
            payload={"paymentMethodId": "pm-second", "expYear": 2033, "source": "account_updater"},
        ),
        command(
            user_id=user,
            command_type="SetDefaultPaymentMethod",
            payload={"paymentMethodId": "pm-second"},
        ),
        command(
            user_id=user,
            command_type="SetDefaultPaymentMethod",
            payload={"paymentMethodId": "pm-second"},
        ),
        command(
            user_id=user,
            command_type="RemovePaymentMethod",
            payload={"paymentMethodId": "pm-second"},
        ),
        command(
            user_id=user,
            command_type="RemovePaymentMethod",
            payload={"paymentMethodId": "pm-nobody"},
        ),
        command(user_id=user, command_type="EraseUserData"),
    ]
    produce(settings, [(user.encode(), encode(step)) for step in steps])

    results = read_topic(settings, settings.topic_results, expected=len(steps))
    events = read_topic(settings, settings.topic_events, expected=10)

    assert [(r.json()["status"], r.json()["reason"]) for r in results] == [
        ("accepted", "ok"),
        ("accepted", "ok"),
        ("accepted", "ok"),
        ("accepted", "ok"),
        ("accepted", "no_change"),
        ("accepted", "ok"),
        ("rejected", "payment_method_not_found"),
        ("accepted", "ok"),
    ], worker.log()
    assert [e.json()["type"] for e in events] == [
        "PaymentMethodAdded",
        "DefaultPaymentMethodChanged",
        "PaymentMethodAdded",
        "PaymentMethodUpdated",
        "DefaultPaymentMethodChanged",
        "PaymentMethodRemoved",
        "DefaultPaymentMethodChanged",
        "PaymentMethodRemoved",
        "DefaultPaymentMethodChanged",
        "UserPaymentDataErased",
    ]
    assert [e.json()["sequence"] for e in events] == list(range(1, 11))
    assert events[3].json()["payload"]["source"] == "account_updater"
    assert events[6].json()["payload"] == {
        "previousPaymentMethodId": "pm-second",
        "newPaymentMethodId": "pm-first",
    }
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT payment_method_id, active, is_default, gateway_token, billing_name"
                " FROM payment_methods ORDER BY 1"
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("pm-first", False, False, None, None),
        ("pm-second", False, False, None, None),
    ]


def test_guest_payments_then_linking_them_to_a_new_account(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    def initiate(payment_id: str, user_id: str | None, **instrument: str) -> dict[str, object]:
        payload = {
            "paymentId": payment_id,
            "orderId": f"order-{payment_id}",
            "amount": 2500,
            "currency": "EUR",
            **instrument,
        }
        return command("InitiatePayment", user_id, payload)

    saved = add_payment_method("user-link", payment_method_id="pm-link")
    steps: list[tuple[bytes, dict[str, object]]] = [
        (b"pay-g1", initiate("pay-g1", None, gatewayToken="tok_guest_000001")),
        (b"pay-g2", initiate("pay-g2", None, gatewayToken="tok_guest_000002")),
        (b"pay-g3", initiate("pay-g3", None, paymentMethodId="pm-link")),
        (b"user-link", saved),
        (b"user-link", initiate("pay-u1", "user-link", paymentMethodId="pm-link")),
        (b"user-link", initiate("pay-u1", "user-link", gatewayToken="tok_dupe_000001")),
    ]
    produce(settings, [(key, encode(step)) for key, step in steps])
    first = read_topic(settings, settings.topic_results, expected=len(steps))
    link = command("LinkGuestPayments", "user-link", {"paymentIds": ["pay-g1", "pay-g2"]})
    link_again = command("LinkGuestPayments", "user-link", {"paymentIds": ["pay-g1"]})
    produce(settings, [(b"user-link", encode(link)), (b"user-link", encode(link_again))])

    results = read_topic(settings, settings.topic_results, expected=len(steps) + 2)
    # 3 payments (initiated + authorized), a saved card (added + default), one link.
    events = read_topic(settings, settings.topic_events, expected=9)

    by_command = {r.json()["commandId"]: r.json() for r in results}
    assert len(first) == len(steps)
    assert [
        (by_command[s["commandId"]]["status"], by_command[s["commandId"]]["reason"])
        for _, s in steps
    ] == [
        ("accepted", "ok"),
        ("accepted", "ok"),
        ("rejected", "guest_cannot_use_saved_method"),
        ("accepted", "ok"),
        ("accepted", "ok"),
        ("rejected", "payment_id_taken"),
    ], worker.log()
    assert by_command[link["commandId"]]["status"] == "accepted"
    assert by_command[link_again["commandId"]]["reason"] == "payment_not_a_guest_payment"
    guest_events = [e for e in events if e.key == b"pay-g1"]
    assert [e.json()["type"] for e in guest_events] == ["PaymentInitiated", "PaymentAuthorized"]
    assert guest_events[0].json()["userId"] is None
    linked = [e.json() for e in events if e.json()["type"] == "GuestPaymentsLinked"]
    assert [e["payload"]["paymentIds"] for e in linked] == [["pay-g1", "pay-g2"]]
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT payment_id, user_id FROM payments")).all()
    owners = {row.payment_id: row.user_id for row in rows}
    assert owners == {"pay-g1": "user-link", "pay-g2": "user-link", "pay-u1": "user-link"}
    assert b"tok_guest" not in b"".join(e.value or b"" for e in events)
