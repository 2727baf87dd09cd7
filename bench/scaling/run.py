"""The scaling run on its own topics, consumer group and PostgreSQL schema, with the
sandbox gateway served in this process; all of it removed afterwards (unless ``keep``),
whether the run finished or was stopped."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient
from sqlalchemy.schema import DropSchema

from bench.scaling.config import STATISTICS_INTERVAL_MS, ScalingConfig
from bench.scaling.phases import ScalingRun
from bench.scaling.report import ScalingReport
from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings
from pipelines.topics import create_topics
from sandbox.gateway_server import SandboxGatewayServer
from state.database import create_database_engine, upgrade_schema


def isolated_settings(base: Settings, config: ScalingConfig, gateway_url: str) -> Settings:
    """``base`` with the run's own topics, group and schema, the sandbox gateway, and
    statistics often enough to see each partition assignment."""
    suffix = uuid.uuid4().hex[:10]
    return base.model_copy(
        update={
            "gateway": GatewaySettings(
                base_url=gateway_url, allow_plain_http_on_loopback=True, timeout_seconds=2.0
            ),
            "topic_commands": f"scaling.{suffix}.commands",
            "topic_events": f"scaling.{suffix}.events",
            "topic_results": f"scaling.{suffix}.results",
            "topic_dlq": f"scaling.{suffix}.dlq",
            "topic_projection_dlq": f"scaling.{suffix}.projection-dlq",
            "topic_partitions": config.partitions,
            "consumer_group": f"scaling-{suffix}",
            "database_schema": f"scaling_{suffix}",
            "kafka_statistics_interval_ms": STATISTICS_INTERVAL_MS,
            "metrics_host": "127.0.0.1",
        }
    )


def remove_isolated(settings: Settings) -> None:
    """Drop the run's schema and delete its topics."""
    engine = create_database_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(DropSchema(settings.database_schema, cascade=True))
    finally:
        engine.dispose()
    admin = AdminClient(librdkafka_config(settings))
    names = [
        settings.topic_commands,
        settings.topic_events,
        settings.topic_results,
        settings.topic_dlq,
        settings.projection_dlq_topic(),
    ]
    for future in admin.delete_topics(names, request_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone: nothing left to clean
            future.result(timeout=30)


def run_scaling(base: Settings, config: ScalingConfig, work_dir: Path) -> ScalingReport:
    """Run the whole proof on fresh topics, group and schema; removes them afterwards."""
    gateway = SandboxGatewayServer().start()
    settings = isolated_settings(base, config, gateway.url)
    create_topics(settings)
    engine = create_database_engine(settings)
    try:
        upgrade_schema(engine, settings.database_schema)
    finally:
        engine.dispose()
    run = ScalingRun(settings, config, work_dir)
    try:
        return run.run()
    finally:
        for member in run.members:
            member.process.stop(timeout=30)
        gateway.stop()
        if not config.keep:
            remove_isolated(settings)
