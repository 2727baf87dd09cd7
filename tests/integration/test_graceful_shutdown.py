"""SIGTERM under load: the worker commits what it took, leaves the group and exits 0.

Commands keep arriving while the first worker is told to stop; a second worker takes
over. A clean hand-over shows as exactly one result per command (a batch written to
Postgres but not committed to Kafka would be redelivered and its stored result
re-published, a second copy) and exactly one copy of every event.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, text

from config.settings import Settings
from sandbox.gateway_server import SandboxGatewayServer
from tests.factories import add_payment_method, encode
from tests.integration.exactly_once import assert_each_accepted_once, cards_of_many_users
from tests.support.harness import WorkerProcess, produce, read_topic

USERS = 200
COMMANDS_PER_USER = 12
BATCH = 100  # commands produced at a time, every BATCH_PAUSE seconds
BATCH_PAUSE = 0.25


def _inbox_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM processed_commands")).scalar_one())


def test_sigterm_under_load_commits_leaves_and_loses_nothing(
    settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"shutdown_timeout_seconds": 20.0})
    commands = cards_of_many_users(USERS, COMMANDS_PER_USER)
    records = [(user.encode(), encode(command)) for user, command in commands]

    def produce_steadily() -> None:
        for start in range(0, len(records), BATCH):
            produce(settings, records[start : start + BATCH])
            time.sleep(BATCH_PAUSE)

    producer = threading.Thread(target=produce_steadily, daemon=True)
    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    producer.start()

    deadline = time.monotonic() + 120
    while _inbox_count(engine) < 400 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert producer.is_alive(), "the load ended before the worker was stopped"
    first.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    exit_code = first.wait(timeout=settings.shutdown_timeout_seconds + 5)
    stopped_after = time.monotonic() - signalled
    taken = _inbox_count(engine)
    assert exit_code == 0, first.log()[-3000:]
    assert stopped_after < settings.shutdown_timeout_seconds
    assert "SIGTERM received" in first.log()
    assert "payment worker stopped" in first.log()
    assert 400 <= taken < len(commands)

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        producer.join(timeout=120)
        expected_events = USERS * (COMMANDS_PER_USER + 1)
        events = read_topic(
            settings, settings.topic_events, expected=expected_events, timeout=240, settle=3
        )
        results = read_topic(settings, settings.topic_results, expected=len(commands), settle=1)
    finally:
        second.stop()

    # A second copy of a result would mean a batch was redelivered: the stop was not clean.
    assert_each_accepted_once(commands, results, events, COMMANDS_PER_USER)
    assert _inbox_count(engine) == len(commands)


def test_sigterm_while_backing_off_on_an_outage_exits_at_once(
    settings: Settings, tmp_path: Path, sandbox_gateway: SandboxGatewayServer
) -> None:
    sandbox_gateway.gateway.available = False
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        produce(settings, [(b"user-outage", encode(add_payment_method("user-outage")))])
        deadline = time.monotonic() + 60
        while "a dependency is unavailable" not in worker.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "a dependency is unavailable" in worker.log()
        worker.send_signal(signal.SIGTERM)
        # Well before the back-off (up to 30 s) or the shutdown bound would end.
        assert worker.wait(timeout=10) == 0, worker.log()[-3000:]
    finally:
        worker.stop()
