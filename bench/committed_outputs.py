"""Watching the worker's outputs become visible to a read_committed consumer: when the
first and the last record of a topic were seen, how many, and how many each topic holds.

Visible to read_committed is the worker's own definition of done (its Kafka transaction
committed), so every throughput and latency figure of the benchmark is timed on it. The
readers poll with a short fetch wait, so they add little to what they time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from config.kafka import librdkafka_config
from config.settings import Settings

# After the producing process exits, how long to keep reading what it committed.
EXIT_DRAIN_SECONDS = 3.0
# The shortest window a rate is computed over (``OutputWatch.rate``).
MIN_TIMED_SECONDS = 1.0


@dataclass
class OutputWatch:
    """What a read_committed consumer saw of one topic, and when."""

    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    complete_at: float | None = None
    values: list[bytes] = field(default_factory=list)

    def rate(self) -> float:
        """Records per second from the first visible output to the last one seen.

        A run whose outputs all became visible within a second (a small one, committed in
        a transaction or two) is timed as one second: a shorter window says nothing.
        """
        if self.first_seen is None or self.last_seen is None:
            return 0.0
        return self.count / max(self.last_seen - self.first_seen, MIN_TIMED_SECONDS)


def committed_reader(settings: Settings, topic: str, group: str) -> Consumer:
    """A read_committed consumer assigned to every partition of ``topic`` from the start."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": group,
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": "10",
            "enable.partition.eof": "false",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    return consumer


def watch_outputs(
    settings: Settings,
    topic: str,
    *,
    expected: int,
    timeout: float,
    keep_values: bool = False,
    on_batch: Callable[[float, int], None] | None = None,
    still_running: Callable[[], bool] | None = None,
    window_seconds: float | None = None,
) -> OutputWatch:
    """Count records of ``topic`` until ``expected`` are visible (or ``timeout``).

    ``on_batch`` is called with the clock and the count after each poll (to sample
    memory and CPU);
    ``still_running`` stops the wait early when the producing process died;
    ``window_seconds`` stops it that long after the first visible output (a measurement
    of what was sustained until then, rather than of the whole backlog).
    """
    consumer = committed_reader(settings, topic, f"{settings.consumer_group}-bench-reader")
    watch = OutputWatch()
    deadline = time.monotonic() + timeout
    try:
        while watch.count < expected and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=0.1)
            now = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    # The reader asks for no partition-EOF events: any error is real.
                    raise RuntimeError(f"reading {topic}: {message.error()}")
                watch.count += 1
                if keep_values:
                    watch.values.append(message.value() or b"")
            if messages:
                if watch.first_seen is None:
                    watch.first_seen = now
                    if window_seconds is not None:
                        deadline = min(deadline, now + window_seconds)
                watch.last_seen = now
            if on_batch is not None:
                on_batch(now, watch.count)
            if still_running is not None and not still_running():
                # Whatever it committed before exiting is still to be read: drain briefly.
                deadline = min(deadline, now + EXIT_DRAIN_SECONDS)
                still_running = None
        if watch.count >= expected:
            watch.complete_at = watch.last_seen
        return watch
    finally:
        consumer.close()


def count_committed_topics(
    settings: Settings, topics: Sequence[str], idle_seconds: float = 1.0
) -> dict[str, int]:
    """How many records of each topic a read_committed consumer sees (until it goes idle)."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"{settings.consumer_group}-bench-counter",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": "10",
        }
    )
    counts = dict.fromkeys(topics, 0)
    try:
        assignment = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        consumer.assign(assignment)
        idle_until = time.monotonic() + idle_seconds
        while time.monotonic() < idle_until:
            good = [m for m in consumer.consume(num_messages=10_000, timeout=0.2) if not m.error()]
            for message in good:
                counts[str(message.topic())] += 1
            if good:
                idle_until = time.monotonic() + idle_seconds
        return counts
    finally:
        consumer.close()
