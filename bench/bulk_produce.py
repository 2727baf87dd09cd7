"""Producing a large backlog of commands fast: a producer tuned for bulk (big batches, a
queue that holds it all), which waits for room rather than fail when the queue is full.

The harness's ``produce`` (``tests.support.harness``) sends a test's few records; this is
for the benchmark's hundreds of thousands.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import Producer

from bench.workload import BenchCommand
from config.kafka import librdkafka_config
from config.settings import Settings
from pipelines.kafka_clients import PRODUCER_DEFAULTS

# Producing a large backlog: big batches, a short linger, a queue that holds it all.
BULK_PRODUCER_CONFIG = {
    "linger.ms": "20",
    "batch.size": "1000000",
    "queue.buffering.max.messages": "1000000",
    "queue.buffering.max.kbytes": "1048576",
    "compression.type": "none",
}


def bulk_producer(settings: Settings, extra: dict[str, str] | None = None) -> Producer:
    return Producer(
        {
            **librdkafka_config(settings),
            **PRODUCER_DEFAULTS,
            "enable.idempotence": "true",
            **BULK_PRODUCER_CONFIG,
            **(extra or {}),
        }
    )


def produce_all(settings: Settings, commands: Sequence[BenchCommand]) -> float:
    """Produce every command to the command topic, in order; returns the seconds it took."""
    producer = bulk_producer(settings)
    topic = settings.topic_commands
    started = time.perf_counter()
    for command in commands:
        while True:
            try:
                producer.produce(topic, key=command.key, value=command.value)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain it
    if producer.flush(120) != 0:
        raise RuntimeError("commands were not delivered to Kafka")
    return time.perf_counter() - started
