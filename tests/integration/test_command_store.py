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

from domain.completion import Completion
from domain.model import KeyState
from pipelines.command_processor import CommandProcessor
from pipelines.records import IncomingMessage, OutgoingRecord
from state.command_store import CommandStore, ConcurrentWriteError, WriteConflicts
from tests.factories import ISSUED_AT, add_payment_method, command, encode
from tests.support.fakes import FixedProfiles, MemoryGateway

_offsets = iter(range(1_000_000))


def _processor(store: CommandStore) -> CommandProcessor:
    return CommandProcessor(
        store,
        Completion(MemoryGateway(), FixedProfiles()),
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
    second.key_state("user:user-a")
    _process(second, _update("user-a", "pm-a", 3), "user-a")
    second.flush()

    # The first still has the key cached as it was: its next write must not land.
    _process(first, _update("user-a", "pm-a", 7), "user-a")
    with pytest.raises(ConcurrentWriteError):
        first.flush()
    assert first.cached_keys == 0
    state = first.key_state("user:user-a")
    assert [m.exp_month for m in state.methods] == [3]
    with engine.connect() as connection:
        # Added and DefaultPaymentMethodChanged, then the second worker's update.
        assert connection.execute(text("SELECT last_sequence FROM stream_sequences")).scalar() == 3


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
    second.key_state("user:user-a")
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


# --- bounded memory: what a key's cache entry holds ---------------------------------------


def _remove(user: str, method_id: str) -> dict[str, Any]:
    return command(
        "RemovePaymentMethod", user, {"paymentMethodId": method_id, "reason": "user_request"}
    )


def _selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def _user_with_a_removed_card(
    store: CommandStore, user: str = "user-a", billing_name: str | None = "A Holder"
) -> None:
    """pm-kept stays; pm-gone is removed (removal keeps its billing name, if any)."""
    _process(store, add_payment_method(user, payment_method_id="pm-kept"), user)
    gone = add_payment_method(
        user, payment_method_id="pm-gone", fingerprint="fp_0000000002", billing_name=billing_name
    )
    _process(store, gone, user)
    assert _result(_process(store, _remove(user, "pm-gone"), user))["status"] == "accepted"
    store.flush()


def _method_ids(state: KeyState) -> list[str]:
    return [method.payment_method_id for method in state.methods]


def test_removed_methods_are_neither_cached_nor_read_with_the_state(engine: Engine) -> None:
    cached = CommandStore(engine)
    _user_with_a_removed_card(cached, billing_name=None)
    fresh = CommandStore(engine)
    for store in (cached, fresh):
        with _statements(engine) as statements:
            assert _method_ids(store.key_state("user:user-a")) == ["pm-kept"]
            assert _method_ids(store.key_state("user:user-a", ["pm-kept"], [])) == ["pm-kept"]
        assert len(_selects(statements)) == (1 if store is fresh else 0), statements


def test_removed_methods_holding_a_billing_name_are_read_only_for_a_possible_erasure(
    engine: Engine,
) -> None:
    store = CommandStore(engine)
    _user_with_a_removed_card(store)
    # A command naming a method or a payment is no erasure: the cached state, no query.
    with _statements(engine) as statements:
        assert _method_ids(store.key_state("user:user-a", ["pm-kept"], [])) == ["pm-kept"]
    assert _selects(statements) == []
    # One naming nothing may be an erasure, which must purge the billing name.
    assert _method_ids(store.key_state("user:user-a")) == ["pm-gone", "pm-kept"]
    # Not cached for it either.
    assert _method_ids(store.key_state("user:user-a", ["pm-kept"], [])) == ["pm-kept"]


@pytest.mark.parametrize("fresh_store", [False, True], ids=["cached", "read-afresh"])
def test_commands_naming_a_removed_method_are_decided_as_before(
    engine: Engine, fresh_store: bool
) -> None:
    store = CommandStore(engine)
    _user_with_a_removed_card(store)
    if fresh_store:
        store = CommandStore(engine)

    def answer(document: dict[str, Any]) -> tuple[str, str]:
        result = _result(_process(store, document, "user-a"))
        return result["status"], result["reason"]

    # Removing it again: accepted, nothing changes (the rule needs the removed method).
    assert answer(_remove("user-a", "pm-gone")) == ("accepted", "no_change")
    assert answer(_update("user-a", "pm-gone", 5)) == ("rejected", "payment_method_not_found")
    set_default = command("SetDefaultPaymentMethod", "user-a", {"paymentMethodId": "pm-gone"})
    assert answer(set_default) == ("rejected", "payment_method_not_found")
    # Its id cannot be reused, not even by its owner.
    reuse = add_payment_method("user-a", payment_method_id="pm-gone", fingerprint="fp_0000000003")
    assert answer(reuse) == ("rejected", "payment_method_id_taken")
    # The same card again is a new method: a removed card is no duplicate.
    again = add_payment_method("user-a", payment_method_id="pm-new", fingerprint="fp_0000000002")
    assert answer(again) == ("accepted", "ok")
    store.flush()


def test_a_removed_method_is_read_with_the_foreign_id_check_in_one_query(
    engine: Engine,
) -> None:
    store = CommandStore(engine)
    _user_with_a_removed_card(store)
    store.key_state("user:user-a")  # the key is cached
    with _statements(engine) as statements:
        state = store.key_state("user:user-a", ["pm-gone"], [])
    # In the order of a full read (creation, then id: this test's clock stands still).
    assert [(m.payment_method_id, m.active) for m in state.methods] == [
        ("pm-gone", False),
        ("pm-kept", True),
    ]
    assert state.taken_payment_method_ids == frozenset()
    assert len(_selects(statements)) == 1, statements
    # Another user naming it learns only that it is taken.
    other = store.key_state("user:user-b", ["pm-gone"], [])
    assert other.taken_payment_method_ids == {"pm-gone"}
    assert other.methods == ()


@pytest.mark.parametrize("fresh_store", [False, True], ids=["cached", "read-afresh"])
def test_an_erasure_purges_removed_methods_it_did_not_cache(
    engine: Engine, fresh_store: bool
) -> None:
    store = CommandStore(engine)
    _user_with_a_removed_card(store)
    if fresh_store:
        store = CommandStore(engine)
    erased = _result(_process(store, command("EraseUserData", "user-a"), "user-a"))
    assert erased["status"] == "accepted"
    store.flush()
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT payment_method_id, active, gateway_token, billing_name"
                " FROM payment_methods ORDER BY payment_method_id"
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        ("pm-gone", False, None, None),
        ("pm-kept", False, None, None),
    ]
    # Nothing is left to purge: the next command naming nothing reads no removed method.
    with _statements(engine) as statements:
        store.key_state("user:user-a")
        store.key_state("user:user-a")
    assert len(_selects(statements)) <= 1, statements


