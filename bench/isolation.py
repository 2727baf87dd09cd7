"""Each measurement on its own topics, consumer group and PostgreSQL schema: settings made
unique for it, and the topics and the schema created before it and dropped after it.

So that measurements see neither each other's records nor a worker run by ``make run``, and
a stopped benchmark leaves nothing behind.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from sqlalchemy import text

from bench.sandbox_services import SandboxServices
from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings, UserServiceSettings
from pipelines.topics import create_topics, topic_specs
from state.database import create_database_engine, upgrade_schema
from tests.support.harness import free_port


def isolated_settings(
    base: Settings, label: str, *, partitions: int, services: SandboxServices | None
) -> Settings:
    """Settings with unique topics, group and schema for one measurement."""
    suffix = f"{label}_{uuid.uuid4().hex[:10]}"
    update: dict[str, object] = {
        "topic_commands": f"bench.{suffix}.commands",
        "topic_events": f"bench.{suffix}.events",
        "topic_results": f"bench.{suffix}.results",
        "topic_dlq": f"bench.{suffix}.dlq",
        "topic_partitions": partitions,
        "consumer_group": f"bench-{suffix}",
        "database_schema": f"bench_{suffix}",
        "metrics_port": free_port(),
        "metrics_host": "127.0.0.1",
        "log_level": "WARNING",
    }
    if services is not None:
        update["gateway"] = GatewaySettings(
            base_url=services.gateway_url, allow_plain_http_on_loopback=True
        )
        update["user_service"] = UserServiceSettings(
            base_url=services.user_service_url, allow_plain_http_on_loopback=True
        )
    return base.model_copy(update=update)


@contextmanager
def fresh_topics(settings: Settings) -> Iterator[Settings]:
    """The measurement's topics exist inside the block and are deleted after it."""
    create_topics(settings)
    try:
        yield settings
    finally:
        admin = AdminClient(librdkafka_config(settings))
        names = [spec.name for spec in topic_specs(settings)]
        for name, future in admin.delete_topics(names, request_timeout=30).items():
            try:
                future.result(timeout=30)
            except KafkaException as error:  # cleanup is best effort; the figures stand
                print(f"could not delete topic {name}: {error}", file=sys.stderr)


@contextmanager
def fresh_schema(settings: Settings) -> Iterator[Settings]:
    """The worker's tables in the measurement's own schema, dropped after the block."""
    engine = create_database_engine(settings)
    try:
        upgrade_schema(engine, settings.database_schema)
        yield settings
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE'))
        engine.dispose()
