"""Payments authorized through the sandbox gateway over real HTTP, idempotently."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from config.settings import Settings
from sandbox.gateway_server import SandboxGatewayServer
from tests.factories import add_payment_method, command, encode
from tests.integration.stack import WorkerProcess, produce, read_topic


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
    payments = [_pay(f"pay-r{n:03d}", None, gatewayToken=f"tok_guest_{n:06d}") for n in range(300)]
    produce(settings, [(p["payload"]["paymentId"].encode(), encode(p)) for p in payments])

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
    assert len(authorized) == 300, second.log()[-2000:]
    assert len({e.json()["eventId"] for e in events}) == len(events) == 600
    stats = sandbox_gateway.gateway.stats()
    # One authorization per payment at the gateway, however many calls were repeated.
    assert stats["authorizations"] == 300
    with engine.connect() as connection:
        assert (
            connection.execute(
                text("SELECT count(*) FROM payments WHERE status = 'authorized'")
            ).scalar()
            == 300
        )


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
