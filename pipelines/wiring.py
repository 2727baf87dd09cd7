"""The one place that builds clients, engines and applications from the settings.

Nothing is built at import time; the CLI calls these functions once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from clients.gateway import HttpGateway
from clients.http import ResilientHttp, build_http_client
from clients.user_service import ProfileLookup
from config.kafka import connection_config
from config.settings import Settings
from domain.completion import Completion
from domain.ports import PaymentGateway
from pipelines.command_loop import BatchLimits, CommandLoop
from pipelines.command_processor import CommandProcessor
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.version import worker_version
from state.command_store import CommandStore, WriteConflicts
from state.database import create_database_engine


def utc_now() -> datetime:
    return datetime.now(UTC)


def _producer_config(settings: Settings) -> dict[str, str]:
    config = {
        **PRODUCER_DEFAULTS,
        **settings.kafka_extra_config,
        "transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
    }
    if settings.kafka_transactional_id:
        config["transactional.id"] = settings.kafka_transactional_id
    return config


@dataclass(frozen=True)
class Dependencies:
    """Clients that outlive a pipeline restart (their circuit breakers and caches too)."""

    engine: Engine
    gateway: PaymentGateway
    profiles: ProfileLookup
    write_conflicts: WriteConflicts = field(default_factory=WriteConflicts)
    # One transactional id per process (unless set): a pipeline restarted in-process
    # fences its predecessor's producer and settles its open transaction before it reads
    # the committed offsets.
    transactional_id: str = field(default_factory=lambda: f"payment-worker-{uuid.uuid4()}")


def build_dependencies(settings: Settings) -> Dependencies:
    return Dependencies(
        engine=create_database_engine(settings),
        # As many connections as calls may run at once (clients.http.build_http_client).
        gateway=HttpGateway(
            ResilientHttp(
                build_http_client(settings.gateway, max_connections=settings.gateway_max_in_flight),
                settings.gateway,
                name="gateway",
            )
        ),
        profiles=ProfileLookup(
            build_http_client(
                settings.user_service, max_connections=settings.gateway_max_in_flight
            ),
            settings.user_service,
            settings.profile_cache,
        ),
    )


def statistics_config(
    settings: Settings, on_statistics: Callable[[str], None] | None
) -> dict[str, Any]:
    """librdkafka statistics for lag metrics and readiness, when someone listens."""
    if on_statistics is None:
        return {}
    return {
        "statistics.interval.ms": settings.kafka_statistics_interval_ms,
        "stats_cb": on_statistics,
    }


def consumer_config(
    settings: Settings, on_statistics: Callable[[str], None] | None
) -> dict[str, Any]:
    """The consumer's librdkafka properties beyond the connection, for both pipelines."""
    config: dict[str, Any] = {
        "session.timeout.ms": str(settings.kafka_session_timeout_ms),
        **statistics_config(settings, on_statistics),
        **settings.kafka_extra_config,
    }
    if "max.poll.interval.ms" in config:
        # quixstreams derives its flush budgets from this value and needs a number.
        config["max.poll.interval.ms"] = int(config["max.poll.interval.ms"])
    return config


def command_consumer_config(
    settings: Settings, on_statistics: Callable[[str], None] | None
) -> dict[str, Any]:
    """The command pipeline's consumer: offsets are committed in its Kafka transactions
    only, and only committed commands are read."""
    return {
        **connection_config(settings),
        **consumer_config(settings, on_statistics),
        # Last, so that no extra property can take a guarantee away.
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": settings.auto_offset_reset,
        "enable.partition.eof": False,
    }


def command_producer_config(settings: Settings, transactional_id: str) -> dict[str, Any]:
    """The command pipeline's transactional producer (``kafka_transactional_id`` wins)."""
    return {
        **connection_config(settings),
        "transactional.id": transactional_id,
        **_producer_config(settings),
    }


def build_worker(
    settings: Settings,
    dependencies: Dependencies,
    on_statistics: Callable[[str], None] | None = None,
) -> CommandLoop:
    """The command worker: batches, exactly-once, wired to Postgres and the clients."""
    store = CommandStore(
        dependencies.engine,
        cached_keys=settings.state_cache_keys,
        max_cached_bytes=settings.state_cache_max_bytes,
        recent_commands=settings.state_cache_recent_commands,
        conflicts=dependencies.write_conflicts,
    )
    processor = CommandProcessor(
        store,
        Completion(dependencies.gateway, dependencies.profiles),
        clock=utc_now,
        consumer_group=settings.consumer_group,
        worker_version=worker_version(),
        max_future_skew=timedelta(seconds=settings.command_max_future_skew_seconds),
    )
    return CommandLoop(
        consumer_config=command_consumer_config(settings, on_statistics),
        producer_config=command_producer_config(settings, dependencies.transactional_id),
        commands_topic=settings.topic_commands,
        output_topics={
            "events": settings.topic_events,
            "results": settings.topic_results,
            "dlq": settings.topic_dlq,
        },
        processor=processor,
        store=store,
        limits=BatchLimits(
            max_messages=settings.batch_max_messages,
            max_wait_seconds=settings.batch_max_wait_seconds,
            deadline_seconds=settings.batch_deadline_seconds,
            max_carried_offsets=settings.max_carried_offsets,
            max_carried_commands=settings.max_carried_commands,
        ),
        max_in_flight=settings.gateway_max_in_flight,
        auto_offset_reset=settings.auto_offset_reset,
    )