def test_a_key_entry_does_not_grow_with_its_commands(engine: Engine) -> None:
    store = CommandStore(engine, recent_commands=4)
    _process(store, add_payment_method("user-a", payment_method_id="pm-a"), "user-a")
    store.flush()
    sizes = []
    for month in range(1, 13):
        _process(store, _update("user-a", "pm-a", month), "user-a")
        store.flush()
        sizes.append(store.cached_bytes)
    assert store.cached_keys == 1
    # Growing while the window of recent ids fills, then flat.
    assert sizes[3:] == [sizes[3]] * 9, sizes


def test_only_the_newest_commands_are_recognised_without_deciding(engine: Engine) -> None:
    store = CommandStore(engine, recent_commands=2)
    documents = [_update("user-a", "pm-a", month) for month in (1, 2, 3)]
    _process(store, add_payment_method("user-a", payment_method_id="pm-a"), "user-a")
    store.flush()
    firsts = [_result(_process(store, document, "user-a")) for document in documents]
    store.flush()

    # The newest is among the cached ids: answered from the inbox, nothing staged.
    assert _result(_process(store, documents[-1], "user-a")) == firsts[-1]
    assert store.pending_commands == 0
    # An older one is decided again, and the inbox's primary key stops the checkpoint;
    # the restarted pipeline looks it up and answers it as first decided.
    conflicts = WriteConflicts()
    retried = CommandStore(engine, recent_commands=2, conflicts=conflicts)
    _process(retried, documents[0], "user-a")
    with pytest.raises(ConcurrentWriteError):
        retried.flush()
    restarted = CommandStore(engine, recent_commands=2, conflicts=conflicts)
    assert _result(_process(restarted, documents[0], "user-a")) == firsts[0]
    assert restarted.pending_commands == 0


