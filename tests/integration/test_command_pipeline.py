"""The command pipeline end to end on the real broker and database."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import Engine, text

from config.settings import Settings
from tests.factories import add_payment_method, command, encode
from tests.integration.stack import WorkerProcess, produce, read_topic


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
            text("SELECT last_sequence FROM event_streams WHERE stream_key = 'user-e2e'")
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


def test_bad_messages_go_to_the_dead_letter_topic_and_the_worker_keeps_going(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    with_pan = add_payment_method("user-dlq")
    with_pan["payload"]["billingName"] = "4111 1111 1111 1111"
    wrong_type = add_payment_method("user-dlq")
    wrong_type["payload"]["card"]["expMonth"] = "12"
    poison: list[tuple[bytes | None, bytes | None]] = [
        (b"user-dlq", b"not json at all"),
        (b"user-dlq", b"\xff\xfe\xfd"),
        (b"user-dlq", None),
        (b"user-dlq", b'{"a": ' * 40 + b"1" + b"}" * 40),
        (b"user-dlq", encode(with_pan)),
        (b"user-dlq", encode(wrong_type)),
        (b"someone-else", encode(add_payment_method("user-dlq"))),
        (b"user-dlq", b"x" * (64 * 1024 + 1)),
    ]
    valid = add_payment_method("user-dlq", fingerprint="fp_valid_0001")
    produce(settings, [*poison, (b"user-dlq", encode(valid))])

    dead = read_topic(settings, settings.topic_dlq, expected=len(poison))
    events = read_topic(settings, settings.topic_events, expected=2)
    results = read_topic(settings, settings.topic_results, expected=len(poison) + 1)

    assert [r.headers["dlq.reason"].decode() for r in dead] == [
        "not_json",
        "invalid_utf8",
        "empty_value",
        "too_deep",
        "sensitive_data",
        "schema_violation",
        "key_mismatch",
        "oversize",
    ]
    for record in dead:
        assert record.headers["dlq.source.topic"] == settings.topic_commands.encode()
        assert record.headers["dlq.consumer.group"] == settings.consumer_group.encode()
        assert len(record.headers["dlq.payload.sha256"]) == 64
        assert int(record.headers["dlq.source.offset"]) >= 0
    assert dead[0].value == b"not json at all"
    assert dead[4].headers["dlq.body.withheld"] == b"true"
    assert not dead[4].value
    assert [r.json()["status"] for r in results] == ["invalid"] * len(poison) + ["accepted"]
    assert [e.json()["commandId"] for e in events] == [valid["commandId"]] * 2
    assert worker.is_running()
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT fingerprint FROM payment_methods")).scalars()
        assert list(stored) == ["fp_valid_0001"]


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
