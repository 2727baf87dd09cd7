"""The contract test of payment.events: the User Service view equals the Payment Service.

Seeded random command sequences for many users go through a real command worker and a
real projection process on the real broker and database; afterwards every user's view
equals the worker's own state (active methods and the default), field by field, also
after the projection is killed with SIGKILL mid-stream and restarted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from config.settings import ENV_PREFIX, Settings
from domain.streams import stream_user_id
from tests.factories import add_payment_method, command, encode
from tests.support.harness import (
    REPOSITORY,
    WorkerProcess,
    produce,
    read_topic,
    settings_environment,
)

USERS = [f"user-{n:02d}" for n in range(20)]
COMMANDS_PER_USER = 16
BRANDS = ["visa", "mastercard", "amex", "discover"]


class CommandScript:
    """A seeded generator of plausible commands; the worker's state is the truth."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)  # noqa: S311 - test data, not crypto
        self._active: dict[str, list[tuple[str, str]]] = {user: [] for user in USERS}
        self._counter = 0

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    def command_for(self, user: str) -> dict[str, Any]:
        rnd, active = self._random, self._active[user]
        roll = rnd.random()
        if not active or (roll < 0.35 and len(active) < 6):
            n = self._next()
            method = (f"{user}-pm-{n}", f"fp_{user}_{n:04d}")
            active.append(method)
            document = add_payment_method(
                user,
                payment_method_id=method[0],
                fingerprint=method[1],
                exp_month=rnd.randint(1, 12),
                exp_year=rnd.randint(2027, 2031),
                make_default=rnd.random() < 0.3,
            )
            document["payload"]["card"]["brand"] = rnd.choice(BRANDS)
            document["payload"]["card"]["last4"] = f"{rnd.randint(0, 9999):04d}"
            return document
        method_id, fingerprint = rnd.choice(active)
        if roll < 0.45:
            # The same card again with a new expiry: the worker treats it as an update.
            return add_payment_method(
                user, fingerprint=fingerprint, exp_month=rnd.randint(1, 12), exp_year=2032
            )
        if roll < 0.6:
            payload: dict[str, Any] = {"paymentMethodId": method_id, "source": "account_updater"}
            payload |= rnd.choice(
                [
                    {"expMonth": rnd.randint(1, 12)},
                    {"expYear": rnd.randint(2027, 2031)},
                    {"expMonth": rnd.randint(1, 12), "expYear": rnd.randint(2027, 2031)},
                    {"billingName": "A. Holder"},
                ]
            )
            return command("UpdatePaymentMethod", user, payload)
        if roll < 0.72:
            active.remove((method_id, fingerprint))
            return command("RemovePaymentMethod", user, {"paymentMethodId": method_id})
        if roll < 0.87:
            return command("SetDefaultPaymentMethod", user, {"paymentMethodId": method_id})
        if roll < 0.97:
            n = self._next()
            payment = {
                "paymentId": f"pay-{user}-{n}",
                "orderId": f"order-{n}",
                "amount": rnd.randint(100, 9999),
                "currency": "EUR",
                "paymentMethodId": method_id,
            }
            return command("InitiatePayment", user, payment)
        active.clear()
        return command("EraseUserData", user)

    def round(self, count: int) -> list[tuple[bytes, bytes]]:
        """``count`` commands per user, users interleaved."""
        return [
            (user.encode(), encode(self.command_for(user))) for _ in range(count) for user in USERS
        ]


COLUMNS = "user_id, payment_method_id, brand, last4, exp_month, exp_year, is_default"
Rows = dict[tuple[str, str], tuple[Any, ...]]


def _payment_service_state(engine: Engine, schema: str) -> tuple[Rows, dict[str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(f'SELECT {COLUMNS} FROM "{schema}".payment_methods WHERE active')  # noqa: S608
        ).all()
        sequences = connection.execute(
            text(f'SELECT stream_key, last_sequence FROM "{schema}".stream_sequences')  # noqa: S608
        ).all()
    # The view keeps users' streams only; a guest payment's stream is not a user's.
    user_sequences = {
        user_id: s for k, s in sequences if (user_id := stream_user_id(k)) is not None
    }
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}, user_sequences


def _view_state(engine: Engine, schema: str) -> tuple[Rows, dict[str, int]]:
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT to_regclass(:t) IS NOT NULL"), {"t": f'"{schema}".user_event_streams'}
        ).scalar_one()
        if not exists:
            return {}, {}
        rows = connection.execute(
            text(f'SELECT {COLUMNS} FROM "{schema}".user_payment_methods')  # noqa: S608
        ).all()
        sequences = connection.execute(
            text(f'SELECT user_id, last_sequence FROM "{schema}".user_event_streams')  # noqa: S608
        ).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}, {k: s for k, s in sequences}


