"""Replaying commands never changes state and never publishes an event twice (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.completion import Completion
from pipelines.command_processor import CommandProcessor
from pipelines.records import IncomingMessage, OutgoingRecord
from tests.strategies import COMMAND_SPECS, START, build_command
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore


def _messages(specs: list[tuple[Any, ...]]) -> list[IncomingMessage]:
    messages = []
    for index, spec in enumerate(specs):
        command = build_command(spec, START + timedelta(seconds=index))
        messages.append(
            IncomingMessage(
                topic="payment.commands",
                partition=0,
                offset=index,
                key=spec[1].encode(),
                value=command.model_dump_json(by_alias=True).encode(),
                headers=[],
            )
        )
    return messages


def _processor(store: MemoryStore) -> CommandProcessor:
    return CommandProcessor(
        store,
        Completion(MemoryGateway(), FixedProfiles()),
        clock=lambda: START,
        consumer_group="g",
        worker_version="test",
    )


def _run(processor: CommandProcessor, messages: list[IncomingMessage]) -> list[OutgoingRecord]:
    return [record for message in messages for record in processor.process(message)]


@settings(max_examples=150, deadline=None)
@given(st.lists(COMMAND_SPECS, min_size=1, max_size=25))
def test_redelivery_and_duplicates_have_no_new_effect(specs: list[tuple[Any, ...]]) -> None:
    store = MemoryStore()
    processor = _processor(store)
    messages = _messages(specs)
    first = _run(processor, messages)
    state = store.snapshot()

    # The same messages again at the same offsets: a crash before the Kafka commit.
    # The stored outcome is published again, byte for byte, and nothing is decided.
    redelivered = _run(processor, messages)
    assert redelivered == first
    assert store.snapshot() == state

    # Copies of the commands at new offsets (producer retries, DLQ replays): the same
    # results, and no events at all, since those were published already.
    copies = _run(processor, [replace(m, offset=m.offset + len(messages)) for m in messages])
    assert [r for r in copies if r.destination == "events"] == []
    assert copies == [r for r in first if r.destination == "results"]
    assert store.snapshot() == state

    event_ids = [dict(r.headers)["eventId"] for r in first if r.destination == "events"]
    assert len(event_ids) == len(set(event_ids))
    assert len([r for r in first if r.destination == "results"]) == len(specs)
