"""Which authorizations the processor cancels at the gateway: those it does not keep, only."""

from __future__ import annotations

import json
from uuid import UUID

from domain.completion import Completion
from domain.ports import idempotency_key
from pipelines.command_processor import CommandProcessor
from pipelines.records import IncomingMessage
from state.command_store import ProcessedCommand
from tests.factories import ISSUED_AT, command
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore


class StaleReadStore(MemoryStore):
    """A store whose per-key read of the inbox misses what another worker stored since
    (the real store reads it ahead, before the payments): only ``stored_outcome`` sees it."""

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None:
        return None


def _payment_message(payment_id: str, token: str, offset: int) -> IncomingMessage:
    document = command(
        "InitiatePayment",
        None,
        {
            "paymentId": payment_id,
            "orderId": "order-1",
            "amount": 1999,
            "currency": "EUR",
            "gatewayToken": token,
        },
    )
    return IncomingMessage(
        topic="payment.commands",
        partition=0,
        offset=offset,
        key=payment_id.encode(),
        value=json.dumps(document).encode(),
        headers=[],
    )


def _processor(store: MemoryStore, gateway: MemoryGateway) -> CommandProcessor:
    return CommandProcessor(
        store,
        Completion(gateway, FixedProfiles()),
        clock=lambda: ISSUED_AT,
        consumer_group="g",
        worker_version="test",
    )


def _command_id(message: IncomingMessage) -> UUID:
    return UUID(json.loads(message.value or b"")["commandId"])


def test_a_command_stored_meanwhile_by_another_worker_is_not_cancelled() -> None:
    store, gateway = StaleReadStore(), MemoryGateway()
    message = _payment_message("pay-1", "tok_guest_1", offset=7)
    first = _processor(store, gateway).process(message)

    # The same message, decided again by a worker that read the inbox before the first
    # worker's write and the payment after it: the payment id looks taken.
    again = _processor(store, gateway).process(message)

    assert again == first  # the stored outcome, not payment_id_taken
    cancel = idempotency_key(_command_id(message), "cancel-authorization")
    assert cancel not in gateway.answers  # the kept authorization was not voided


def test_another_command_for_a_taken_payment_id_cancels_its_own_authorization() -> None:
    store, gateway = StaleReadStore(), MemoryGateway()
    _processor(store, gateway).process(_payment_message("pay-1", "tok_guest_1", offset=1))
    loser = _payment_message("pay-1", "tok_guest_2", offset=2)
    # The loser authorized on an earlier try, before the winner stored the payment id.
    early = gateway.authorize(idempotency_key=idempotency_key(_command_id(loser), "authorize"))
    assert early.approved

    records = _processor(store, gateway).process(loser)

    (result,) = [r.value for r in records if r.destination == "results"]
    assert result is not None
    assert json.loads(result)["reason"] == "payment_id_taken"
    assert idempotency_key(_command_id(loser), "cancel-authorization") in gateway.answers