def _processed(engine: Engine, schema: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(f'SELECT count(*) FROM "{schema}".processed_commands')  # noqa: S608
            ).scalar_one()
        )


def _wait_until_equal(
    engine: Engine, settings: Settings, expected_commands: int, timeout: float
) -> tuple[Rows, Rows]:
    deadline = time.monotonic() + timeout
    while True:
        done = _processed(engine, settings.database_schema) >= expected_commands
        truth, truth_sequences = _payment_service_state(engine, settings.database_schema)
        view, view_sequences = _view_state(engine, settings.projection_schema)
        if done and truth == view and truth_sequences == view_sequences:
            return truth, view
        if time.monotonic() > deadline:
            return truth, view
        time.sleep(0.3)


@pytest.fixture
def projection_settings(settings: Settings, engine: Engine) -> Iterator[Settings]:
    isolated = settings.model_copy(
        update={
            "projection_schema": f"{settings.database_schema}_view",
            "projection_consumer_group": f"{settings.consumer_group}-view",
            # A killed projection's partitions move on quickly, and its open
            # transaction does not hold back the next one for long.
            "kafka_session_timeout_ms": 6000,
            "kafka_transaction_timeout_ms": 5000,
        }
    )
    yield isolated
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{isolated.projection_schema}" CASCADE'))


def test_every_view_equals_the_payment_service_state_also_after_a_sigkill(
    projection_settings: Settings, engine: Engine, worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = projection_settings
    script = CommandScript(seed=20261130)
    half = COMMANDS_PER_USER // 2

    # Bad input on the events topic goes to the projection's own DLQ.
    produce_events = settings.model_copy(update={"topic_commands": settings.topic_events})
    produce(produce_events, [(b"user-garbage", b"not an event")])

    projection = WorkerProcess(settings, tmp_path / "projection-1.log", pipeline="projection")
    projection.start()
    first_round = script.round(half)
    produce(settings, first_round)
    truth, view = _wait_until_equal(engine, settings, len(first_round), timeout=30)
    assert truth, worker.log()[-3000:]
    assert view == truth, projection.log()[-3000:]

    # Mid-stream: the worker is still deciding the second round when the projection dies.
    second_round = script.round(COMMANDS_PER_USER - half)
    _, applied_before = _view_state(engine, settings.projection_schema)
    produce(settings, second_round)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        _, applied = _view_state(engine, settings.projection_schema)
        if sum(applied.values()) > sum(applied_before.values()):
            break
        time.sleep(0.02)
    projection.kill()
    assert sum(applied.values()) > sum(applied_before.values()), projection.log()[-3000:]

    restarted = WorkerProcess(settings, tmp_path / "projection-2.log", pipeline="projection")
    restarted.start()
    try:
        total = len(first_round) + len(second_round)
        truth, view = _wait_until_equal(engine, settings, total, timeout=40)
        assert view == truth, restarted.log()[-3000:]
        _, final = _view_state(engine, settings.projection_schema)
        assert sum(applied.values()) < sum(final.values()), "killed after it had caught up"

        # No gap was ever found, and the only dead letter is the bad input.
        with engine.connect() as connection:
            gaps = connection.execute(
                text(f'SELECT count(*) FROM "{settings.projection_schema}".projection_gaps')  # noqa: S608
            ).scalar_one()
        assert gaps == 0
        (dead,) = read_topic(settings, settings.projection_dlq_topic(), expected=1, settle=0.5)
        assert dead.value == b"not an event"
        assert dead.headers["dlq.reason"] == b"not_json"
        assert dead.headers["dlq.source.topic"] == settings.topic_events.encode()
        assert dead.headers["dlq.consumer.group"] == settings.projection_consumer_group.encode()

        # `payment-worker view` prints the same view.
        user = max(USERS, key=lambda u: sum(1 for key in truth if key[0] == u))
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
            **settings_environment(settings),
        }
        shown = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "view", user],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            check=True,
            timeout=30,
        )
        document = json.loads(shown.stdout)
        assert document["held"] is False
        assert {
            (user, m["paymentMethodId"]): (
                m["brand"],
                m["last4"],
                m["expMonth"],
                m["expYear"],
                m["isDefault"],
            )
            for m in document["paymentMethods"]
        } == {key: row for key, row in truth.items() if key[0] == user}
    finally:
        restarted.stop()
    log = projection.log() + restarted.log()
    # No personal data in the projection's logs: user ids never appear.
    assert not any(user in log for user in USERS)
