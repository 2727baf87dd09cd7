"""What the command processor needs from its store, held against both stores.

The unit tests of the processor run on ``tests.support.fakes.MemoryStore``; the worker runs
on ``state.command_store.CommandStore``. The same tests run here against each, through
the processor (the store's one user), so that the fake cannot drift from the real store
on anything the processor relies on. The real store stages decisions until ``flush``
(one PostgreSQL transaction per batch); the memory store applies them at once, and its
``flush`` does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import count
from typing import Any, Protocol
from uuid import UUID

import pytest
from sqlalchemy import Engine

from domain.completion import Completion
from domain.streams import user_stream
from pipelines.command_processor import CommandProcessor, DecisionStore
from pipelines.records import IncomingMessage, OutgoingRecord
from state.command_store import CommandStore
from tests.factories import ISSUED_AT, add_payment_method, command, encode
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore


class ContractStore(DecisionStore, Protocol):
    def flush(self) -> int: ...


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[ContractStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    engine: Engine = request.getfixturevalue("engine")
    yield CommandStore(engine)


class Run:
    """Messages through one processor on ``store``, each batch written before the next."""

    def __init__(self, store: ContractStore) -> None:
        self.store = store
        self.gateway = MemoryGateway()
        self.processor = CommandProcessor(
            store,
            Completion(self.gateway, FixedProfiles()),
            clock=lambda: ISSUED_AT,
            consumer_group="contract",
            worker_version="test",
        )
        self._offsets = count()

    def message(self, document: dict[str, Any]) -> IncomingMessage:
        key = document["userId"] or document["payload"]["paymentId"]
        return IncomingMessage(
            "payment.commands", 0, next(self._offsets), key.encode(), encode(document), []
        )

    def send(self, message: IncomingMessage) -> dict[str, Any]:
        """The result of one message, its batch written."""
        records = self.processor.process(message)
        self.store.flush()
        return _result(records)

    def decide(self, document: dict[str, Any]) -> dict[str, Any]:
        return self.send(self.message(document))


def _result(records: list[OutgoingRecord]) -> dict[str, Any]:
    (value,) = [r.value for r in records if r.destination == "results"]
    assert value is not None
    return dict(json.loads(value))


def _outcome(result: dict[str, Any]) -> tuple[str, str]:
    return result["status"], result["reason"]


def _pay(payment_id: str, user_id: str | None, **instrument: str) -> dict[str, Any]:
    payload = {
        "paymentId": payment_id,
        "orderId": "order-1",
        "amount": 1999,
        "currency": "EUR",
        **instrument,
    }
    return command("InitiatePayment", user_id, payload)


def test_a_written_decision_is_what_the_next_command_of_the_key_reads(
    store: ContractStore,
) -> None:
    run = Run(store)
    first = run.decide(add_payment_method("user-c1", payment_method_id="pm-c1"))
    assert _outcome(first) == ("accepted", "ok")
    # The same card again: the store gave the saved method back.
    again = run.decide(add_payment_method("user-c1", payment_method_id="pm-c2"))
    assert _outcome(again) == ("rejected", "duplicate_payment_method")
    # The next method of the key continues its sequence and is not the default.
    other = add_payment_method("user-c1", payment_method_id="pm-c3", fingerprint="fp_c1_other")
    assert _outcome(run.decide(other)) == ("accepted", "ok")
    state = store.key_state(user_stream("user-c1"), (), ())
    assert state.last_sequence == 3  # Added + DefaultChanged, then Added
    assert [m.payment_method_id for m in state.methods if m.is_default] == ["pm-c1"]


def test_a_payment_stored_under_one_key_is_taken_for_every_other_key(
    store: ContractStore,
) -> None:
    run = Run(store)
    assert _outcome(run.decide(_pay("pay-c1", None, gatewayToken="tok_guest_c1"))) == (
        "accepted",
        "ok",
    )
    taken = run.decide(_pay("pay-c1", "user-c2", gatewayToken="tok_user_c2"))
    assert _outcome(taken) == ("rejected", "payment_id_taken")


def test_a_payment_method_id_of_another_user_is_taken(store: ContractStore) -> None:
    run = Run(store)
    run.decide(add_payment_method("user-c3", payment_method_id="pm-shared"))
    theirs = add_payment_method(
        "user-c4", payment_method_id="pm-shared", fingerprint="fp_c4_000001"
    )
    assert _outcome(run.decide(theirs)) == ("rejected", "payment_method_id_taken")


def test_a_redelivered_command_gets_its_stored_outcome(store: ContractStore) -> None:
    run = Run(store)
    message = run.message(add_payment_method("user-c5", payment_method_id="pm-c5"))
    first = run.send(message)
    assert run.send(message) == first
    command_id = UUID(first["commandId"])
    stored = store.stored_outcome(command_id)
    assert stored is not None
    assert json.loads(stored.result_value) == first
    assert store.stored_outcome(UUID(int=7)) is None


def test_the_gateway_customer_follows_the_cards_and_the_erasure(store: ContractStore) -> None:
    run = Run(store)
    card = add_payment_method("user-c6", payment_method_id="pm-c6")
    card["payload"]["customer"] = {"name": "Card Holder", "email": "holder@example.com"}
    run.decide(card)
    customer = store.key_state(user_stream("user-c6"), (), ()).gateway_customer_id
    assert customer is not None
    assert _outcome(run.decide(command("EraseUserData", "user-c6", {}))) == ("accepted", "ok")
    state = store.key_state(user_stream("user-c6"), (), ())
    assert state.gateway_customer_id is None
    assert state.active_methods == ()