def test_the_cache_keeps_within_its_byte_bound_evicting_the_least_recently_used(
    engine: Engine,
) -> None:
    probe = CommandStore(engine)
    probe.key_state("user:user-0")
    one_key = probe.cached_bytes
    bound = 5 * one_key + one_key // 2
    store = CommandStore(engine, max_cached_bytes=bound)
    for n in range(12):
        store.key_state(f"user:user-{n}")
        assert store.cached_bytes <= bound
    assert store.cached_keys == 5
    # The most recently used keys are still cached: reading them needs no query.
    with _statements(engine) as statements:
        for n in range(7, 12):
            store.key_state(f"user:user-{n}")
    assert _selects(statements) == []
    # The others were evicted and are read again.
    with _statements(engine) as statements:
        store.key_state("user:user-0")
    assert len(_selects(statements)) == 1


def test_what_a_batch_read_ahead_is_not_used_after_its_write(engine: Engine) -> None:
    # A batch reads the ids its commands name before deciding them. A command of that
    # batch carried past its write (its key waited for the gateway) must see the write.
    store = CommandStore(engine)
    user, key = "user-ahead", "user:user-ahead"
    removal = _remove(user, "pm-ahead")
    store.prefetch([key], [], ["pm-ahead"], [])  # pm-ahead does not exist yet
    _process(store, add_payment_method(user, payment_method_id="pm-ahead"), user)
    assert _result(_process(store, _remove(user, "pm-ahead"), user))["status"] == "accepted"
    store.flush()

    # Removed, and not in the cached state: it is read again, so the repeated removal is
    # "already removed" (accepted), never "not found".
    result = _result(_process(store, removal, user))
    assert (result["status"], result["reason"]) == ("accepted", "no_change")


def test_a_payment_stored_meanwhile_by_another_worker_is_answered_not_cancelled(
    engine: Engine,
) -> None:
    """A stale worker's cache lacks a command that the partition's new owner stored; the
    payment it reads (fresh) looks taken. The inbox, read after the payment, tells it is
    this very command: its stored outcome is answered, and nothing is cancelled."""
    payment = command(
        "InitiatePayment",
        None,
        {
            "paymentId": "pay-moved",
            "orderId": "order-1",
            "amount": 1999,
            "currency": "EUR",
            "gatewayToken": "tok_guest_moved",
        },
    )
    key = "guest-payment:pay-moved"
    stale = CommandStore(engine)
    stale.key_state(key, (), ("pay-moved",))  # the key cached before the other write
    stale.discard()
    owner = CommandStore(engine)
    stored = _result(_process(owner, payment, "pay-moved"))
    owner.flush()

    gateway = MemoryGateway()
    again = CommandProcessor(
        stale,
        Completion(gateway, FixedProfiles()),
        clock=lambda: ISSUED_AT,
        consumer_group="test",
        worker_version="test",
    ).process(
        IncomingMessage("payment.commands", 0, next(_offsets), b"pay-moved", encode(payment), [])
    )

    assert _result(again) == stored
    assert (stored["status"], stored["reason"]) == ("accepted", "ok")
    assert gateway.calls == 0  # neither an authorization nor a cancel
