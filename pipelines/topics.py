"""Creation of the topics, idempotently: the worker's four (DESIGN.md §2) and the
projection's own dead-letter topic."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, TopicMetadata

from config.kafka import librdkafka_config
from config.settings import Settings

logger = logging.getLogger(__name__)

_THIRTY_DAYS_MS = str(30 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Commands, events and results share a partition count so keys line up across them."""
    partitions = settings.topic_partitions
    return [
        TopicSpec(settings.topic_commands, partitions, {}),
        TopicSpec(settings.topic_events, partitions, {}),
        TopicSpec(settings.topic_results, partitions, {}),
        # Dead letters wait for an operator; keep them long enough to be looked at.
        TopicSpec(settings.topic_dlq, partitions, {"retention.ms": _THIRTY_DAYS_MS}),
        # The projection's (User Service side) own dead letters.
        TopicSpec(settings.projection_dlq_topic(), partitions, {"retention.ms": _THIRTY_DAYS_MS}),
    ]


def _wait_until_visible(
    admin: AdminClient, names: list[str], timeout_seconds: float
) -> dict[str, TopicMetadata]:
    """Metadata of ``names``, once every broker answer includes them (creation propagates)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        topics = admin.list_topics(timeout=timeout_seconds).topics
        if all(name in topics and topics[name].error is None for name in names):
            return dict(topics)
        if time.monotonic() > deadline:
            missing = [name for name in names if name not in topics]
            raise TimeoutError(f"topics not visible after {timeout_seconds} s: {missing}")
        time.sleep(0.2)


def create_topics(settings: Settings, timeout_seconds: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns ``{name: "created" | "exists"}``."""
    admin = AdminClient(librdkafka_config(settings))
    specs = topic_specs(settings)
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.topic_replication_factor,
                config=spec.config,
            )
            for spec in specs
        ],
        request_timeout=timeout_seconds,
    )
    outcome: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_seconds)
            outcome[name] = "created"
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
            outcome[name] = "exists"
    existing = _wait_until_visible(admin, [spec.name for spec in specs], timeout_seconds)
    for spec in specs:
        actual = len(existing[spec.name].partitions)
        if actual != spec.partitions:
            logger.warning(
                "topic has a different partition count than configured",
                extra={"topic": spec.name, "partitions": actual, "configured": spec.partitions},
            )
    return outcome
