"""A message that fails deterministically is dead-lettered; a transient failure waits.

The split is by error class (psycopg's SQLSTATE, SQLAlchemy's exception classes), never
by message text; see ``state.errors``.
"""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.exc import DataError, IntegrityError, InternalError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain.completion import Completion
from domain.errors import TransientError
from pipelines.command_processor import CommandProcessor
from pipelines.records import IncomingMessage, OutgoingRecord
from schemas.errors import InvalidMessage, InvalidReason
from state.errors import database_errors, error_kind
from telemetry import metrics
from tests.factories import ISSUED_AT, add_payment_method, command, encode
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore

NOW = ISSUED_AT + timedelta(minutes=1)


def _message(value: bytes, key: bytes | None = b"user-123", offset: int = 0) -> IncomingMessage:
    return IncomingMessage("payment.commands", 0, offset, key, value, [])


def _processor(store: Any, gateway: Any = None) -> CommandProcessor:
    return CommandProcessor(
        store,
        Completion(gateway or MemoryGateway(), FixedProfiles()),
        clock=lambda: NOW,
        consumer_group="g",
        worker_version="test",
    )


def _dead_letter(records: list[OutgoingRecord]) -> OutgoingRecord:
    (record,) = [r for r in records if r.destination == "dlq"]
    return record


class _FailingStore(MemoryStore):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def record(self, *args: Any) -> None:
        raise self.error


class _BrokenGateway(MemoryGateway):
    def attach_payment_method(self, *, idempotency_key: str, **_: object) -> None:
        raise KeyError("a bug in a client")


def test_a_value_postgres_refuses_is_dead_lettered_as_processing_failed() -> None:
    refused = InvalidMessage(InvalidReason.PROCESSING_FAILED, "PostgreSQL cannot store (22P05)")
    records = _processor(_FailingStore(refused)).process(_message(encode(add_payment_method())))

    dead = _dead_letter(records)
    assert dict(dead.headers)["dlq.reason"] == b"processing_failed"
    (result,) = [json.loads(r.value or b"") for r in records if r.destination == "results"]
    assert (result["status"], result["reason"]) == ("invalid", "processing_failed")


def test_an_unexpected_error_in_a_client_is_dead_lettered_not_raised() -> None:
    store = MemoryStore()
    records = _processor(store, _BrokenGateway()).process(_message(encode(add_payment_method())))

    assert dict(_dead_letter(records).headers)["dlq.error"] == b"unexpected KeyError"
    assert store.commands == {}


def test_a_failed_command_with_personal_data_is_withheld_from_the_dead_letters() -> None:
    refused = InvalidMessage(InvalidReason.PROCESSING_FAILED, "refused")
    value = encode(add_payment_method(billing_name="Ada Lovelace"))
    dead = _dead_letter(_processor(_FailingStore(refused)).process(_message(value)))

    assert dead.value is None
    assert dict(dead.headers)["dlq.body.withheld"] == b"true"


def test_a_transient_failure_is_raised_to_wait_and_retry_never_dead_lettered() -> None:
    processor = _processor(_FailingStore(TransientError("database unavailable")))
    with pytest.raises(TransientError):
        processor.process(_message(encode(add_payment_method())))


@pytest.mark.parametrize(
    "guest",
    [
        command("RemovePaymentMethod", None, {"paymentMethodId": "pm-1"}),
        command("EraseUserData", None),
        command("SetDefaultPaymentMethod", None, {"paymentMethodId": "pm-1"}),
        command("UpdatePaymentMethod", None, {"paymentMethodId": "pm-1", "expYear": 2031}),
        command("LinkGuestPayments", None, {"paymentIds": ["pay-1"]}),
        add_payment_method(None),
    ],
)
def test_a_guest_command_without_guest_meaning_is_refused_without_the_store(
    guest: dict[str, Any],
) -> None:
    untouchable = _FailingStore(AssertionError("the store was touched"))
    records = _processor(untouchable).process(_message(encode(guest), key=b"guest-key"))

    (result,) = records
    assert result.destination == "results"
    assert json.loads(result.value or b"")["status"] == "rejected"


def test_an_unknown_type_is_neither_echoed_nor_a_new_metric_label() -> None:
    processor = _processor(MemoryStore())
    for n in range(20):
        document = add_payment_method()
        document["type"] = f"Attack{n}"
        records = processor.process(_message(encode(document)))
        (result,) = [json.loads(r.value or b"") for r in records if r.destination == "results"]
        assert result["type"] is None
    labels = {
        sample.labels["type"]
        for family in metrics.COMMANDS.collect()
        for sample in family.samples
        if "type" in sample.labels
    }
    assert not any(label.startswith("Attack") for label in labels)


def test_a_command_issued_beyond_the_clock_skew_is_invalid() -> None:
    future = NOW + timedelta(minutes=10)
    document = add_payment_method(issued_at=future.astimezone(UTC))
    dead = _dead_letter(_processor(MemoryStore()).process(_message(encode(document))))
    assert dict(dead.headers)["dlq.reason"] == b"issued_in_future"

    near = add_payment_method(issued_at=NOW + timedelta(minutes=4))
    accepted = _processor(MemoryStore()).process(_message(encode(near)))
    assert not [r for r in accepted if r.destination == "dlq"]


# --- the split by error class ----------------------------------------------------------


def _wrapped(kind: type[Any], orig: Exception) -> Any:
    return kind("INSERT ...", {}, orig)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_wrapped(IntegrityError, psycopg.errors.UniqueViolation()), "conflict"),
        (_wrapped(IntegrityError, psycopg.errors.ExclusionViolation()), "conflict"),
        (_wrapped(IntegrityError, psycopg.errors.CheckViolation()), "unstorable"),
        (_wrapped(IntegrityError, psycopg.errors.NotNullViolation()), "unstorable"),
        (_wrapped(DataError, psycopg.errors.NumericValueOutOfRange()), "unstorable"),
        (_wrapped(DataError, psycopg.errors.UntranslatableCharacter()), "unstorable"),
        (_wrapped(OperationalError, psycopg.errors.ProgramLimitExceeded()), "unstorable"),
        # psycopg's client-side refusal of a NUL byte has no SQLSTATE.
        (_wrapped(DataError, psycopg.DataError("NUL")), "unstorable"),
        (_wrapped(OperationalError, psycopg.errors.SerializationFailure()), "unavailable"),
        (_wrapped(OperationalError, psycopg.errors.DeadlockDetected()), "unavailable"),
        (_wrapped(OperationalError, psycopg.errors.QueryCanceled()), "unavailable"),
        (_wrapped(OperationalError, psycopg.errors.AdminShutdown()), "unavailable"),
        (_wrapped(OperationalError, psycopg.OperationalError("connection lost")), "unavailable"),
        (_wrapped(InternalError, psycopg.errors.InsufficientPrivilege()), "unavailable"),
    ],
)
def test_database_errors_are_split_by_class(error: Any, kind: str) -> None:
    assert error_kind(error) == kind


def test_the_split_maps_to_the_worker_error_kinds() -> None:
    class Conflict(TransientError):
        pass

    cases: list[tuple[Exception, type[Exception]]] = [
        (_wrapped(IntegrityError, psycopg.errors.UniqueViolation()), Conflict),
        (_wrapped(DataError, psycopg.DataError("NUL")), InvalidMessage),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), InvalidMessage),
        (_wrapped(OperationalError, psycopg.errors.SerializationFailure()), TransientError),
        (PoolTimeout("no connection"), TransientError),
    ]
    for raised, expected in cases:
        with pytest.raises(expected), database_errors(Conflict):
            raise raised
