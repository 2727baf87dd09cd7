"""Events and results leave as they always did: same ids, same bytes, same headers.

``event_id`` computes uuid5 itself and ``to_wire`` writes through a cached ``TypeAdapter``
(``serialize_as_any``), both for speed; these hold them to ``uuid.uuid5`` and to
``model_dump_json`` on every event and result of generated command sequences.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.decisions import decide
from domain.model import Decision, KeyState, Payment, apply_decision
from schemas.commands import AddPaymentMethod
from schemas.events import EventEnvelope, event_id
from schemas.results import CommandResult
from tests.factories import add_payment_method
from tests.strategies import COMMAND_SPECS, START, build_command
from tests.unit.wire_documents import command_documents, validated


@settings(max_examples=500, deadline=None)
@given(st.uuids(), st.integers(0, 10_000))
def test_event_ids_are_uuid5_of_the_command_and_the_index(command_id: uuid.UUID, n: int) -> None:
    expected = uuid.uuid5(command_id, str(n))
    produced = event_id(command_id, n)
    assert produced == expected
    assert (str(produced), produced.version, produced.variant) == (
        str(expected),
        5,
        uuid.RFC_4122,
    )


def _assert_written_as_before(decision: Decision) -> None:
    for event in decision.events:
        wire = event.to_wire()
        assert wire == event.model_dump_json(by_alias=True).encode()
        assert EventEnvelope.model_validate_json(wire) == event
        document = json.loads(wire)
        assert event.kafka_headers() == [
            ("eventId", document["eventId"].encode()),
            ("type", document["type"].encode()),
            ("schemaVersion", str(document["schemaVersion"]).encode()),
        ]
    wire = decision.result.to_wire()
    assert wire == decision.result.model_dump_json(by_alias=True).encode()
    assert CommandResult.model_validate_json(wire) == decision.result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(COMMAND_SPECS, min_size=1, max_size=30))
def test_every_event_and_result_of_a_sequence_is_written_as_before(
    specs: list[tuple[Any, ...]],
) -> None:
    states: dict[str, KeyState] = {}
    for index, spec in enumerate(specs):
        now = START + timedelta(seconds=index)
        command = build_command(spec, now)
        state = states.get(spec[1]) or KeyState(spec[1])
        decision = decide(command, state, now)
        _assert_written_as_before(decision)
        states[spec[1]] = apply_decision(state, decision)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_documents())
def test_decisions_on_any_command_are_written_as_before(document: dict[str, Any]) -> None:
    command = validated(document)
    guests = tuple(
        Payment(pid, None, "order-1", 100, "EUR", None, "authorized", START, START)
        for pid in getattr(command.payload, "payment_ids", ())
    )
    _assert_written_as_before(decide(command, KeyState("k", payments=guests), START))


class _SpecialAdd(AddPaymentMethod):
    """A subclass of a command is decided by its base class's rule."""


def test_a_subclass_of_a_command_is_decided_by_its_rule() -> None:
    document = add_payment_method()
    plain = AddPaymentMethod.model_validate(document)
    special = _SpecialAdd.model_validate(document)
    state = KeyState("user:user-123")
    assert decide(special, state, START).result == decide(plain, state, START).result
