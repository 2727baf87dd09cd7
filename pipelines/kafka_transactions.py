"""Kafka transaction outcomes, and the latency from a message's timestamp to its commit.

quixstreams commits each checkpoint's Kafka transaction itself and offers no hook after
the commit, so ``observe_transactions`` wraps the commit and abort of the application's
producer. ``tests/integration/test_operations.py`` checks that the counters move, so an
upgrade of quixstreams that changes this shape fails the suite instead of going quiet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram
from quixstreams import Application

from pipelines import metrics


class CommitLatency:
    """Timestamps of the messages in the open transaction, observed when it commits."""

    def __init__(self, histogram: Histogram, clock: Callable[[], float] = time.time) -> None:
        self._histogram = histogram
        self._clock = clock
        self._pending: list[int] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def stage(self, timestamp_ms: int) -> None:
        self._pending.append(timestamp_ms)

    def committed(self) -> None:
        now_ms = self._clock() * 1000
        for timestamp_ms in self._pending:
            # A producer clock ahead of ours must not record a negative latency.
            self._histogram.observe(max(0.0, now_ms - timestamp_ms) / 1000)
        self._pending.clear()

    def aborted(self) -> None:
        # The messages will be consumed again; they are observed when that commits.
        self._pending.clear()


def observe_transactions(app: Application, latency: CommitLatency) -> None:
    """Count the app's Kafka transaction commits and aborts and observe commit latency."""
    producer = app._producer
    commit = producer.commit_transaction
    abort = producer.abort_transaction

    def commit_transaction(*args: Any, **kwargs: Any) -> None:
        try:
            commit(*args, **kwargs)
        except Exception:
            metrics.KAFKA_TRANSACTIONS.labels("failed").inc()
            latency.aborted()
            raise
        metrics.KAFKA_TRANSACTIONS.labels("committed").inc()
        latency.committed()

    def abort_transaction(*args: Any, **kwargs: Any) -> None:
        # An idle checkpoint aborts its empty transaction every commit interval; only
        # abandoned work is worth counting.
        abandoned = latency.pending > 0
        try:
            abort(*args, **kwargs)
        finally:
            if abandoned:
                metrics.KAFKA_TRANSACTIONS.labels("aborted").inc()
            latency.aborted()

    producer.commit_transaction = commit_transaction  # type: ignore[method-assign]
    producer.abort_transaction = abort_transaction  # type: ignore[method-assign]
