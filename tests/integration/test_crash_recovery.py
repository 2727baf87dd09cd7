"""A worker killed with SIGKILL mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from sqlalchemy import Engine, text

from bench.harness import WorkerProcess, produce, read_topic
from config.settings import Settings
from tests.factories import add_payment_method, encode

USERS = 150
COMMANDS_PER_USER = 16  # under the limit of 20 active methods


def test_sigkill_mid_batch_then_restart_keeps_exactly_once(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    # The killed worker's partitions move to the new one after the session timeout.
    settings = settings.model_copy(update={"kafka_session_timeout_ms": 6000})
    commands = [
        (f"user-{u:04d}", add_payment_method(f"user-{u:04d}", fingerprint=f"fp_{u:04d}_{n:04d}"))
        for n in range(COMMANDS_PER_USER)
        for u in range(USERS)
    ]
    produce(settings, [(user.encode(), encode(command)) for user, command in commands])

    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    # Kill it once some, but not all, commands have been committed to Postgres.
    deadline = time.monotonic() + 90
    processed = 0
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            processed = connection.execute(
                text("SELECT count(*) FROM processed_commands")
            ).scalar_one()
        if processed >= 300:
            break
        time.sleep(0.05)
    first.kill()
    assert 0 < processed < len(commands), first.log()

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        expected_events = USERS * (COMMANDS_PER_USER + 1)
        events = read_topic(
            settings, settings.topic_events, expected=expected_events, timeout=180, settle=3
        )
        results = read_topic(settings, settings.topic_results, expected=len(commands), settle=1)
    finally:
        second.stop()

    # Every command has exactly one result, and every one was accepted.
    result_ids = Counter(r.json()["commandId"] for r in results)
    assert set(result_ids) == {c["commandId"] for _, c in commands}
    assert max(result_ids.values()) == 1
    outcomes = Counter((r.json()["status"], r.json()["reason"]) for r in results)
    assert set(outcomes) == {("accepted", "ok")}, outcomes

    # Every expected event is visible exactly once, gap-free per user.
    event_ids = Counter(e.json()["eventId"] for e in events)
    assert len(events) == expected_events, second.log()[-3000:]
    assert max(event_ids.values()) == 1
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in events:
        sequences[event.json()["userId"]].append(event.json()["sequence"])
    assert all(seq == list(range(1, COMMANDS_PER_USER + 2)) for seq in sequences.values())

    # Postgres holds every command once and one default per user.
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM processed_commands")).scalar() == len(
            commands
        )
        assert connection.execute(text("SELECT count(*) FROM payment_methods")).scalar() == len(
            commands
        )
        assert (
            connection.execute(
                text("SELECT count(*) FROM payment_methods WHERE is_default")
            ).scalar()
            == USERS
        )
        assert connection.execute(
            text("SELECT min(last_sequence), max(last_sequence) FROM event_streams")
        ).one() == (COMMANDS_PER_USER + 1, COMMANDS_PER_USER + 1)
