"""Operator tools for the dead-letter topic: list what is there, replay what is fixed.

Replaying is safe: a command that was already decided is recognised by its commandId in
the inbox, so a replay never applies a command twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from config.kafka import librdkafka_config
from config.settings import Settings
from pipelines.dead_letters import HEADER_PREFIX
from pipelines.kafka_clients import command_producer

REPLAYED_FROM_HEADER = "replayedFrom"


@dataclass(frozen=True)
class DeadLetterFilter:
    reason: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None

    def matches(self, message: Message) -> bool:
        headers = dict(message.headers() or [])
        if (
            self.reason is not None
            and headers.get(HEADER_PREFIX + "reason") != self.reason.encode()
        ):
            return False
        if self.partition is not None and message.partition() != self.partition:
            return False
        if self.from_offset is not None and message.offset() < self.from_offset:
            return False
        return self.to_offset is None or message.offset() <= self.to_offset


def read_dead_letters(settings: Settings, selection: DeadLetterFilter) -> Iterator[Message]:
    """Every matching record that is in the DLQ now, read_committed, then stop."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": "payment-worker-dlq-tools",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
        }
    )
    try:
        topic = settings.topic_dlq
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        # Stop at the end as it is now; records that arrive meanwhile wait for next time.
        remaining = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                remaining[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in remaining])
        while remaining:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None and selection.matches(message):
                yield message
            # The worker writes dead letters in transactions, so the last offsets are
            # commit markers that are never delivered: compare positions, not offsets.
            positions = consumer.position([TopicPartition(topic, p) for p in remaining])
            for position in positions:
                if position.offset >= remaining[position.partition]:
                    del remaining[position.partition]
    finally:
        consumer.close()


def describe(message: Message) -> dict[str, object]:
    """A dead letter for display: where it came from and why, not its body."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []}
    return {
        "partition": message.partition(),
        "offset": message.offset(),
        "key": (message.key() or b"").decode("utf-8", "replace"),
        "reason": headers.get(HEADER_PREFIX + "reason"),
        "error": headers.get(HEADER_PREFIX + "error"),
        "source": {
            "topic": headers.get(HEADER_PREFIX + "source.topic"),
            "partition": headers.get(HEADER_PREFIX + "source.partition"),
            "offset": headers.get(HEADER_PREFIX + "source.offset"),
        },
        "payloadSha256": headers.get(HEADER_PREFIX + "payload.sha256"),
        "bodyWithheld": headers.get(HEADER_PREFIX + "body.withheld") == "true",
        "bytes": len(message.value() or b""),
    }


def replay(settings: Settings, selection: DeadLetterFilter, *, dry_run: bool) -> dict[str, int]:
    """Produce matching dead letters back to the command topic, as they were sent."""
    counts = {"replayed": 0, "withheld": 0}
    producer = None if dry_run else command_producer(settings)
    for message in read_dead_letters(settings, selection):
        headers = [(k, v) for k, v in message.headers() or [] if not k.startswith(HEADER_PREFIX)]
        if dict(message.headers() or []).get(HEADER_PREFIX + "body.withheld") == b"true":
            counts["withheld"] += 1  # nothing to replay: the body was never kept
            continue
        counts["replayed"] += 1
        if producer is not None:
            origin = f"{message.topic()}:{message.partition()}:{message.offset()}".encode()
            producer.produce(
                settings.topic_commands,
                key=message.key(),
                value=message.value(),
                headers=[*headers, (REPLAYED_FROM_HEADER, origin)],
            )
    if producer is not None and producer.flush(30) != 0:
        raise RuntimeError("replayed commands were not all delivered within 30 s")
    return counts
