"""Plain confluent-kafka clients for the CLI (sending commands, reading topics)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer, TopicPartition

from config.kafka import librdkafka_config
from config.settings import Settings

# Java clients partition by murmur2; use it too so a key lands on the same partition
# whichever client produced it.
PRODUCER_DEFAULTS = {"partitioner": "murmur2_random"}


def command_producer(settings: Settings) -> Producer:
    return Producer(
        {**librdkafka_config(settings), **PRODUCER_DEFAULTS, "enable.idempotence": "true"}
    )


def topic_reader(settings: Settings, topic: str, *, from_beginning: bool) -> Consumer:
    """A group-less read_committed consumer assigned to every partition of ``topic``."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": "payment-worker-cli",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
            "enable.partition.eof": "false",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    if metadata.topics[topic].error is not None:
        raise SystemExit(f"topic {topic!r} is not available: {metadata.topics[topic].error}")
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    partitions = [TopicPartition(topic, p, start) for p in metadata.topics[topic].partitions]
    if not from_beginning:
        # Resolve "end" now, so that records produced after this call are not missed.
        partitions = [
            TopicPartition(topic, tp.partition, consumer.get_watermark_offsets(tp, timeout=10)[1])
            for tp in partitions
        ]
    consumer.assign(partitions)
    return consumer


def read_records(
    consumer: Consumer, *, idle_timeout: float | None, max_records: int | None
) -> Iterator[dict[str, Any]]:
    """Yield records as dicts until ``idle_timeout`` passes without one, or the limit."""
    count = 0
    idle = 0.0
    while max_records is None or count < max_records:
        message = consumer.poll(0.5)
        if message is None:
            idle += 0.5
            if idle_timeout is not None and idle >= idle_timeout:
                return
            continue
        if message.error() is not None:
            continue
        idle = 0.0
        count += 1
        value = message.value()
        try:
            body: Any = json.loads(value) if value else None
        except ValueError:
            body = {"undecodable": True, "bytes": len(value or b"")}
        yield {
            "partition": message.partition(),
            "offset": message.offset(),
            "key": (message.key() or b"").decode("utf-8", "replace"),
            "headers": {
                k: (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []
            },
            "value": body,
        }
