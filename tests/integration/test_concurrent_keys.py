"""Per-key order under concurrency: gateway calls of random length, and one very slow key.

A real worker, broker and PostgreSQL; the sandbox gateway answers each token after the
time the token names (``tok_wait<ms>_...``). Many keys' calls overlap, each key's events
must still come in its commands' order, and no key may wait for an unrelated slow one.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from config.settings import GatewaySettings, Settings
from sandbox.gateway_server import SandboxGatewayServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, produce, read_topic

USERS = 40
SLOW_MS = 8000


def _token(wait_ms: int, name: str) -> str:
    return f"tok_wait{wait_ms:05d}ms_{name}"


def _with_customer(document: dict[str, Any]) -> dict[str, Any]:
    document["payload"]["customer"] = {"name": "Some Person", "email": "some@example.com"}
    return document


def _commands_of(user: str, rng: random.Random, wait_ms: int | None = None) -> list[dict[str, Any]]:
    def wait() -> int:
        return wait_ms if wait_ms is not None else rng.randrange(0, 400)

    card = _with_customer(
        add_payment_method(user, fingerprint=f"fp_{user}", payment_method_id=f"pm-{user}")
    )
    card["payload"]["gatewayToken"] = _token(wait(), user)
    payments = [
        _with_customer(
            command(
                "InitiatePayment",
                user,
                {
                    "paymentId": f"pay-{user}-{n}",
                    "orderId": f"order-{user}-{n}",
                    "amount": 100 + n,
                    "currency": "EUR",
                    "gatewayToken": _token(wait(), f"{user}_{n}"),
                },
            )
        )
        for n in range(2)
    ]
    update = command(
        "UpdatePaymentMethod",
        user,
        {"paymentMethodId": f"pm-{user}", "billingName": "New Name", "source": "user"},
    )
    return [card, *payments, update]


def test_each_keys_events_keep_their_order_while_calls_overlap(
    settings: Settings, tmp_path: Path, sandbox_gateway: SandboxGatewayServer
) -> None:
    settings = settings.model_copy(
        update={
            "gateway": GatewaySettings(
                base_url=sandbox_gateway.url,
                allow_plain_http_on_loopback=True,
                timeout_seconds=15.0,
                total_budget_seconds=15.0,
            )
        }
    )
    rng = random.Random(12)  # noqa: S311 - test data
    sent: dict[str, list[dict[str, Any]]] = {
        f"user-c{n:02d}": _commands_of(f"user-c{n:02d}", rng) for n in range(USERS)
    }
    sent["user-slow"] = _commands_of("user-slow", rng, wait_ms=SLOW_MS)
    # Interleaved, as producers would send them: the slow key's first command comes first.
    messages = [
        (user.encode(), encode(documents[i]))
        for i in range(4)
        for user, documents in sorted(sent.items(), key=lambda item: item[0] != "user-slow")
    ]
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        produce(settings, messages)
        results = read_topic(
            settings, settings.topic_results, expected=len(messages), timeout=120, settle=1
        )
        events = read_topic(settings, settings.topic_events, expected=(USERS + 1) * 7, settle=1)
    finally:
        worker.stop()

    assert {r.json()["status"] for r in results} == {"accepted"}
    # Each key's results and events come in the order of its commands, events gap-free.
    by_user: dict[str, list[str]] = defaultdict(list)
    for result in results:
        by_user[(result.key or b"").decode()].append(result.json()["commandId"])
    assert by_user == {user: [d["commandId"] for d in docs] for user, docs in sent.items()}
    sequences: dict[str, list[int]] = defaultdict(list)
    event_commands: dict[str, list[str]] = defaultdict(list)
    for event in events:
        body = event.json()
        sequences[body["userId"]].append(body["sequence"])
        decided = event_commands[body["userId"]]
        if not decided or decided[-1] != body["commandId"]:
            decided.append(body["commandId"])
    assert all(seq == list(range(1, len(seq) + 1)) for seq in sequences.values())
    assert event_commands == {user: [d["commandId"] for d in docs] for user, docs in sent.items()}
    # No key waited for the slow one: every other key was done before its first answer.
    slow_first = next(i for i, r in enumerate(results) if r.key == b"user-slow")
    assert slow_first >= len(messages) - 4, "another key's result came after the slow key's"
    # One authorization per payment, whatever the overlap.
    assert sandbox_gateway.gateway.stats()["authorizations"] == 2 * (USERS + 1)
