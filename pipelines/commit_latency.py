"""The latency from a message's Kafka timestamp to the commit that made its output visible."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Histogram


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
