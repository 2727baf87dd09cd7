"""A worker killed with SIGKILL mid-stream loses nothing and duplicates nothing."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text

from config.settings import Settings
from tests.factories import encode
from tests.integration.exactly_once import assert_each_accepted_once, cards_of_many_users
from tests.support.harness import WorkerProcess, produce, read_topic

USERS = 150
COMMANDS_PER_USER = 16  # under the limit of 20 active methods


def test_sigkill_mid_batch_then_restart_keeps_exactly_once(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    # The killed worker's partitions move to the new one after the session timeout.
    settings = settings.model_copy(update={"kafka_session_timeout_ms": 6000})
    commands = cards_of_many_users(USERS, COMMANDS_PER_USER)
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

    # Every command has exactly one accepted result; every event shows once, gap-free.
    assert len(events) == expected_events, second.log()[-3000:]
    assert_each_accepted_once(commands, results, events, COMMANDS_PER_USER)

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
            text("SELECT min(last_sequence), max(last_sequence) FROM stream_sequences")
        ).one() == (COMMANDS_PER_USER + 1, COMMANDS_PER_USER + 1)
