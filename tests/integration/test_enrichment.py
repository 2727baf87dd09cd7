"""Gateway customer profiles, the User Service lookup, and no personal data anywhere."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text

from config.settings import Settings
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, produce, read_topic


def test_customer_profile_is_created_once_per_user_and_follows_the_cards(
    settings: Settings,
    engine: Engine,
    worker: WorkerProcess,
    sandbox_gateway: SandboxGatewayServer,
    user_service: UserServiceStubServer,
) -> None:
    user = "user-enrich"
    cards = [
        add_payment_method(user, payment_method_id=f"pm-e{n}", fingerprint=f"fp_enrich_{n:04d}")
        for n in range(3)
    ]
    steps = [
        *cards,
        command("RemovePaymentMethod", user, {"paymentMethodId": "pm-e1"}),
        command(
            "InitiatePayment",
            user,
            {
                "paymentId": "pay-e1",
                "orderId": "o-1",
                "amount": 999,
                "currency": "USD",
                "paymentMethodId": "pm-e0",
            },
        ),
    ]
    produce(settings, [(user.encode(), encode(step)) for step in steps])
    results = read_topic(settings, settings.topic_results, expected=len(steps))
    assert {r.json()["status"] for r in results} == {"accepted"}, worker.log()

    stats = sandbox_gateway.gateway.stats()
    assert stats["customers"] == 1
    assert stats["attachedTokens"] == 2  # three attached, one detached
    assert stats["authorizations"] == 1
    # One lookup for the customer profile; the payment's fraud email came from the cache.
    assert user_service.stub.calls == 1
    with engine.connect() as connection:
        customers = connection.execute(text("SELECT user_id FROM gateway_customers")).scalars()
        assert list(customers) == [user]

    produce(settings, [(user.encode(), encode(command("EraseUserData", user)))])
    read_topic(settings, settings.topic_results, expected=len(steps) + 1)
    assert sandbox_gateway.gateway.stats()["deletedCustomers"] == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM gateway_customers")).scalar() == 0


def test_details_in_the_command_need_no_lookup(
    settings: Settings,
    worker: WorkerProcess,
    sandbox_gateway: SandboxGatewayServer,
    user_service: UserServiceStubServer,
) -> None:
    card = add_payment_method("user-carried")
    card["payload"]["customer"] = {"name": "Carried Name", "email": "carried@example.com"}
    produce(settings, [(b"user-carried", encode(card))])
    (result,) = read_topic(settings, settings.topic_results, expected=1)
    assert result.json()["status"] == "accepted"
    assert sandbox_gateway.gateway.stats()["customers"] == 1
    assert user_service.stub.calls == 0


def test_profiles_are_fetched_once_per_user_for_many_commands(
    settings: Settings, worker: WorkerProcess, user_service: UserServiceStubServer
) -> None:
    users = [f"user-many-{n}" for n in range(10)]
    messages = []
    for user in users:
        messages.append(
            (user.encode(), encode(add_payment_method(user, payment_method_id=f"pm-{user}")))
        )
        for n in range(3):
            pay = {
                "paymentId": f"pay-{user}-{n}",
                "orderId": "o",
                "amount": 100,
                "currency": "EUR",
                "paymentMethodId": f"pm-{user}",
            }
            messages.append((user.encode(), encode(command("InitiatePayment", user, pay))))
    produce(settings, messages)
    results = read_topic(settings, settings.topic_results, expected=len(messages))
    assert {r.json()["status"] for r in results} == {"accepted"}
    # 40 commands needed a profile (customer creation, fraud email); 10 users, 10 calls.
    assert user_service.stub.calls == len(users)


def test_a_user_the_user_service_does_not_know_is_rejected(
    settings: Settings, worker: WorkerProcess, sandbox_gateway: SandboxGatewayServer
) -> None:
    produce(settings, [(b"unknown-user-1", encode(add_payment_method("unknown-user-1")))])
    (result,) = read_topic(settings, settings.topic_results, expected=1)
    assert (result.json()["status"], result.json()["reason"]) == ("rejected", "user_not_found")
    assert read_topic(settings, settings.topic_events, expected=0, settle=1) == []
    assert sandbox_gateway.gateway.stats()["customers"] == 0


def test_a_user_service_outage_delays_commands_and_loses_none(
    settings: Settings, worker: WorkerProcess, user_service: UserServiceStubServer
) -> None:
    user_service.stub.available = False
    sent: dict[str, list[str]] = {}
    messages = []
    for user in (f"user-wait-{n}" for n in range(4)):
        cards = [add_payment_method(user, fingerprint=f"fp_{user}_{n}") for n in range(3)]
        sent[user] = [c["commandId"] for c in cards]
        messages += [(user.encode(), encode(c)) for c in cards]
    produce(settings, messages)
    deadline = time.monotonic() + 60  # a worker starting on a busy machine is slow
    while "a dependency is unavailable" not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "a dependency is unavailable" in worker.log()
    assert read_topic(settings, settings.topic_results, expected=0, settle=3) == []
    assert worker.is_running()

    user_service.stub.available = True
    results = read_topic(settings, settings.topic_results, expected=len(messages), timeout=90)
    assert sorted(r.json()["status"] for r in results) == ["accepted"] * len(messages)
    for user, command_ids in sent.items():
        in_order = [r.json()["commandId"] for r in results if r.key == user.encode()]
        assert in_order == command_ids, "each user's commands complete in order"
    assert read_topic(settings, settings.topic_dlq, expected=0, settle=0.5) == []


def test_no_personal_data_in_logs_topics_or_tables(
    settings: Settings, engine: Engine, worker: WorkerProcess, tmp_path: Path
) -> None:
    name, email, billing = "Zebulon Quixotic-Name", "zebulon.pii@leak.example", "Ada Billing"
    carried = add_payment_method("user-pii", billing_name=billing)
    carried["payload"]["customer"] = {"name": name, "email": email}
    payment = command(
        "InitiatePayment",
        "user-pii",
        {
            "paymentId": "pay-pii",
            "orderId": "o-pii",
            "amount": 100,
            "currency": "EUR",
            "gatewayToken": "tok_pii_0000001",
            "customer": {"name": name, "email": email},
        },
    )
    looked_up = add_payment_method("user-lookup", fingerprint="fp_lookup_0001")
    produce(
        settings,
        [
            (b"user-pii", encode(carried)),
            (b"user-pii", encode(payment)),
            (b"user-lookup", encode(looked_up)),
        ],
    )
    read_topic(settings, settings.topic_results, expected=3)

    # What the User Service stand-in answers for user-lookup (see sandbox/user_service_server.py).
    secrets = [name, email, "Profile Name user-lookup", "user-lookup@profiles.example"]
    published = b"".join(
        (r.value or b"") + b"".join(v for v in r.headers.values())
        for topic in (settings.topic_events, settings.topic_results, settings.topic_dlq)
        for r in read_topic(settings, topic, expected=0, settle=0.5)
    )
    worker.stop()
    log = worker.log()
    with engine.connect() as connection:
        tables = (
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = :s"),
                {"s": settings.database_schema},
            )
            .scalars()
            .all()
        )
        dump = "\n".join(
            str(row)
            for table in tables
            for row in connection.execute(text(f'SELECT * FROM "{table}"')).all()  # noqa: S608
        )
    for secret in secrets:
        assert secret.encode() not in published, secret
        assert secret not in log, secret
        assert secret not in dump, secret
    # The billing name is kept for display, in its column only.
    assert billing.encode() not in published
    assert billing not in log
    with engine.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM payment_methods WHERE billing_name = :b"), {"b": billing}
            ).scalar()
            == 1
        )
    assert dump.count(billing) == 1


def test_gateway_refusals_reject_a_new_card_and_do_not_block_removals(
    settings: Settings, worker: WorkerProcess, sandbox_gateway: SandboxGatewayServer
) -> None:
    user = "user-refused"
    first = add_payment_method(user, payment_method_id="pm-r1", fingerprint="fp_refused_01")
    produce(settings, [(user.encode(), encode(first))])
    read_topic(settings, settings.topic_results, expected=1)
    # The gateway loses the customer record (say, a sandbox restarted): it now answers 404.
    sandbox_gateway.gateway.customers.clear()

    second = add_payment_method(user, payment_method_id="pm-r2", fingerprint="fp_refused_02")
    remove = command("RemovePaymentMethod", user, {"paymentMethodId": "pm-r1"})
    produce(settings, [(user.encode(), encode(second)), (user.encode(), encode(remove))])
    results = read_topic(settings, settings.topic_results, expected=3)

    assert [(r.json()["status"], r.json()["reason"]) for r in results] == [
        ("accepted", "ok"),
        ("rejected", "gateway_refused"),
        ("accepted", "ok"),
    ], worker.log()
    assert worker.is_running()
