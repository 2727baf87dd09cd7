"""What a pipeline process does when a dependency is away: it waits, it does not exit.

At start-up, a read of PostgreSQL is retried while the database is starting
(``once_database_answers``), since workers often start together with it. While running,
a failure of a dependency or of a Kafka client drops the pipeline, and a new one starts
from the last commit after a jittered back-off (``run_restarting``;
``RESTARTABLE_FAILURES`` says which failures; decision 0006). Exactly-once holds because
nothing uncommitted counts. Both pipelines, the worker and the projection, run under it
(``pipelines.runners``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from confluent_kafka import KafkaException
from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
from quixstreams.internal_producer import KafkaProducerTransactionCommitFailed
from quixstreams.kafka.exceptions import BaseKafkaException
from sqlalchemy.exc import OperationalError

from domain.errors import TransientError
from pipelines.health import Health
from pipelines.shutdown import GracefulShutdown, Stoppable
from telemetry import metrics

logger = logging.getLogger("payment_worker")

RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 30.0
# A pipeline that ran this long before failing starts its back-off from the beginning.
RESTART_RESET_AFTER_SECONDS = 60.0
# How long start-up waits for PostgreSQL to answer before giving up.
DATABASE_WAIT_SECONDS = 120.0
# Failures the pipeline recovers from by starting again from its last commit: an
# unavailable dependency, and Kafka errors that leave the client unusable (a broker
# restart timing out a transaction, a producer fenced after a long pause). A new
# application gets new clients; exactly-once holds because nothing uncommitted counts.
RESTARTABLE_FAILURES: tuple[type[Exception], ...] = (
    TransientError,
    KafkaException,
    BaseKafkaException,
    KafkaProducerTransactionCommitFailed,
    CheckpointProducerTimeout,
)

T = TypeVar("T")


def once_database_answers(read: Callable[[], T]) -> T:
    """Run a start-up read, retrying while PostgreSQL is starting or briefly away.

    Workers often start together with their database (a deploy, a node restart); a
    wrong address still fails, after ``DATABASE_WAIT_SECONDS``.
    """
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    delay = RESTART_DELAY_SECONDS
    while True:
        try:
            return read()
        except OperationalError as error:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "PostgreSQL is not reachable yet; retrying",
                extra={"error": type(error.orig).__name__, "retryInSeconds": delay},
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


class Pipeline(Stoppable, Protocol):
    """What the supervisor runs: the command loop or the projection's application; ``run``
    returns when stopped (``GracefulShutdown`` stops it) and raises when a dependency fails."""

    def run(self) -> object: ...


def run_restarting(
    build: Callable[[], Pipeline], health: Health, shutdown: GracefulShutdown
) -> None:
    """Run a pipeline from ``build`` until it stops or a stop is requested; after a
    ``RESTARTABLE_FAILURES`` failure, back off (1 s doubling to 30 s, jittered, from 1 s again
    after a minute of running) and build a new one, which resumes from the last commit.

    ``health`` says meanwhile whether the pipeline runs (readiness), and every restart is
    counted in ``payment_worker_pipeline_restarts_total``. Any other error ends the run.
    """
    delay = RESTART_DELAY_SECONDS
    while not shutdown.requested:
        started = time.monotonic()
        try:
            health.pipeline("running")
            app = build()
            shutdown.attach(app)
            app.run()
            health.pipeline("stopping")
            return
        except RESTARTABLE_FAILURES as error:
            health.pipeline("backing_off")
            if time.monotonic() - started > RESTART_RESET_AFTER_SECONDS:
                delay = RESTART_DELAY_SECONDS
            metrics.PIPELINE_RESTARTS.inc()
            logger.warning(
                "a dependency is unavailable; the pipeline restarts from its last commit",
                extra={
                    "error": str(error),
                    "errorType": type(error).__name__,
                    "retryInSeconds": round(delay, 1),
                },
            )
            if shutdown.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311 - jitter
                health.pipeline("stopping")
                return
            delay = min(delay * 2, RESTART_DELAY_MAX_SECONDS)
