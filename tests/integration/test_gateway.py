"""Payments authorized through the sandbox gateway over real HTTP, idempotently."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from clients.gateway import HttpGateway
from clients.http import ResilientHttp, build_http_client
from config.settings import GatewaySettings, Settings
from domain.model import AuthorizationAnswer
from sandbox.gateway_server import SLOW_ANSWER_SECONDS, SandboxGatewayServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, produce, read_topic


def _pay(payment_id: str, user_id: str | None, **instrument: str) -> dict[str, Any]:
    payload = {
        "paymentId": payment_id,
        "orderId": f"order-{payment_id}",
        "amount": 4200,
        "currency": "EUR",
        **instrument,
    }
    return command("InitiatePayment", user_id, payload)


def test_payments_are_authorized_or_declined_by_the_gateway(
    settings: Settings, engine: Engine, worker: WorkerProcess, sandbox_gateway: SandboxGatewayServer
) -> None:
    saved = add_payment_method("user-gw", payment_method_id="pm-gw", fingerprint="fp_gw_000001")
    produce(
        settings,
        [
            (b"user-gw", encode(saved)),
            (b"user-gw", encode(_pay("pay-ok", "user-gw", paymentMethodId="pm-gw"))),
            (b"pay-no", encode(_pay("pay-no", None, gatewayToken="tok_decline_0001"))),
        ],
    )

    events = read_topic(settings, settings.topic_events, expected=6)

    by_payment = {
        e.json()["payload"]["paymentId"]: e.json()["type"]
        for e in events
        if e.json()["type"] in ("PaymentAuthorized", "PaymentDeclined")
    }
    assert by_payment == {"pay-ok": "PaymentAuthorized", "pay-no": "PaymentDeclined"}, worker.log()
    declined = next(e.json() for e in events if e.json()["type"] == "PaymentDeclined")
    assert declined["payload"]["declineCode"] == "insufficient_funds"
    assert [e.json()["sequence"] for e in events if e.key == b"pay-no"] == [1, 2]
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT payment_id, status FROM payments")).all()
    statuses = {row.payment_id: row.status for row in rows}
    assert statuses == {"pay-ok": "authorized", "pay-no": "declined"}
    assert sandbox_gateway.gateway.stats()["authorizations"] == 2


def test_a_replayed_batch_authorizes_each_payment_once(
    settings: Settings, engine: Engine, tmp_path: Path, sandbox_gateway: SandboxGatewayServer
) -> None:
    settings = settings.model_copy(update={"kafka_session_timeout_ms": 6000})
    payments = [_pay(f"pay-r{n:03d}", None, gatewayToken=f"tok_guest_{n:06d}") for n in range(240)]
    cards = [add_payment_method(f"user-r{n:03d}", fingerprint=f"fp_r_{n:06d}") for n in range(60)]
    produce(
        settings,
        [(p["payload"]["paymentId"].encode(), encode(p)) for p in payments]
        + [(c["userId"].encode(), encode(c)) for c in cards],
    )

    # The first worker authorizes some payments and is killed before it commits them all.
    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    deadline = time.monotonic() + 60
    while sandbox_gateway.gateway.stats()["authorizations"] < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    first.kill()

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        events = read_topic(settings, settings.topic_events, expected=600, timeout=120)
    finally:
        second.stop()

    authorized = [e for e in events if e.json()["type"] == "PaymentAuthorized"]
    assert len(authorized) == 240, second.log()[-2000:]
    assert len({e.json()["eventId"] for e in events}) == len(events) == 600
    stats = sandbox_gateway.gateway.stats()
    # One authorization per payment and one customer per user at the gateway, however
    # many calls the replay repeated.
    assert stats["authorizations"] == 240
    assert stats["customers"] == 60
    assert stats["attachedTokens"] == 60
    with engine.connect() as connection:
        authorized_rows = connection.execute(
            text("SELECT count(*) FROM payments WHERE status = 'authorized'")
        ).scalar()
        customers = connection.execute(text("SELECT count(*) FROM gateway_customers")).scalar()
    assert (authorized_rows, customers) == (240, 60)
    # Record for record, the gateway's and Postgres' views are the same after the crash.
    records = sandbox_gateway.gateway.records()
    with engine.connect() as connection:
        customer_rows = connection.execute(
            text("SELECT user_id, customer_id FROM gateway_customers")
        )
        stored: dict[str, str] = {row.user_id: row.customer_id for row in customer_rows}
        payment_rows = connection.execute(text("SELECT payment_id, status FROM payments"))
        statuses: dict[str, str] = {row.payment_id: row.status for row in payment_rows}
    authorization_ids = {e.json()["payload"]["authorizationId"] for e in authorized}
    assert {a["id"] for a in records["authorizations"] if a["status"] == "approved"} == (
        authorization_ids
    )
    assert {a["reference"] for a in records["authorizations"]} == set(statuses)
    assert {c["reference"]: c["id"] for c in records["customers"]} == stored
    assert all(c["hasProfile"] and len(c["tokens"]) == 1 for c in records["customers"])


def test_a_gateway_outage_delays_payments_and_loses_none(
    settings: Settings, engine: Engine, worker: WorkerProcess, sandbox_gateway: SandboxGatewayServer
) -> None:
    sandbox_gateway.gateway.available = False
    payments = [_pay(f"pay-o{n:02d}", None, gatewayToken=f"tok_outage_{n:06d}") for n in range(20)]
    produce(settings, [(p["payload"]["paymentId"].encode(), encode(p)) for p in payments])
    time.sleep(6)
    assert read_topic(settings, settings.topic_events, expected=0, settle=0.5) == []
    assert worker.is_running()
    assert "a dependency is unavailable" in worker.log()

    sandbox_gateway.gateway.available = True
    events = read_topic(settings, settings.topic_events, expected=40, timeout=90)

    assert (
        sorted(e.json()["type"] for e in events)
        == ["PaymentAuthorized"] * 20 + ["PaymentInitiated"] * 20
    )
    assert read_topic(settings, settings.topic_dlq, expected=0, settle=0.5) == []
    results = read_topic(settings, settings.topic_results, expected=20)
    assert {r.json()["status"] for r in results} == {"accepted"}
    assert len(results) == 20


def test_a_timed_out_call_is_retried_with_its_key_and_charges_once(
    settings: Settings, worker: WorkerProcess, sandbox_gateway: SandboxGatewayServer
) -> None:
    produce(
        settings, [(b"pay-slow", encode(_pay("pay-slow", None, gatewayToken="tok_slow_000001")))]
    )

    events = read_topic(settings, settings.topic_events, expected=2, timeout=60)

    assert [e.json()["type"] for e in events] == ["PaymentInitiated", "PaymentAuthorized"]
    stats = sandbox_gateway.gateway.stats()
    assert stats["authorizations"] == 1
    assert stats["replays"] >= 1, "the retry got the stored answer"


def test_calls_from_a_thread_pool_are_at_the_gateway_together(
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    """Each ``slow`` token is answered after SLOW_ANSWER_SECONDS (3 s): one after the other,
    40 authorizations would take two minutes."""
    calls = 40
    service = GatewaySettings(
        base_url=sandbox_gateway.url,
        allow_plain_http_on_loopback=True,
        timeout_seconds=SLOW_ANSWER_SECONDS * 3,
        total_budget_seconds=SLOW_ANSWER_SECONDS * 4,
        retries=0,
    )
    gateway = HttpGateway(
        ResilientHttp(build_http_client(service, max_connections=calls), service, name="gateway")
    )

    def authorize(n: int) -> AuthorizationAnswer:
        return gateway.authorize(
            payment_id=f"pay-t{n:03d}",
            amount=4200,
            currency="EUR",
            gateway_token=f"tok_slow_{n:06d}",
            idempotency_key=f"key-thread-{n:03d}",
        )

    began = time.monotonic()
    with ThreadPoolExecutor(calls) as pool:
        answers = list(pool.map(authorize, range(calls)))
    elapsed = time.monotonic() - began

    assert all(answer.approved for answer in answers)
    assert len({answer.authorization_id for answer in answers}) == calls
    assert sandbox_gateway.gateway.stats()["authorizations"] == calls
    assert elapsed < calls * SLOW_ANSWER_SECONDS / 4


def _direct_gateway(server: SandboxGatewayServer, *, connections: int) -> HttpGateway:
    """The gateway client as the worker builds it, without the worker around it."""
    service = GatewaySettings(base_url=server.url, allow_plain_http_on_loopback=True, retries=0)
    client = build_http_client(service, max_connections=connections)
    return HttpGateway(ResilientHttp(client, service, name="gateway"))


def test_calls_one_after_another_keep_one_connection_alive(
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    gateway = _direct_gateway(sandbox_gateway, connections=8)
    for n in range(20):
        customer = gateway.create_customer(
            reference=f"user-alive-{n:03d}", idempotency_key=f"key-alive-{n:03d}"
        )
        assert customer.startswith("cus_")
    assert sandbox_gateway.counters.requests == 20
    assert sandbox_gateway.counters.max_connections == 1


def test_a_repeated_call_sends_the_same_body_and_gets_the_first_answer(
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    """The sandbox refuses (422) a repeated idempotency key with another body."""
    gateway = _direct_gateway(sandbox_gateway, connections=1)

    def authorize() -> AuthorizationAnswer:
        return gateway.authorize(
            payment_id="pay-again",
            amount=4200,
            currency="EUR",
            gateway_token="tok_ünïcode_000001",
            idempotency_key="key-again",
            email="ada@example.test",
        )

    first, second = authorize(), authorize()
    assert first.approved
    assert second == first
    stats = sandbox_gateway.gateway.stats()
    assert (stats["authorizations"], stats["replays"]) == (1, 1)
