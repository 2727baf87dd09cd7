"""Per-key order with gateway calls concurrent across keys, deadlines, holds and claims.

The scheduler runs the real processor over the in-memory store; the gateway is a stand-in
whose calls block until the test lets them answer, so every interleaving is chosen here.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

from domain.completion import Completion
from domain.errors import TransientError
from domain.model import AuthorizationAnswer
from pipelines.command_processor import Admitted, CommandProcessor
from pipelines.key_scheduler import KeyScheduler
from pipelines.records import IncomingMessage, OutgoingRecord
from tests.factories import ISSUED_AT, add_payment_method, command, encode
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore

NOW = ISSUED_AT + timedelta(minutes=1)


class GatedGateway(MemoryGateway):
    """Authorizations of a token wait for its gate; some tokens fail transiently first."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, threading.Event] = {}
        self.failures: dict[str, int] = {}
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.authorized: list[str] = []

    def authorize(self, *, idempotency_key: str, **call: Any) -> AuthorizationAnswer:
        token = str(call["gateway_token"])
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            gate = self.gates.get(token)
            if gate is not None:
                assert gate.wait(10), "the test never opened this gate"
            with self.lock:
                if self.failures.get(token, 0) > 0:
                    self.failures[token] -= 1
                    raise TransientError("gateway unavailable: http_503")
                self.authorized.append(str(call["payment_id"]))
            return super().authorize(idempotency_key=idempotency_key, **call)
        finally:
            with self.lock:
                self.running -= 1


def _payment(user: str, payment_id: str, token: str) -> dict[str, Any]:
    return command(
        "InitiatePayment",
        user,
        {
            "paymentId": payment_id,
            "orderId": "order-" + payment_id,
            "amount": 1000,
            "currency": "EUR",
            "gatewayToken": token,
            "customer": {"name": "A Person", "email": "a.person@example.com"},
        },
    )


class Harness:
    def __init__(self, gateway: GatedGateway, max_in_flight: int = 64) -> None:
        self.gateway = gateway
        self.store = MemoryStore()
        self.processor = CommandProcessor(
            self.store,
            Completion(gateway, FixedProfiles()),
            clock=lambda: NOW,
            consumer_group="g",
            worker_version="test",
        )
        self.scheduler = KeyScheduler(self.processor, max_in_flight=max_in_flight)
        self.finished: list[tuple[int, list[OutgoingRecord]]] = []
        self.offset = 0

    def add(self, document: dict[str, Any]) -> None:
        message = IncomingMessage(
            "payment.commands", 0, self.offset, document["userId"].encode(), encode(document), []
        )
        self.offset += 1
        admitted = self.processor.admit(message)
        assert isinstance(admitted, Admitted)
        self.scheduler.add(admitted)

    def run(self, seconds: float = 5.0) -> None:
        self.scheduler.run(time.monotonic() + seconds, self._finished)

    def _finished(self, message: IncomingMessage, records: list[OutgoingRecord]) -> None:
        self.finished.append((message.offset, records))

    def results(self) -> dict[int, dict[str, Any]]:
        return {
            offset: json.loads(record.value or b"{}")
            for offset, records in self.finished
            for record in records
            if record.destination == "results"
        }


def test_a_slow_key_is_carried_while_other_keys_finish_and_resumes_in_order() -> None:
    gateway = GatedGateway()
    gateway.gates["tok_slow"] = threading.Event()
    harness = Harness(gateway)
    harness.add(_payment("user-slow", "pay-1", "tok_slow"))  # offset 0
    harness.add(_payment("user-fast", "pay-2", "tok_fast"))  # offset 1
    harness.add(_payment("user-slow", "pay-3", "tok_other"))  # offset 2: behind offset 0
    harness.add(_payment("user-fast", "pay-4", "tok_fast"))  # offset 3

    harness.run(seconds=0.3)

    assert [offset for offset, _ in harness.finished] == [1, 3]
    assert harness.scheduler.carried == 2
    assert "pay-3" not in gateway.authorized  # never ahead of the command before it

    gateway.gates["tok_slow"].set()
    harness.run()

    assert [offset for offset, _ in harness.finished] == [1, 3, 0, 2]
    assert harness.scheduler.idle
    assert all(result["status"] == "accepted" for result in harness.results().values())
    sequences = [
        json.loads(record.value or b"")["sequence"]
        for offset, records in harness.finished
        if offset in (0, 2)
        for record in records
        if record.destination == "events"
    ]
    assert sequences == sorted(sequences) == list(range(1, len(sequences) + 1))


