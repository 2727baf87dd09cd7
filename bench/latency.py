"""Latency at a steady load: commands produced at a fixed rate, each timed from the moment
it is handed to the producer until its result is visible to a read_committed consumer.

The result of a command is published in the same Kafka transaction as its events, so
the result becoming visible is its events becoming visible.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.bulk_produce import bulk_producer
from bench.committed_outputs import committed_reader
from bench.workload import BenchCommand
from config.settings import Settings

# The producer hands records to the broker almost at once: latency starts at produce().
STEADY_PRODUCER_CONFIG = {"linger.ms": "1"}
TICK_SECONDS = 0.005


@dataclass
class LatencyRun:
    rate: float
    produced: int = 0
    produce_seconds: float = 0.0
    seen: int = 0
    # Seconds from produce() to visible, of the commands after the warm-up.
    latencies: list[float] = field(default_factory=list)

    def percentile(self, share: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
        return ordered[index]


def _produce_steadily(
    settings: Settings,
    commands: Sequence[BenchCommand],
    rate: float,
    sent_at: dict[str, float],
    run: LatencyRun,
) -> None:
    producer = bulk_producer(settings, STEADY_PRODUCER_CONFIG)
    topic = settings.topic_commands
    started = time.monotonic()
    index = 0
    while index < len(commands):
        due = min(len(commands), int((time.monotonic() - started) * rate) + 1)
        while index < due:
            command = commands[index]
            sent_at[command.command_id] = time.monotonic()
            producer.produce(topic, key=command.key, value=command.value)
            index += 1
        producer.poll(0)
        time.sleep(TICK_SECONDS)
    producer.flush(60)
    run.produced = index
    run.produce_seconds = time.monotonic() - started


def measure_latency(
    settings: Settings,
    commands: Sequence[BenchCommand],
    *,
    rate: float,
    warmup: int,
    timeout: float,
    on_poll: Callable[[], None] | None = None,
) -> LatencyRun:
    """Produce ``commands`` at ``rate`` per second and time each one's result.

    The first ``warmup`` commands are produced and awaited but not counted.
    """
    run = LatencyRun(rate=rate)
    sent_at: dict[str, float] = {}
    counted = {command.command_id for command in commands[warmup:]}
    consumer = committed_reader(settings, settings.topic_results, f"{settings.consumer_group}-lat")
    # Assignment and the first fetch take a moment; start producing once the reader polls.
    consumer.consume(num_messages=1, timeout=0.5)
    producer = threading.Thread(
        target=_produce_steadily,
        args=(settings, commands, rate, sent_at, run),
        name="steady-producer",
        daemon=True,
    )
    producer.start()
    deadline = time.monotonic() + timeout
    try:
        while run.seen < len(commands) and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=2_000, timeout=0.05)
            now = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    continue
                run.seen += 1
                command_id = json.loads(message.value() or b"{}").get("commandId")
                started = sent_at.get(command_id or "")
                if started is not None and command_id in counted:
                    run.latencies.append(now - started)
            if on_poll is not None:
                on_poll()
    finally:
        consumer.close()
        producer.join(timeout=60)
    return run
