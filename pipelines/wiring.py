"""The one place that builds clients, engines and applications from the settings.

Nothing is built at import time; the CLI calls these functions once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from sqlalchemy import Engine

from clients.gateway import HttpGateway, PaymentGateway
from clients.http import ResilientHttp, build_http_client
from clients.user_service import ProfileLookup
from config.kafka import connection_config
from config.settings import Settings
from pipelines import metrics
from pipelines.command_pipeline import build_command_pipeline
from pipelines.command_processor import CommandProcessor
from pipelines.gateway_effects import GatewayEffects
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.kafka_transactions import CommitLatency, observe_transactions
from pipelines.partition_changes import on_partitions_given_up
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


def build_worker(
    settings: Settings,
    dependencies: Dependencies,
    on_statistics: Callable[[str], None] | None = None,
) -> Application:
    """The command worker: a quixstreams application, exactly-once, wired to Postgres."""
    app = Application(
        # quixstreams accepts only connection properties here; any other librdkafka
        # property from kafka_extra_config goes to its consumer and producer below.
        broker_address=ConnectionConfig.from_librdkafka_dict(connection_config(settings)),
        consumer_extra_config=consumer_config(settings, on_statistics),
        consumer_group=settings.consumer_group,
        auto_offset_reset=settings.auto_offset_reset,
        commit_interval=settings.commit_interval_seconds,
        commit_every=settings.commit_every,
        processing_guarantee="exactly-once",
        # Topics are created by `payment-worker topics create` with their real settings.
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=settings.quixstreams_state_dir,
        loglevel=None,
        producer_extra_config=_producer_config(settings),
    )
    store = CommandStore(
        dependencies.engine,
        cached_keys=settings.state_cache_keys,
        max_cached_bytes=settings.state_cache_max_bytes,
        recent_commands=settings.state_cache_recent_commands,
        conflicts=dependencies.write_conflicts,
    )
    processor = CommandProcessor(
        store,
        GatewayEffects(dependencies.gateway, dependencies.profiles),
        clock=utc_now,
        consumer_group=settings.consumer_group,
        worker_version=worker_version(),
        max_future_skew=timedelta(seconds=settings.command_max_future_skew_seconds),
    )
    on_partitions_given_up(app, store.forget_cached)
    latency = CommitLatency(metrics.PROCESSING_LATENCY)
    observe_transactions(app, latency)
    build_command_pipeline(
        app,
        processor,
        store,
        latency,
        commands_topic=settings.topic_commands,
        output_topics={
            "events": settings.topic_events,
            "results": settings.topic_results,
            "dlq": settings.topic_dlq,
        },
    )
    return app
