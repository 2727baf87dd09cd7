"""The workload and the checks that the crash and shutdown tests share: users adding
cards, then exactly one accepted result per command and one copy of every event."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tests.factories import add_payment_method
from tests.support.harness import Record


def cards_of_many_users(users: int, per_user: int) -> list[tuple[str, dict[str, Any]]]:
    """``(userId, AddPaymentMethod)`` pairs, interleaved across users, each card unique."""
    return [
        (f"user-{u:04d}", add_payment_method(f"user-{u:04d}", fingerprint=f"fp_{u:04d}_{n:04d}"))
        for n in range(per_user)
        for u in range(users)
    ]


def assert_each_accepted_once(
    commands: list[tuple[str, dict[str, Any]]],
    results: list[Record],
    events: list[Record],
    per_user: int,
) -> None:
    """One accepted result per command; every event once; each user's sequences 1..n.

    A user's first card also makes it the default: ``per_user + 1`` events each.
    """
    result_ids = Counter(r.json()["commandId"] for r in results)
    assert set(result_ids) == {c["commandId"] for _, c in commands}
    assert max(result_ids.values()) == 1, "a result was published twice"
    outcomes = Counter((r.json()["status"], r.json()["reason"]) for r in results)
    assert set(outcomes) == {("accepted", "ok")}, outcomes

    users = {user for user, _ in commands}
    assert len(events) == len(users) * (per_user + 1)
    assert max(Counter(e.json()["eventId"] for e in events).values()) == 1
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in events:
        sequences[event.json()["userId"]].append(event.json()["sequence"])
    assert all(seq == list(range(1, per_user + 2)) for seq in sequences.values())
