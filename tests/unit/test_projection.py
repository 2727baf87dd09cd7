"""The User Service projection without services: decoding, the fold, order and gaps."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.decisions import decide
from domain.model import KeyState, apply_decision
from domain.projection import MethodView, UserView, Verdict, ViewEvent, advance
from pipelines.projection import ProjectionProcessor, decode_event
from pipelines.records import IncomingMessage
from schemas.errors import InvalidMessage, InvalidReason
from state.projection_store import GapLocation, ProjectionStore
from tests.strategies import COMMAND_SPECS, START, USERS, build_command

AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def envelope(
    event_type: str,
    payload: dict[str, Any],
    sequence: int,
    *,
    user_id: str | None = "user-1",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "eventId": str(uuid.uuid4()),
        "type": event_type,
        "schemaVersion": 1,
        "occurredAt": (AT + timedelta(seconds=sequence)).isoformat(),
        "userId": user_id,
        "sequence": sequence,
        "commandId": str(uuid.uuid4()),
        "correlationId": None,
        "payload": payload,
        **fields,
    }


def added(method_id: str, sequence: int, **card: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"paymentMethodId": method_id, "brand": "visa", "last4": "4242"}
    payload |= {"expMonth": 12, "expYear": 2030, **card}
    return envelope("PaymentMethodAdded", payload, sequence)


def default_changed(previous: str | None, new: str | None, sequence: int) -> dict[str, Any]:
    payload = {"previousPaymentMethodId": previous, "newPaymentMethodId": new}
    return envelope("DefaultPaymentMethodChanged", payload, sequence)


def event(document: dict[str, Any]) -> ViewEvent:
    decoded = decode_event(json.dumps(document).encode())
    assert decoded is not None
    return decoded


def fold(documents: list[dict[str, Any]]) -> tuple[UserView, list[Verdict]]:
    view = UserView("user-1")
    verdicts = []
    for document in documents:
        view, verdict = advance(view, event(document))
        verdicts.append(verdict)
    return view, verdicts


def summary(view: UserView) -> dict[str, tuple[int, int, bool]]:
    return {m.payment_method_id: (m.exp_month, m.exp_year, m.is_default) for m in view.methods}


# --- the fold ------------------------------------------------------------------------


def test_added_methods_and_the_default_make_the_view() -> None:
    view, verdicts = fold(
        [added("pm-1", 1), default_changed(None, "pm-1", 2), added("pm-2", 3, last4="1111")]
    )
    assert verdicts == [Verdict.APPLIED] * 3
    assert view.last_sequence == 3
    assert summary(view) == {"pm-1": (12, 2030, True), "pm-2": (12, 2030, False)}
    second = next(m for m in view.methods if m.payment_method_id == "pm-2")
    assert second == MethodView("pm-2", "visa", "1111", 12, 2030, False, AT + timedelta(seconds=3))


def test_update_changes_only_the_expiry_fields_present() -> None:
    update = {"paymentMethodId": "pm-1", "source": "account_updater", "expYear": 2031}
    renamed = {"paymentMethodId": "pm-1", "source": "user", "billingNameChanged": True}
    view, verdicts = fold(
        [
            added("pm-1", 1, expMonth=5),
            envelope("PaymentMethodUpdated", update, 2),
            envelope("PaymentMethodUpdated", renamed, 3),
        ]
    )
    assert verdicts == [Verdict.APPLIED] * 3
    assert summary(view) == {"pm-1": (5, 2031, False)}
    assert view.methods[0].updated_at == AT + timedelta(seconds=2)
    assert view.last_sequence == 3


def test_removal_deletes_the_row_and_a_default_moves() -> None:
    view, _ = fold(
        [
            added("pm-1", 1),
            default_changed(None, "pm-1", 2),
            added("pm-2", 3),
            envelope(
                "PaymentMethodRemoved", {"paymentMethodId": "pm-1", "reason": "user_request"}, 4
            ),
            default_changed("pm-1", "pm-2", 5),
        ]
    )
    assert summary(view) == {"pm-2": (12, 2030, True)}


def test_erasure_deletes_every_row_of_the_user() -> None:
    view, _ = fold(
        [
            added("pm-1", 1),
            added("pm-2", 2),
            envelope("UserPaymentDataErased", {"removedPaymentMethodIds": ["pm-1", "pm-2"]}, 3),
        ]
    )
    assert view.methods == ()
    assert view.last_sequence == 3


def test_duplicates_and_redeliveries_are_skipped() -> None:
    first, second = added("pm-1", 1), added("pm-2", 2)
    view, verdicts = fold([first, second, first, second, dict(second, eventId=str(uuid.uuid4()))])
    assert verdicts == [Verdict.APPLIED, Verdict.APPLIED] + [Verdict.DUPLICATE] * 3
    assert set(summary(view)) == {"pm-1", "pm-2"}


def test_a_gap_holds_the_user_and_is_never_applied_past() -> None:
    missing_two = added("pm-3", 3)
    view, verdicts = fold([added("pm-1", 1), missing_two, added("pm-2", 2), added("pm-4", 4)])
    assert verdicts == [Verdict.APPLIED, Verdict.GAP, Verdict.HELD, Verdict.HELD]
    assert set(summary(view)) == {"pm-1"}
    assert view.last_sequence == 1
    assert view.gap is not None
    assert (view.gap.expected_sequence, view.gap.found_sequence) == (2, 3)
    assert str(view.gap.event_id) == missing_two["eventId"]


def test_unknown_and_payment_events_only_advance_the_sequence() -> None:
    initiated = {
        "paymentId": "pay-1",
        "orderId": "order-1",
        "amount": 100,
        "currency": "EUR",
        "paymentMethodId": "pm-1",
        "guest": False,
    }
    view, verdicts = fold(
        [
            added("pm-1", 1),
            envelope("PaymentInitiated", initiated, 2),
            envelope("PaymentRefunded", {"anything": [1, 2]}, 3),
            added("pm-2", 4),
        ]
    )
    assert verdicts == [Verdict.APPLIED, Verdict.IGNORED, Verdict.IGNORED, Verdict.APPLIED]
    assert view.last_sequence == 4
    assert set(summary(view)) == {"pm-1", "pm-2"}


def test_new_optional_fields_are_accepted() -> None:
    _, verdicts = fold([added("pm-1", 1, cardArt="blue"), dict(added("pm-2", 2), extra=1)])
    assert verdicts == [Verdict.APPLIED, Verdict.APPLIED]


@settings(max_examples=200, deadline=None)
@given(st.lists(COMMAND_SPECS, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_the_view_equals_the_payment_service_state_for_any_command_sequence(
    specs: list[tuple[Any, ...]], random: Any
) -> None:
    """The contract: events alone, even redelivered, rebuild active methods and default."""
    states = {user: KeyState(user) for user in USERS}
    wire: dict[str, list[bytes]] = defaultdict(list)
    for index, spec in enumerate(specs):
        now = START + timedelta(seconds=index)
        key = spec[1]
        decision = decide(build_command(spec, now), states[key], now)
        states[key] = apply_decision(states[key], decision)
        wire[key].extend(e.to_wire() for e in decision.events)
    for user in USERS:
        # At-least-once delivery: any prefix may be delivered again after a crash.
        delivered = list(wire[user])
        if delivered:
            cut = random.randint(0, len(delivered))
            delivered = delivered[:cut] + delivered[: random.randint(0, cut)] + delivered[cut:]
        view = UserView(user)
        for raw in delivered:
            decoded = decode_event(raw)
            assert decoded is not None
            view, verdict = advance(view, decoded)
            assert verdict is not Verdict.GAP
        expected = {
            m.payment_method_id: (m.brand, m.last4, m.exp_month, m.exp_year, m.is_default)
            for m in states[user].active_methods
        }
        actual = {
            m.payment_method_id: (m.brand, m.last4, m.exp_month, m.exp_year, m.is_default)
            for m in view.methods
        }
        assert actual == expected
        assert view.last_sequence == states[user].last_sequence


# --- decoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", InvalidReason.NOT_JSON),
        (b"", InvalidReason.EMPTY_VALUE),
        (b"[1, 2]", InvalidReason.NOT_AN_OBJECT),
        (b'{"type": "PaymentMethodAdded"}', InvalidReason.SCHEMA_VIOLATION),
        (
            json.dumps(envelope("PaymentMethodAdded", {"paymentMethodId": "pm-1"}, 1)).encode(),
            InvalidReason.SCHEMA_VIOLATION,
        ),
        (json.dumps(dict(added("pm-1", 1), sequence=0)).encode(), InvalidReason.SCHEMA_VIOLATION),
        (
            json.dumps(dict(added("pm-1", 1), schemaVersion=2)).encode(),
            InvalidReason.UNSUPPORTED_SCHEMA_VERSION,
        ),
    ],
)
def test_bad_input_is_an_invalid_message(raw: bytes, reason: InvalidReason) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_event(raw)
    assert caught.value.reason == reason


def test_guest_events_have_no_view() -> None:
    guest = envelope(
        "PaymentAuthorized", {"paymentId": "p", "authorizationId": "a"}, 1, user_id=None
    )
    assert decode_event(json.dumps(guest).encode()) is None


# --- the processor, with an in-memory store --------------------------------------------


class MemoryStore(ProjectionStore):
    def __init__(self) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]
        self.stored: dict[str, UserView] = {}
        self.gaps: dict[str, GapLocation] = {}

    def view(self, user_id: str) -> UserView:
        return self.stored.get(user_id, UserView(user_id))

    def stage(self, view: UserView, gap_at: GapLocation | None = None) -> None:
        self.stored[view.user_id] = view
        if gap_at is not None:
            self.gaps[view.user_id] = gap_at


def message(value: bytes, offset: int = 0) -> IncomingMessage:
    return IncomingMessage("payment.events", 2, offset, b"user-1", value, [("eventId", b"x")])


def test_the_processor_dead_letters_bad_input_with_the_dlq_headers() -> None:
    store = MemoryStore()
    processor = ProjectionProcessor(store, consumer_group="view-group", version="1.2.3")
    (record,) = processor.process(message(b"{oops", offset=7))
    assert record.destination == "dlq"
    assert record.value == b"{oops"
    assert record.key == b"user-1"
    headers = dict(record.headers)
    assert headers["dlq.reason"] == b"not_json"
    assert headers["dlq.source.topic"] == b"payment.events"
    assert headers["dlq.source.offset"] == b"7"
    assert headers["dlq.consumer.group"] == b"view-group"
    assert headers["dlq.worker.version"] == b"1.2.3"
    assert headers["eventId"] == b"x"
    assert store.stored == {}


def test_the_processor_stages_views_and_records_where_a_gap_was_found() -> None:
    store = MemoryStore()
    processor = ProjectionProcessor(store, consumer_group="g", version="v")
    assert processor.process(message(json.dumps(added("pm-1", 1)).encode(), 0)) == []
    assert processor.process(message(json.dumps(added("pm-2", 3)).encode(), 1)) == []
    view = store.stored["user-1"]
    assert set(summary(view)) == {"pm-1"}
    assert view.gap is not None
    assert store.gaps["user-1"] == GapLocation(2, 1)
