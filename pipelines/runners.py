"""``payment-worker run``: the command worker or the payment view projection, in the
foreground until a signal stops it.

Each run first waits for its database (the worker then refuses an unmigrated schema, the
projection creates its own tables when missing), serves the build info, ``/metrics``,
``/healthz`` and ``/readyz`` on the metrics port, logs its start and stop, and runs its
pipeline under the restart supervisor (``pipelines.restart_supervisor``), so an
unavailable dependency delays the pipeline instead of ending the process.
"""

from __future__ import annotations

import argparse
import logging

from sqlalchemy import Engine

from config.settings import Settings
from pipelines.health import Health, serve_ops
from pipelines.kafka_statistics import statistics_callback
from pipelines.projection import build_projection
from pipelines.restart_supervisor import once_database_answers, run_restarting
from pipelines.shutdown import GracefulShutdown
from pipelines.version import build_commit, worker_version
from pipelines.wiring import build_dependencies, build_worker
from state.database import (
    create_database_engine,
    current_revision,
    database_reachable,
    head_revision,
    schema_is_current,
)
from state.projection_store import (
    ProjectionStore,
    create_projection_engine,
    ensure_projection_schema,
)
from telemetry import metrics

logger = logging.getLogger("payment_worker")


def run_pipeline(settings: Settings, args: argparse.Namespace) -> int:
    """``run [worker|projection]``: exit status 0 once stopped, 2 if the worker's schema
    needs migrating first."""
    # First, before any thread starts: every thread then leaves the signals to it.
    shutdown = GracefulShutdown(settings.shutdown_timeout_seconds)
    shutdown.install()
    if args.pipeline == "projection":
        return _run_projection(settings, shutdown)
    engine = create_database_engine(settings)
    revision = once_database_answers(lambda: current_revision(engine, settings.database_schema))
    head = head_revision()
    if not schema_is_current(revision):
        logger.error(
            "the database schema needs migrating: run `payment-worker db upgrade`",
            extra={"revision": revision, "required": head},
        )
        return 2
    # The same engine answers the readiness probe's database check.
    health = _serve_operations(settings, engine)
    logger.info(
        "payment worker starting",
        extra={
            "version": worker_version(),
            "kafka": settings.kafka_bootstrap_servers,
            "database": settings.database_url_for_display(),
            "schema": settings.database_schema,
            "group": settings.consumer_group,
            "commands": settings.topic_commands,
            "metricsPort": settings.metrics_port,
        },
    )
    _run_until_stopped(settings, health, shutdown)
    logger.info("payment worker stopped")
    return 0


def _serve_operations(settings: Settings, engine: Engine) -> Health:
    """Build info, and /metrics, /healthz and /readyz on the metrics port."""
    metrics.BUILD_INFO.info({"version": worker_version(), "commit": build_commit()})
    health = Health(lambda: database_reachable(engine))
    if settings.metrics_port:
        serve_ops(settings.metrics_host, settings.metrics_port, health)
    return health


def _run_until_stopped(settings: Settings, health: Health, shutdown: GracefulShutdown) -> None:
    """Run the pipeline; when a dependency fails, wait and start it again.

    A failed batch is never half-applied: its Postgres transaction and its Kafka
    transaction both roll back, and the new pipeline resumes from the last commit. So a
    database or gateway outage delays commands; it never drops, reorders or
    dead-letters them.
    """
    dependencies = build_dependencies(settings)
    on_statistics = statistics_callback(health.kafka)
    run_restarting(lambda: build_worker(settings, dependencies, on_statistics), health, shutdown)


def _run_projection(settings: Settings, shutdown: GracefulShutdown) -> int:
    """The User Service side: ``payment.events`` into the per-user view."""
    engine = create_projection_engine(settings)
    once_database_answers(lambda: ensure_projection_schema(engine, settings.projection_schema))
    health = _serve_operations(settings, engine)
    logger.info(
        "payment view projection starting",
        extra={
            "version": worker_version(),
            "kafka": settings.kafka_bootstrap_servers,
            "database": settings.database_url_for_display(),
            "schema": settings.projection_schema,
            "group": settings.projection_consumer_group,
            "events": settings.topic_events,
            "dlq": settings.projection_dlq_topic(),
            "metricsPort": settings.metrics_port,
        },
    )
    # Same restart-on-TransientError loop as the worker; the store is rebuilt with the
    # app, so a failed checkpoint leaves nothing staged behind.
    on_statistics = statistics_callback(health.kafka)
    run_restarting(
        lambda: build_projection(settings, ProjectionStore(engine), on_statistics),
        health,
        shutdown,
    )
    logger.info("payment view projection stopped")
    return 0
