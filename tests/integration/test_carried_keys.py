"""A slow key is carried across batches; its neighbours are published once, crash or not.

The slow key's gateway call outlasts many batch deadlines. The commands after it in the
same partition are published meanwhile, with the partition's offset held at the slow
command and the published offsets committed in the offset's metadata. A worker killed
then, and its successor, must publish each of them exactly once
(docs/decisions/0009-batch-pipeline-on-confluent-kafka.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings
from sandbox.gateway_server import SandboxGatewayServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, read_topic

NEIGHBOURS = 20


def _carrying_customer(document: dict[str, Any]) -> dict[str, Any]:
    document["payload"]["customer"] = {"name": "Carried Person", "email": "carried@example.com"}
    return document


def _slow_payment() -> dict[str, Any]:
    # The sandbox answers a token with "slow" in it after 3 s, the first time.
    return _carrying_customer(
        command(
            "InitiatePayment",
            "user-slow",
            {
                "paymentId": "pay-slow",
                "orderId": "order-slow",
                "amount": 2500,
                "currency": "EUR",
                "gatewayToken": "tok_slow_00000001",
            },
        )
    )


def _produce_to_partition_0(settings: Settings, documents: list[dict[str, Any]]) -> None:
    producer = Producer({**librdkafka_config(settings), "enable.idempotence": "true"})
    for document in documents:
        producer.produce(
            settings.topic_commands,
            value=encode(document),
            key=str(document["userId"]).encode(),
            partition=0,
        )
    assert producer.flush(30) == 0


def test_a_slow_keys_neighbours_are_published_once_across_a_crash(
    settings: Settings, tmp_path: Path, sandbox_gateway: SandboxGatewayServer
) -> None:
    settings = settings.model_copy(
        update={
            "kafka_session_timeout_ms": 6000,
            # One attempt that waits for the slow answer: the key stays in flight ~3 s.
            "gateway": GatewaySettings(
                base_url=sandbox_gateway.url,
                allow_plain_http_on_loopback=True,
                timeout_seconds=10.0,
                total_budget_seconds=10.0,
            ),
        }
    )
    slow = _slow_payment()
    neighbours = [
        _carrying_customer(add_payment_method(f"user-n-{n:02d}", fingerprint=f"fp_nb_{n:04d}"))
        for n in range(NEIGHBOURS)
    ]
    behind_slow = command(
        "UpdatePaymentMethod",
        "user-slow",
        {"paymentMethodId": "pm-unknown", "billingName": "X", "source": "user"},
    )
    documents = [slow, *neighbours, behind_slow]
    _produce_to_partition_0(settings, documents)

    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    seen = read_topic(settings, settings.topic_results, expected=NEIGHBOURS, timeout=60)
    first.kill()
    seen_ids = {r.json()["commandId"] for r in seen}
    # Precondition of what follows: the neighbours went out while the slow key waited.
    assert seen_ids == {n["commandId"] for n in neighbours}, first.log()[-3000:]

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        results = read_topic(
            settings, settings.topic_results, expected=len(documents), timeout=120, settle=3
        )
        events = read_topic(settings, settings.topic_events, expected=2 * NEIGHBOURS + 2, settle=1)
    finally:
        second.stop()

    per_command = Counter(r.json()["commandId"] for r in results)
    assert set(per_command) == {d["commandId"] for d in documents}
    assert max(per_command.values()) == 1, "a carried batch's neighbour was published twice"
    assert max(Counter(e.json()["eventId"] for e in events).values()) == 1
    # The slow key's commands came out in their order, after the wait.
    slow_key = [r.json()["commandId"] for r in sorted(results, key=lambda r: r.offset)]
    assert slow_key.index(slow["commandId"]) < slow_key.index(behind_slow["commandId"])
    outcome = {r.json()["commandId"]: r.json()["status"] for r in results}
    assert outcome[slow["commandId"]] == "accepted"
    assert outcome[behind_slow["commandId"]] == "rejected"
    # Both workers called the gateway for the slow payment, under one idempotency key.
    assert sandbox_gateway.gateway.stats()["authorizations"] == 1
