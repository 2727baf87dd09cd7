"""The command store on PostgreSQL: cached key state is fenced, and cheap to read.

The store keeps each key's state and recent command ids between checkpoints. These
tests play two workers against one database to show that a stale cache can never write
(the key's sequence and the inbox fence it), and count the statements a checkpoint
sends, since reading once per key instead of once per command is the cache's purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from pipelines.command_processor import CommandProcessor
from pipelines.gateway_effects import GatewayEffects
from pipelines.records import IncomingMessage, OutgoingRecord
from state.command_store import CommandStore, ConcurrentWriteError, WriteConflicts
from tests.factories import ISSUED_AT, add_payment_method, command, encode
from tests.unit.fakes import FixedProfiles, MemoryGateway

_offsets = iter(range(1_000_000))


def _processor(store: CommandStore) -> CommandProcessor:
    return CommandProcessor(
        store,
        GatewayEffects(MemoryGateway(), FixedProfiles()),
        clock=lambda: ISSUED_AT,
        consumer_group="test",
        worker_version="test",
    )


def _process(store: CommandStore, document: dict[str, Any], key: str) -> list[OutgoingRecord]:
    message = IncomingMessage(
        "payment.commands", 0, next(_offsets), key.encode(), encode(document), []
    )
    return _processor(store).process(message)


def _result(records: list[OutgoingRecord]) -> dict[str, Any]:
    (result,) = [r for r in records if r.destination == "results"]
    assert result.value is not None
    return dict(json.loads(result.value))


def _update(user: str, method_id: str, exp_month: int) -> dict[str, Any]:
    return command(
        "UpdatePaymentMethod",
        user,
        {"paymentMethodId": method_id, "expMonth": exp_month, "expYear": 2031},
    )


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_a_stale_cached_key_cannot_write_and_is_read_again(engine: Engine) -> None:
    first, second = CommandStore(engine), CommandStore(engine)
    added = _process(first, add_payment_method("user-a", payment_method_id="pm-a"), "user-a")
    first.flush()
    assert _result(added)["status"] == "accepted"

    # The second worker takes the key over (a rebalance) and changes it.
    second.stream_state("user-a")
    _process(second, _update("user-a", "pm-a", 3), "user-a")
    second.flush()

    # The first still has the key cached as it was: its next write must not land.
    _process(first, _update("user-a", "pm-a", 7), "user-a")
    with pytest.raises(ConcurrentWriteError):
        first.flush()
    assert first.cached_keys == 0
    state = first.stream_state("user-a")
    assert [m.exp_month for m in state.methods] == [3]
    with engine.connect() as connection:
        # Added and DefaultPaymentMethodChanged, then the second worker's update.
        assert connection.execute(text("SELECT last_sequence FROM event_streams")).scalar() == 3


def test_a_command_id_reused_under_another_key_is_caught_then_answered_from_the_inbox(
    engine: Engine,
) -> None:
    original = add_payment_method("user-a", payment_method_id="pm-a")
    store = CommandStore(engine)
    _process(store, original, "user-a")
    store.flush()

    # The same id under another user: not among that user's recent commands, so the
    # store decides it, and the inbox's primary key stops the checkpoint.
    conflicts = WriteConflicts()
    reused = add_payment_method("user-b", command_id=original["commandId"])
    retried = CommandStore(engine, conflicts=conflicts)
    _process(retried, reused, "user-b")
    with pytest.raises(ConcurrentWriteError):
        retried.flush()

    # The pipeline restarts with a new store; the id is now looked up, and found.
    restarted = CommandStore(engine, conflicts=conflicts)
    answer = _result(_process(restarted, reused, "user-b"))
    assert (answer["status"], answer["reason"]) == ("rejected", "command_id_conflict")
    restarted.flush()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM processed_commands")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM payment_methods")).scalar() == 1


def test_a_checkpoint_reads_each_key_once_not_each_command(engine: Engine) -> None:
    store = CommandStore(engine)
    users = [f"user-{n}" for n in range(5)]
    for user in users:
        _process(store, add_payment_method(user, payment_method_id=f"pm-{user}"), user)
    store.flush()

    with _statements(engine) as statements:
        for month in range(1, 11):
            for user in users:
                _process(store, _update(user, f"pm-{user}", month), user)
        store.flush()
    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # 50 commands of 5 cached keys: no read at all, beside the pool's connection check.
    assert len(reads) <= 1, reads
    # One transaction: the inbox, the sequences and the methods, one statement each.
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    assert len(writes) == 3, writes


def test_a_redelivered_command_is_recognised_from_the_cache(engine: Engine) -> None:
    store = CommandStore(engine)
    document = add_payment_method("user-a", payment_method_id="pm-a")
    first = _process(store, document, "user-a")
    store.flush()
    again = _process(store, document, "user-a")
    assert _result(again) == _result(first)
    assert [r.destination for r in again] == ["results"]  # a re-sent copy: no events
    assert store.pending_commands == 0


def test_a_rejection_decided_on_a_stale_cached_key_is_not_stored(engine: Engine) -> None:
    first, second = CommandStore(engine), CommandStore(engine)
    _process(first, add_payment_method("user-a", payment_method_id="pm-a"), "user-a")
    first.flush()

    # Another worker adds a card while the first still has the key cached.
    second.stream_state("user-a")
    _process(
        second,
        add_payment_method("user-a", payment_method_id="pm-b", fingerprint="fp_0000000002"),
        "user-a",
    )
    second.flush()

    # Deciding on its outdated copy, the first would reject making pm-b the default;
    # that rejection changes nothing, yet must not be stored as the command's answer.
    set_default = command("SetDefaultPaymentMethod", "user-a", {"paymentMethodId": "pm-b"})
    stale = _result(_process(first, set_default, "user-a"))
    assert (stale["status"], stale["reason"]) == ("rejected", "payment_method_not_found")
    with pytest.raises(ConcurrentWriteError):
        first.flush()

    retried = _result(_process(first, set_default, "user-a"))
    assert retried["status"] == "accepted"
    first.flush()