def test_gateway_calls_of_different_keys_run_at_once_within_the_bound() -> None:
    gateway = GatedGateway()
    gate = threading.Event()
    for index in range(40):
        gateway.gates[f"tok_parallel_{index:04d}"] = gate
    harness = Harness(gateway, max_in_flight=16)
    for index in range(40):
        harness.add(_payment(f"user-{index}", f"pay-{index}", f"tok_parallel_{index:04d}"))
    threading.Timer(0.3, gate.set).start()

    harness.run()

    assert len(harness.finished) == 40
    # All 16 slots were used at once, and never more.
    assert gateway.most_running == 16


def test_a_transient_failure_holds_only_its_key_and_is_retried_with_the_same_key() -> None:
    gateway = GatedGateway()
    gateway.failures["tok_unreachable"] = 2
    harness = Harness(gateway)
    harness.add(_payment("user-a", "pay-a", "tok_unreachable"))
    harness.add(_payment("user-b", "pay-b", "tok_available"))

    harness.run(seconds=0.2)
    assert [offset for offset, _ in harness.finished] == [1]

    harness.run(seconds=10)
    assert [offset for offset, _ in harness.finished] == [1, 0]
    results = harness.results()
    assert results[0]["status"] == "accepted"
    assert not [r for _, rs in harness.finished for r in rs if r.destination == "dlq"]
    # Three attempts of one authorization, one answer kept for its idempotency key.
    assert gateway.authorized.count("pay-a") == 1
    assert len([k for k in gateway.answers if k]) == 2


def test_a_command_naming_an_id_another_key_is_still_deciding_waits_for_it() -> None:
    gateway = GatedGateway()
    gateway.gates["tok_first"] = threading.Event()
    harness = Harness(gateway)
    harness.add(_payment("user-a", "pay-shared", "tok_first"))
    harness.add(_payment("user-b", "pay-shared", "tok_second"))
    harness.add(add_payment_method("user-c"))

    harness.run(seconds=0.3)
    # user-c is independent; user-b waits for user-a's outcome on the same payment id.
    assert [offset for offset, _ in harness.finished] == [2]

    gateway.gates["tok_first"].set()
    harness.run()

    results = harness.results()
    assert results[0]["status"] == "accepted"
    assert results[1]["status"] == "rejected"
    assert results[1]["reason"] == "payment_id_taken"
    assert gateway.authorized == ["pay-shared"]


def test_a_dropped_key_ignores_its_late_answer() -> None:
    gateway = GatedGateway()
    gateway.gates["tok_slow"] = threading.Event()
    harness = Harness(gateway)
    harness.add(_payment("user-a", "pay-1", "tok_slow"))
    harness.run(seconds=0.1)

    harness.scheduler.drop(lambda message: message.partition == 0)
    gateway.gates["tok_slow"].set()
    harness.run(seconds=0.3)

    assert harness.finished == []
    assert harness.store.commands == {}
    assert harness.scheduler.idle


def test_a_dead_letter_waits_behind_the_commands_of_its_key() -> None:
    gateway = GatedGateway()
    gateway.gates["tok_slow"] = threading.Event()
    harness = Harness(gateway)
    harness.add(_payment("user-a", "pay-1", "tok_slow"))  # offset 0
    poison = IncomingMessage("payment.commands", 0, 1, b"user-a", b"not json", [])
    rejected = harness.processor.admit(poison)
    assert not isinstance(rejected, Admitted)
    assert harness.scheduler.add_ready(poison, rejected)
    other = IncomingMessage("payment.commands", 0, 2, b"user-b", b"not json", [])
    # No command of user-b waits: its dead letter needs no queue.
    assert not harness.scheduler.add_ready(other, [])

    harness.run(seconds=0.2)
    assert harness.finished == []

    gateway.gates["tok_slow"].set()
    harness.run()
    assert [offset for offset, _ in harness.finished] == [0, 1]
    assert harness.results()[1]["status"] == "invalid"
